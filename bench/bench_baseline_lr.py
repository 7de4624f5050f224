"""Is `mer train` at least as good as the simplest baseline on its own features? (issue 21)

On an IEMOCAP-layout synthetic corpus with short dialogues (``--per-class 14``: 4 dialogues
of about 15 utterances per session, like the held-out corpus of issue 21), this script:

1. trains ``mer train --fusion concat`` on pooled mfcc and on egemaps, LOSO, over the seeds;
2. exports the same stores with ``mer cache export`` and fits a scikit-learn
   ``StandardScaler + LogisticRegression`` on each fold's non-test rows (the rows mer trained
   and validated on), tested on the same fold's test rows (read from mer's predictions.csv,
   so the folds are the same utterances);
3. prints UA (mean over folds, then over seeds) for each and the ratio mer / LR;
4. with ``--fusion-check`` (default on): text alone (bert), and bert + egemaps concat, to
   show whether fusion beats each modality, and every fold's best epoch (an epoch-1 model
   kept because of a tiny validation slice is what issue 21 saw).

    python bench/bench_baseline_lr.py [--per-class 14] [--seeds 0,1,2] [--out /tmp/mer-lr]
    python bench/bench_baseline_lr.py --quick     # smoke run: 1 seed, few epochs

Synthetic data only; timings are not reported (the machines are shared).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np


def _fixed_output(npz, n: int) -> str:
    """The pooled output mer uses by default for this store (its preference order)."""
    from mer.train.data.stores import PREFERRED_POOLED

    names = [k for k in npz.files if k not in ("ids", "valid", "config") and "/" not in k
             and npz[k].ndim == 2 and npz[k].shape[0] == n]
    for p in PREFERRED_POOLED:
        if p in names:
            return p
    if not names:
        raise SystemExit(f"no pooled output among {npz.files}")
    return names[0]


def lr_ua(npz_path: Path, predictions: Path, seed: int) -> list[float]:
    """Per-fold UA of a logistic regression on the exported features, folds from mer's run."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    z = np.load(npz_path, allow_pickle=False)
    ids = z["ids"].astype(str)
    x = z[_fixed_output(z, len(ids))].astype(np.float64)
    pos = {u: i for i, u in enumerate(ids)}
    pred = pd.read_csv(predictions, dtype={"fold": str, "id": str})
    pred = pred[pred["seed"] == seed]
    used = pred["id"].tolist()            # every utterance mer trained on is in one test fold (LOSO)
    label = dict(zip(pred["id"], pred["true"]))
    out = []
    for fold, te in pred.groupby("fold"):
        test_ids = set(te["id"])
        tr = [u for u in used if u not in test_ids]
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, C=1.0))
        clf.fit(x[[pos[u] for u in tr]], [label[u] for u in tr])
        p = clf.predict(x[[pos[u] for u in te["id"]]])
        out.append(float(balanced_accuracy_score(te["true"], p)))
    return out


def mer_run(cache: Path, runs: Path, feats: str, seeds: list[int], epochs: int,
            fusion: str = "concat") -> tuple[Path, dict]:
    from mer.train.trainer import TrainConfig, run_train

    (r,) = run_train("iemocap", feats, fusion, protocol="loso", cache=cache, out=runs, seeds=seeds,
                     config=TrainConfig(epochs=epochs), quiet=True, plots=False)
    return Path(r), json.loads((Path(r) / "metrics.json").read_text())


def per_seed(m: dict, seeds) -> list[float]:
    return [float(np.mean([f["ua"] for f in m["folds"] if f["seed"] == s])) for s in seeds]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=14)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--out", default="/tmp/mer-bench-lr")
    ap.add_argument("--no-fusion-check", action="store_true")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 5 epochs, small corpus")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    if a.quick:
        seeds, a.epochs, a.per_class = [0], 5, min(a.per_class, 6)

    from mer.common.datasets.prepare import prepare
    from mer.common.synth import generate
    from mer.extract.engine import run_extract

    out = Path(a.out)
    corpus, cache, runs = out / "corpus", out / "cache", out / "runs"
    if not (corpus / "synth_info.json").exists():
        generate(corpus, layout="iemocap", per_class=a.per_class, seed=0)
    m, _ = prepare("iemocap", corpus, cache=cache, quiet=True)
    feats = ["mfcc", "egemaps"] + ([] if a.no_fusion_check else ["bert"])
    run_extract("iemocap", feats, cache=cache, quiet=True)
    dlg = m.df.groupby("session")["dialog"].nunique()
    print(f"corpus: {len(m)} utterances, dialogues per session {sorted(set(dlg))}, "
          f"{len(m) / dlg.sum():.1f} utterances per dialogue; seeds {seeds}, epochs {a.epochs}", flush=True)

    print("| features | mer concat UA | LR UA | mer / LR |\n|---|---|---|---|")
    for f in ("mfcc", "egemaps"):
        run, mm = mer_run(cache, runs, f, seeds, a.epochs)
        npz = out / f"{f}.npz"
        subprocess.run([str(Path(sys.executable).with_name("mer")), "cache", "export", "-d", "iemocap", "-f", f,
                        "-o", str(npz), "--cache", str(cache)], check=True, capture_output=True)
        mer_ua = float(np.mean(per_seed(mm, seeds)))
        lr = float(np.mean([np.mean(lr_ua(npz, run / "predictions.csv", s)) for s in seeds]))
        print(f"| {f} (pooled) | {mer_ua:.3f} | {lr:.3f} | {mer_ua / lr:.3f} |", flush=True)

    if a.no_fusion_check:
        return
    print("\n| fusion | features | UA per seed | mean | best epochs (per fold) | batch sizes |\n|---|---|---|---|---|---|")
    checks = [("concat", f) for f in ("bert", "egemaps", "mfcc", "bert,egemaps", "bert,mfcc")]
    # issue 21's repro: the masked fusion over token and frame sequences fell below text alone
    checks += [("masked", "bert,mfcc")]   # (masked needs both modalities: the rows above are its references)
    for fusion, f in checks:
        run, mm = mer_run(cache, runs, f, seeds, a.epochs, fusion)
        ua = per_seed(mm, seeds)
        best = [fo["best_epoch"] for fo in mm["folds"]]
        sizes = sorted({fo.get("batch_size") for fo in mm["folds"]})
        print(f"| {fusion} | {f} | {', '.join(f'{u:.3f}' for u in ua)} | {np.mean(ua):.3f} | {best} "
              f"(epoch-1 folds: {sum(b == 1 for b in best)}) | {sizes} |", flush=True)


if __name__ == "__main__":
    main()
