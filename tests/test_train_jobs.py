"""`--jobs N`: folds train in forked worker processes with results equal to the sequential run."""
import json

import numpy as np
import pandas as pd

from mer.train.synthetic_features import synthetic, write_stores
from mer.train.trainer import TrainConfig, jobs_for, run_train


def _run(cache, out, jobs):
    tc = TrainConfig(epochs=3, batch_size=32, jobs=jobs)
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


def test_jobs_default_is_one_per_core_capped_by_tasks_and_one_on_gpu():
    import os

    cores = len(os.sched_getaffinity(0))
    assert jobs_for(TrainConfig(jobs=0), 100, "cpu") == cores
    assert jobs_for(TrainConfig(jobs=8), 3, "cpu") == 3
    assert jobs_for(TrainConfig(jobs=4), 10, "cuda") == 1
    assert np.all([jobs_for(TrainConfig(jobs=j), 5, "cpu") >= 1 for j in (0, 1, 2)])
