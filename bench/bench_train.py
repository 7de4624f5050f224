"""Benchmark: 5-fold LOSO on pooled features of a 10,000-utterance synthetic corpus.

Builds the corpus directly as feature stores (mer.train.synthetic_features.synthetic + write_stores, the
store writer of mer.extract.store: no audio needed; bert-like 384-d text vectors and
80-d MFCC-like pooled vectors), then times, in this one process:

- loading both stores from the cache (the FeatureCache `mer train` uses),
- `run_train` with 5-fold LOSO for `concat` and `attention` on pooled inputs
  (bert.mean, mfcc.pooled), including loading, folds, training and the run directory,
- the baseline: sklearn LogisticRegression on the same concatenated, z-scored vectors and
  the same LOSO test folds.

Target (issue): under 30 s per fusion including loading, on 2 CPU cores.

    python bench/bench_train.py [--n 10000] [--epochs 30] [--out /tmp/mer-bench-train]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--out", default="/tmp/mer-bench-train")
    ap.add_argument("--fusions", default="concat,attention")
    ap.add_argument("--results", default=str(Path(__file__).with_name("RESULTS.md")))
    args = ap.parse_args()

    import numpy as np
    import torch

    from mer.train.data import FeatureCache
    from mer.train.synthetic_features import synthetic, write_stores
    from mer.train.fusion import FUSIONS
    from mer.train.trainer import TrainConfig, run_train

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    cache = out / "cache"
    t0 = time.perf_counter()
    man, sets = synthetic(args.n, seed=0, text_dim=384, audio_dim=80, noise=1.0, ragged=False)
    write_stores(man, sets, cache)
    t_build = time.perf_counter() - t0

    # Feature loading alone, as `mer train` does it (find_store + read every output).
    t0 = time.perf_counter()
    fc = FeatureCache("iemocap", cache, man)
    for f in ("bert", "mfcc"):
        fc.get(f)
    t_load = time.perf_counter() - t0

    fusions = [f for f in args.fusions.split(",") if f in FUSIONS]
    missing = [f for f in args.fusions.split(",") if f not in FUSIONS]
    tc = TrainConfig(epochs=args.epochs, batch_size=128, patience=5)
    times, scores = {}, {}
    for f in fusions:
        t0 = time.perf_counter()  # a fresh command: stores are loaded again inside
        (run,) = run_train("iemocap", "bert.mean,mfcc.pooled", f, protocol="loso", cache=cache, out=out / "runs",
                           config=tc, device="cpu", plots=True, quiet=True)
        times[f] = time.perf_counter() - t0
        m = json.loads((run / "metrics.json").read_text())
        scores[f] = (m["mean"]["ua"], [x["epochs_run"] for x in m["folds"]])

    # Baseline: LogisticRegression on the same inputs and folds (z-scored on the training rows).
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    t0 = time.perf_counter()
    fc2 = FeatureCache("iemocap", cache, man)
    X = np.concatenate([fc2.get("bert").fixed["mean"], fc2.get("mfcc").fixed["pooled"]], 1)
    pos = {u: i for i, u in enumerate(fc2.get("bert").ids)}
    rows = np.array([pos[u] for u in man.df["id"].astype(str)])
    X = X[rows]
    classes = ["ang", "hap", "sad", "neu"]
    y = man.df["emotion"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    sess = man.df["session"].astype(str).to_numpy()
    uas = []
    for s in sorted(set(sess)):
        tr, te = sess != s, sess == s
        mu, sd = X[tr].mean(0), X[tr].std(0) + 1e-6
        clf = LogisticRegression(max_iter=300).fit((X[tr] - mu) / sd, y[tr])
        uas.append(balanced_accuracy_score(y[te], clf.predict((X[te] - mu) / sd)))
    t_lr = time.perf_counter() - t0

    lines = [
        f"## bench_train.py: 5-fold LOSO on pooled features, {args.n:,} synthetic utterances",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; torch {torch.__version__}, {os.cpu_count()} CPU cores "
        f"(shared; load average {os.getloadavg()[0]:.1f} at the end), features bert.mean (384-d) + mfcc.pooled (80-d), "
        f"up to {args.epochs} epochs, batch 128, early stopping patience 5.",
        "",
        "| what | seconds | ratio to LogisticRegression | mean UA (5 folds) |",
        "|---|---|---|---|",
        f"| build stores (synthetic + store writer; not part of training) | {t_build:.2f} | | |",
        f"| load features from the cache (find_store + read, 2 stores) | {t_load:.2f} | | |",
    ]
    for f in fusions:
        lines.append(f"| `mer train --fusion {f}` (load + 5 folds + run dir) | {times[f]:.2f} | "
                     f"{times[f] / t_lr:.1f}x | {scores[f][0]:.3f} (epochs {scores[f][1]}) |")
    lines.append(f"| baseline: sklearn LogisticRegression, same folds (load + fit) | {t_lr:.2f} | 1.0x | {np.mean(uas):.3f} |")
    if missing:
        lines.append(f"\nNot timed (not registered): {', '.join(missing)}.")
    lines.append("\nTarget: under 30 s per fusion including loading: "
                 + ", ".join(f"{f} {'met' if times[f] < 30 else 'NOT met'}" for f in fusions) + ".")
    text = "\n".join(lines) + "\n"
    print(text)
    res = Path(args.results)
    prev = res.read_text() if res.exists() else "# Benchmark results\n"
    res.write_text(prev.rstrip("\n") + "\n\n" + text)


if __name__ == "__main__":
    main()
