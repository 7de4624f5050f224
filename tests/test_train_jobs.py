"""`--jobs N`: folds train in forked worker processes with results equal to the sequential run."""
import json

import numpy as np
import pandas as pd

from mer.train.synthetic_features import synthetic, write_stores
from mer.train.trainer import TrainConfig, parallel_plan, run_train


def _run(cache, out, jobs):
    tc = TrainConfig(epochs=3, batch_size=32, jobs=jobs, threads=1)   # equal results need equal thread counts
    (run,) = run_train("iemocap", "bert.tokens,mfcc.frames", "weighted", protocol="loso", seeds=(0, 1), cache=cache,
                       out=out, config=tc, device="cpu", plots=False, quiet=True)
    folds = json.loads((run / "metrics.json").read_text())["folds"]
    return pd.read_csv(run / "predictions.csv"), folds


def test_jobs_2_equals_jobs_1_for_a_fixed_seed(tmp_path):
    man, sets = synthetic(160, seed=4, text_dim=8, audio_dim=6, noise=0.7)
    write_stores(man, sets, tmp_path / "cache")
    p1, f1 = _run(tmp_path / "cache", tmp_path / "r1", 1)
    p2, f2 = _run(tmp_path / "cache", tmp_path / "r2", 2)
    assert len(f1) == len(f2) == 10   # 5 LOSO folds x 2 seeds
    pd.testing.assert_frame_equal(p1, p2, check_exact=True)
    strip = lambda fs: [{k: v for k, v in f.items() if "second" not in k} for f in fs]  # noqa: E731
    assert strip(f1) == strip(f2)


def test_parallel_plan_defaults_and_limits():
    import os

    cores = len(os.sched_getaffinity(0))
    # pooled models: one process per core, one thread each
    assert parallel_plan(TrainConfig(), 100, "cpu", sequences=False) == (cores, 1)
    # sequence models: one process, every core a thread
    assert parallel_plan(TrainConfig(), 100, "cpu", sequences=True) == (1, cores)
    # explicit --jobs: capped by the tasks; sequence models' threads fill the cores left to each job
    assert parallel_plan(TrainConfig(jobs=8), 3, "cpu", sequences=False)[0] == 3
    assert parallel_plan(TrainConfig(jobs=1), 5, "cpu", sequences=True) == (1, cores)
    assert parallel_plan(TrainConfig(jobs=1), 5, "cpu", sequences=False) == (1, 1)
    assert parallel_plan(TrainConfig(jobs=2, threads=3), 5, "cpu", sequences=True) == (2, 1)   # forked: 1 thread
    assert parallel_plan(TrainConfig(jobs=4), 10, "cuda", sequences=True)[0] == 1
    assert np.all([parallel_plan(TrainConfig(jobs=j), 5, "cpu", s)[0] >= 1 for j in (0, 1, 2) for s in (True, False)])
