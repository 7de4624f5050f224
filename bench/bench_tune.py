"""Benchmark: `mer tune` trials per hour on 1 and 2 Dask workers, and memory per worker.

Builds a synthetic corpus directly as feature stores (mer.train.synthetic_features, 320
utterances by default as in the issue's Done-when; bert-like 384-d text vectors and 40-d
MFCC-like pooled vectors), then runs the same study twice, in this one script, through
`run_tune` (the function `mer tune` calls): once on a local Dask cluster of 1 worker, once
of 2 (new studies, so both run every trial; same sampler seeds, so the same configurations).
Reports, per worker count, the wall time of the trials (cluster start included: it is part
of what a user waits for), trials per hour, and the largest peak RSS a worker process
reached (each trial reports its worker's ru_maxrss).

    python bench/bench_tune.py [--n 320] [--trials 8] [--epochs 30]
    python bench/bench_tune.py --quick      # a smoke run: 40 utterances, 2 trials, 2 epochs
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=320)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--workers", default="1,2", help="comma list of worker counts, each its own study")
    ap.add_argument("--fusion", default="concat")
    ap.add_argument("--out", default="/tmp/mer-bench-tune")
    ap.add_argument("--quick", action="store_true", help="smoke run (checks the script works; no timing figure)")
    args = ap.parse_args()
    if args.quick:
        args.n, args.trials, args.epochs = 40, 2, 2

    from dataclasses import asdict

    from mer.train.synthetic_features import synthetic, write_stores
    from mer.train.trainer import TrainConfig
    from mer.train.tune import TuneSpec, parse_param, run_tune, spec_train_dict

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    cache = out / "cache"
    man, sets = synthetic(args.n, seed=0, text_dim=384, audio_dim=40, noise=1.0, ragged=False)
    write_stores(man, sets, cache)
    space = {"lr": "1e-4:1e-2:log", "hidden": "64,128,256", "dropout": "0.0:0.5"}
    rows = []
    for w in [int(x) for x in args.workers.split(",")]:
        study = f"bench-w{w}"
        spec = TuneSpec(study=study, storage=f"sqlite:///{out / (study + '.db')}", dataset="iemocap",
                        features="bert,mfcc", fusion=args.fusion, out=str(out / "runs"),
                        space={n: asdict(parse_param(n, s)) for n, s in space.items()},
                        train=spec_train_dict(TrainConfig(epochs=args.epochs)), cache=str(cache), pruner="none")
        t0 = time.perf_counter()
        res = run_tune(spec, args.trials, workers=w, final_seeds=(), plots=False, say=lambda s: None)
        wall = time.perf_counter() - t0
        done = [t for t in res.trials_run if t["state"] == "COMPLETE"]
        rows.append({"workers": w, "trials": len(res.trials_run), "complete": len(done), "wall_s": round(wall, 1),
                     "trials_per_hour": round(3600 * len(res.trials_run) / wall, 1),
                     "mean_trial_s": round(sum(t["seconds"] for t in res.trials_run) / max(1, len(res.trials_run)), 1),
                     "worker_peak_rss_mb": max(t["worker_peak_rss_mb"] for t in res.trials_run)})
        print(json.dumps(rows[-1]))
    print(f"\n| workers | trials | wall s | trials/hour | mean trial s | peak RSS per worker (MB) |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workers']} | {r['trials']} | {r['wall_s']} | {r['trials_per_hour']} | {r['mean_trial_s']} | "
              f"{r['worker_peak_rss_mb']} |")
    if args.quick:
        print("(--quick: a smoke run; the figures mean nothing)")


if __name__ == "__main__":
    main()
