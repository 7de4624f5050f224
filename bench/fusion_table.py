"""The README's LOSO table: does fusing text and audio beat either modality alone?

Synthesizes an IEMOCAP-layout corpus (mer.common.synth, real espeak-ng speech), prepares it,
extracts bert + egemaps once, then trains each fusion on bert + audio and the unimodal
baselines through the same trainer, leave-one-session-out (5 folds), and prints a Markdown
table of UA (mean +- std over folds) with WA and weighted F1.

    python bench/fusion_table.py [--per-class 48] [--out /tmp/mer-fusion-table]

Synthetic data only: the figures show that the fusions work and learn from both modalities,
not how they rank on the real IEMOCAP.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROWS = [
    # (fusion, features, label)
    ("concat", "bert", "text only (bert)"),
    ("concat", "egemaps", "audio only (egemaps)"),
    ("concat", "bert,egemaps", "bert + egemaps"),
    ("late", "bert,egemaps", "bert + egemaps"),
    ("attention", "bert.mean,egemaps.functionals", "bert + egemaps"),
    ("weighted", "bert.mean,egemaps.functionals", "bert + egemaps"),
    ("masked", "bert.tokens,egemaps.functionals", "bert tokens + egemaps"),
    ("interaction", "bert,egemaps", "bert + egemaps"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=48)
    ap.add_argument("--out", default="/tmp/mer-fusion-table")
    ap.add_argument("--epochs", type=int, default=40)
    a = ap.parse_args()

    from mer.common.datasets.prepare import prepare
    from mer.common.synth import generate
    from mer.extract.engine import run_extract
    from mer.train.trainer import TrainConfig, run_train

    out = Path(a.out)
    corpus, cache, runs = out / "corpus", out / "cache", out / "runs"
    t0 = time.time()
    if not (corpus / "synth_info.json").exists():
        generate(corpus, layout="iemocap", per_class=a.per_class, seed=0)
    m, _ = prepare("iemocap", corpus, cache=cache, quiet=True)
    run_extract("iemocap", ["bert", "egemaps"], cache=cache, quiet=True)
    print(f"corpus + features: {time.time() - t0:.0f} s, {len(m)} utterances", flush=True)

    tc = TrainConfig(epochs=a.epochs, patience=8)
    lines = ["| fusion | features | UA (mean ± std, 5 folds) | WA | weighted F1 |", "|---|---|---|---|---|"]
    for fusion, feats, label in ROWS:
        t = time.time()
        (r,) = run_train("iemocap", feats, fusion, protocol="loso", cache=cache, out=runs, config=tc, quiet=True, plots=False)
        mm = json.loads((r / "metrics.json").read_text())
        mean, std = mm["mean"], mm["std"]
        lines.append(f"| `{fusion}` | {label} | {mean['ua']:.3f} ± {std['ua']:.3f} | {mean['accuracy']:.3f} | {mean['weighted_f1']:.3f} |")
        print(lines[-1], f"({time.time() - t:.0f} s)", flush=True)
    print("\n".join(lines))
    (out / "table.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
