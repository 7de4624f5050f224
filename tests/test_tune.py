"""`mer tune`: search space parsing, an objective that never reads a test fold, resuming,
pruning, the best configuration as a recipe, and a tiny study on a Dask scheduler + worker
started here (as tests/test_extract_cluster.py does for extraction)."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from dask_procs import scheduler_and_worker

optuna = pytest.importorskip("optuna")

from cli_runner import run_mer  # noqa: E402
from mer.common.cli import main  # noqa: E402
from mer.common.errors import UsageError  # noqa: E402
from mer.train.synthetic_features import synthetic, write_stores  # noqa: E402
from mer.train.trainer import TrainConfig  # noqa: E402
from mer.train.tune import TuneSpec, parse_param, parse_space, run_trial, run_tune, spec_train_dict  # noqa: E402


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("tunecache")
    man, sets = synthetic(160, seed=1, text_dim=8, audio_dim=8, noise=0.7, ragged=False)
    write_stores(man, sets, root)
    return root


def _spec(cache, out, study, space, epochs=4, **kw) -> TuneSpec:
    from mer.train.tune import default_storage

    return TuneSpec(study=study, storage=default_storage(study, cache), dataset="iemocap", features="bert,mfcc",
                    fusion="concat", out=str(out), space={n: asdict(parse_param(n, s)) for n, s in space.items()},
                    train=spec_train_dict(TrainConfig(epochs=epochs, patience=epochs)), options={"hidden": "16"},
                    cache=str(cache), **kw)


def test_space_syntax():
    p = parse_param("lr", "1e-5:1e-2:log")
    assert (p.kind, p.low, p.high, p.log) == ("float", 1e-5, 1e-2, True)
    assert parse_param("layers", "1:3").kind == "int"
    assert parse_param("hidden", "64,128,256").choices == [64, 128, 256]
    assert parse_param("optimizer", "adam,adamw").choices == ["adam", "adamw"]
    assert parse_param("dropout", {"low": 0.1, "high": 0.5}).kind == "float"
    assert parse_param("hidden", [32, 64]).choices == [32, 64]
    for bad in ("1e-2:1e-5", "0:1:log", "a:b", "1:2:3"):
        with pytest.raises(UsageError):
            parse_param("x", bad)
    assert parse_space(["lr=0.1:0.2"], base={"lr": "1:2", "hidden": "8,16"})["lr"].high == 0.2   # the command line wins
    from mer.train.fusion import FUSIONS
    from mer.train.tune import check_space, default_space

    for name in FUSIONS.names():   # every fusion has a default space that names real options
        cls = FUSIONS.get(name)
        check_space(parse_space(base=default_space(cls)), cls)
    assert set(default_space(FUSIONS.get("concat"))) == {"lr", "weight_decay", "hidden", "dropout"}
    assert set(default_space(FUSIONS.get("svm-rbf"))) == {"C", "gamma"}


def test_space_names_a_training_option_or_a_fusion_field(cache, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["tune", "-d", "iemocap", "-f", "bert,mfcc", "--cache", str(cache), "--study", "bad", "--trials", "1",
              "--space", "hiddden=8,16"])
    assert "hiddden" in capsys.readouterr().err


def test_objective_never_reads_a_test_fold(cache, tmp_path, monkeypatch):
    """Every row a trial reads (normalisation, training, validation, scoring) is recorded per
    fold: none is in that fold's test split, and the objective is the mean over folds of the
    validation UA at each fold's best epoch."""
    import mer.train.protocols as protocols
    from mer.train import data as D

    folds, current, read = [], {}, {}
    real_make, real_fit, real_iterate = protocols.make_folds, D.Normalizer.fit, D.Batcher.iterate

    def make_folds(*a, **k):
        fs = real_make(*a, **k)
        folds.extend(fs)
        return fs

    def fit(cls, data, rows):
        f = [f for f in folds if np.array_equal(np.sort(f.train), np.sort(rows))]
        assert len(f) == 1, "normalisation fitted on rows other than a fold's training rows"
        current["fold"] = f[0].name
        read.setdefault(f[0].name, set()).update(np.asarray(rows).tolist())
        return real_fit.__func__(cls, data, rows)

    def iterate(self, rows, *a, **k):
        read.setdefault(current["fold"], set()).update(np.asarray(rows).tolist())
        return real_iterate(self, rows, *a, **k)

    monkeypatch.setattr(protocols, "make_folds", make_folds)
    monkeypatch.setattr(D.Normalizer, "fit", classmethod(fit))
    monkeypatch.setattr(D.Batcher, "iterate", iterate)
    spec = _spec(cache, tmp_path, "noleak", {"lr": "0.003:0.01:log"}, pruner="none")
    r = run_trial(asdict(spec), 0)
    assert r["state"] == "COMPLETE"
    assert len(folds) == 5 and set(read) == {f.name for f in folds}
    for f in folds:
        assert not read[f.name] & set(f.test.tolist()), f"fold {f.name}: a test row was read"
        assert read[f.name] <= set(f.train.tolist()) | set(f.valid.tolist())
    hist = json.loads((Path(r["run"]) / "history.json").read_text())
    best = [h["epochs"][h["best_epoch"] - 1]["valid_ua"] for h in hist]
    assert r["value"] == pytest.approx(float(np.mean(best)), abs=1e-9)
    study = optuna.load_study(study_name="noleak", storage=spec.storage)
    assert study.trials[0].user_attrs["objective_split"] == "validation"
    m = json.loads((Path(r["run"]) / "metrics.json").read_text())
    assert m["tune"]["objective_split"] == "validation"
    import yaml

    assert yaml.safe_load((Path(r["run"]) / "config.yaml").read_text())["train"]["score_on"] == "valid"


def test_resume_adds_only_missing_trials_and_runs_filters_the_study(cache, tmp_path, capsys):
    spec = _spec(cache, tmp_path, "resume", {"lr": "1e-3:1e-2:log", "weight_decay": "1e-5:1e-3:log"}, pruner="none")
    res = run_tune(spec, 2, workers=0, final_seeds=(), plots=False, say=lambda s: None)
    assert [t["number"] for t in res.trials_run] == [0, 1] and res.n_complete == 2
    # a study killed mid-trial leaves it RUNNING: the rerun marks it failed and replaces it
    study = optuna.load_study(study_name="resume", storage=spec.storage)
    study.ask()
    res = run_tune(spec, 3, workers=0, final_seeds=(0,), plots=True, say=lambda s: None)
    assert res.stale == 1 and [t["number"] for t in res.trials_run] == [3]
    assert (res.n_complete, res.n_failed) == (3, 1)
    res = run_tune(spec, 3, workers=0, final_seeds=(0,), plots=False, say=lambda s: None)
    assert res.trials_run == [] and res.n_complete == 3
    root = tmp_path / "resume"
    assert sorted(p.name for p in root.glob("trial-*")) == ["trial-0000", "trial-0001", "trial-0003"]
    assert {Path(p).name for p in res.plots} <= {"history.png", "importances.png", "parallel.png"}
    for png in ("history.png", "importances.png", "parallel.png"):
        assert (root / png).stat().st_size > 5000, png
    capsys.readouterr()
    run_mer("runs", tmp_path, "--filter", "study=resume", "--csv", tmp_path / "t.csv")
    import pandas as pd

    t = pd.read_csv(tmp_path / "t.csv")
    assert sorted(t["trial"].astype(str)) == ["0", "1", "3", f"best-{res.best['number']}"]
    # with a study of another name, the filter keeps nothing
    with pytest.raises(SystemExit):
        main(["runs", str(tmp_path), "--filter", "study=other"])


def test_median_pruner_stops_a_hopeless_trial(cache, tmp_path):
    good = _spec(cache, tmp_path, "prune", {"lr": "0.008:0.012:log"}, epochs=6, startup_trials=1)
    bad = _spec(cache, tmp_path, "prune", {"lr": "1e-8:2e-8:log"}, epochs=6, startup_trials=1)
    from mer.train.tune import load_study

    load_study(good, create=True)
    assert run_trial(asdict(good), 0)["state"] == "COMPLETE"
    r = run_trial(asdict(bad), 1)
    assert r["state"] == "PRUNED" and r["run"] is None
    assert not (tmp_path / "prune" / "trial-0001").exists()
    study = optuna.load_study(study_name="prune", storage=good.storage)
    t = study.trials[1]
    assert t.state == optuna.trial.TrialState.PRUNED and 2 <= t.last_step < 5 * 6   # warm-up: 2 steps


def test_tiny_study_on_a_dask_scheduler_and_worker(cache, tmp_path, capsys):
    """Two trials on a `dask scheduler` + `dask worker` pair, then the best configuration's
    recipe trains with `mer train --recipe`."""
    out = tmp_path / "out"
    with scheduler_and_worker() as addr:
        run_mer("tune", "-d", "iemocap", "-f", "bert,mfcc", "--fusion", "concat", "--cache", cache, "--out", out,
             "--study", "dist", "--trials", 2, "--scheduler", addr, "--space", "lr=1e-3:1e-2:log",
             "--space", "hidden=8,16", "--epochs", 3, "--final-seeds", "0,1", "--no-plots")
    said = capsys.readouterr().out
    assert "2 complete" in said
    summary = json.loads((out / "dist" / "study.json").read_text())
    assert summary["objective_split"] == "validation"
    ran = summary["trials_run"]
    assert len(ran) == 2 and all(t["state"] == "COMPLETE" and t["worker_peak_rss_mb"] > 0 for t in ran)
    # the trials ran in the worker process, not here
    assert all(Path(t["run"]).parent == out / "dist" for t in ran)
    best = summary["best"]["number"]
    final = json.loads((out / "dist" / f"best-trial-{best:04d}" / "metrics.json").read_text())
    assert final["seeds"] == [0, 1] and final["tune"]["final"] is True
    run_mer("train", "--recipe", out / "dist" / "best.yaml", "-d", "iemocap", "--cache", cache, "--out", tmp_path / "r",
         "--run-id", "again", "-q", "--no-plots")
    cfg = __import__("yaml").safe_load((tmp_path / "r" / "again" / "config.yaml").read_text())
    assert cfg["fusion"] == "concat" and cfg["recipe"]["name"] == "dist-best"
    assert cfg["train"]["lr"] == pytest.approx(summary["best"]["params"]["lr"])
    assert cfg["model"]["hidden"] == summary["best"]["params"]["hidden"]
