"""Benchmark: the cost of fine-tuning the text encoder against training on its frozen store,
in one script, on the same synthetic corpus, folds and head.

Both sides train `concat` on a text input with `run_train` (protocol random, one fold):
- frozen: all-MiniLM-L6-v2's mean vectors computed once (the extraction is timed on its own,
  as `mer extract` would pay it once), then the head trained on them;
- tuned: `--finetune bert` with the same head (the encoder's forward and backward in every
  step).

Reported per side: seconds per training utterance-pass (training seconds over rows trained,
from history.json's train_rows), and peak memory (the process's peak RSS after each side, and
CUDA's peak allocation on a GPU). Each side runs in its own process (so RSS peaks do not mix).

    python bench/bench_finetune.py [--n 1000] [--epochs 2] [--device cpu] [--quick]

`--quick` (64 utterances, one epoch) checks that the script works; do not take figures from
it on a loaded machine.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def corpus(n: int):
    """n IEMOCAP-shaped utterances whose transcripts carry the label's text bit."""
    import numpy as np

    from mer.common.manifest import Manifest, content_hashes
    from mer.train.synthetic_features import synthetic

    man, _ = synthetic(n, seed=0, ragged=False)
    y = man.df["emotion"].isin(["ang", "hap"]).to_numpy()
    words = np.random.default_rng(0).choice(["dog", "cat", "cow", "goat", "bird", "fish"], n)
    man.df["text"] = [f"the {w} was {'wonderful and exciting' if b else 'dull and slow'} today" for w, b in zip(words, y)]
    return Manifest(man.df, {"dataset": "iemocap", **content_hashes(man.df)}, None)


def side(kind: str, n: int, epochs: int, device: str, out: Path) -> dict:
    import resource

    import numpy as np

    from mer.train.config import TrainConfig
    from mer.train.data import FeatureSet
    from mer.train.trainer import run_train

    man = corpus(n)
    sets, t_extract = None, 0.0
    tc = dict(epochs=epochs, patience=epochs, batch_size=32, threads=1 if device == "cpu" else 0)
    if kind == "frozen":
        from mer.extract.base import Utterance
        from mer.extract.text import BertExtractor

        t0 = time.perf_counter()
        ext = BertExtractor(device=device)
        outs = ext.process([Utterance(id=r.id, text=r.text) for r in man.df.itertuples()])
        mean = np.stack([o["mean"] for o in outs]).astype(np.float32)
        t_extract = time.perf_counter() - t0
        sets = {"bert": FeatureSet("bert", "text", man.df["id"].to_numpy(), {"mean": {"kind": "fixed", "dim": mean.shape[1]}},
                                   {"mean": mean}, key="frozen")}
        config = TrainConfig(**tc)
    else:
        config = TrainConfig(**tc, finetune=("bert",))
    t0 = time.perf_counter()
    [run] = run_train("iemocap", "bert", "concat", protocol="random", manifest=man, feature_sets=sets, out=out,
                      run_id=kind, quiet=True, config=config, device=device, plots=False)
    wall = time.perf_counter() - t0
    m = json.loads((run / "metrics.json").read_text())
    hist = json.loads((run / "history.json").read_text())
    rows = sum(e["train_rows"] for h in hist for e in h["epochs"])
    res = {"side": kind, "n": n, "epochs": epochs, "device": device, "extract_s": round(t_extract, 2),
           "train_s": round(m["train_seconds"], 2), "run_s": round(wall, 2), "rows_trained": rows,
           "ms_per_utterance": round(1000 * m["train_seconds"] / max(rows, 1), 2), "ua": round(m["mean"]["ua"], 3),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.startswith("cuda"):
        import torch

        res["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="/tmp/mer-bench-finetune")
    ap.add_argument("--quick", action="store_true", help="64 utterances, one epoch: a smoke run, not a figure")
    ap.add_argument("--side", choices=("frozen", "tuned"), help=argparse.SUPPRESS)   # one side, in a child process
    args = ap.parse_args()
    if args.quick:
        args.n, args.epochs = 64, 1
    out = Path(args.out)
    if args.side:
        print(json.dumps(side(args.side, args.n, args.epochs, args.device, out / args.side)))
        return
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    results = []
    for s in ("frozen", "tuned"):
        cmd = [sys.executable, __file__, "--side", s, "--n", str(args.n), "--epochs", str(args.epochs),
               "--device", args.device, "--out", str(out)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode:
            raise SystemExit(f"{s} side failed:\n{p.stderr[-3000:]}")
        results.append(json.loads(p.stdout.strip().splitlines()[-1]))
    print("| side | n | epochs | device | extract s | train s | ms / utterance-pass | peak RSS MB | UA |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['side']} | {r['n']} | {r['epochs']} | {r['device']} | {r['extract_s']} | {r['train_s']} | "
              f"{r['ms_per_utterance']} | {r['peak_rss_mb']} | {r['ua']} |")
    f, t = results
    print(f"fine-tuning costs {t['ms_per_utterance'] / max(f['ms_per_utterance'], 1e-9):.1f}x the frozen head per "
          f"utterance-pass ({'--quick: a smoke run, not a figure' if args.quick else 'this machine'})")


if __name__ == "__main__":
    main()
