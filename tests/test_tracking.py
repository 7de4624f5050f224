"""`--track mlflow` and `--track tensorboard`: what they write is read back with MLflow's
own client and TensorBoard's own event reader."""
from __future__ import annotations

import json
from pathlib import Path

import pytest


from cli_runner import run_mer
from mer.common.cli import main
from mer.train.synthetic_features import synthetic, write_stores


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("trackcache")
    man, sets = synthetic(120, seed=2, text_dim=6, audio_dim=6, noise=0.7, ragged=False)
    write_stores(man, sets, root)
    return root


def _run(cache, out, *track):
    run_mer("train", "-d", "iemocap", "-f", "bert,mfcc", "--fusion", "concat", "--cache", cache, "--out", out,
         "--run-id", "r", "--epochs", 3, "--protocol", "si", "-q", *track)
    return out / "r"


def test_mlflow_run_read_back(cache, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    run = _run(cache, tmp_path / "runs", "--track", "mlflow")
    db = cache / "mlflow" / "mlflow.db"
    assert db.exists(), "the default store is local, under the cache"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("mer-iemocap")
    (r,) = client.search_runs([exp.experiment_id])
    assert r.info.run_name == "r" and r.data.tags["mer.run_dir"] == str(run.resolve())
    assert r.data.params["fusion"] == "concat" and r.data.params["train.epochs"] == "3"
    assert r.data.params["model.hidden"] == "256"
    metrics = json.loads((run / "metrics.json").read_text())
    assert r.data.metrics["ua"] == pytest.approx(metrics["mean"]["ua"])
    hist = json.loads((run / "history.json").read_text())
    h0 = hist[0]
    series = client.get_metric_history(r.info.run_id, f"valid_ua/seed0-{h0['fold']}")
    assert [m.step for m in series] == [e["epoch"] for e in h0["epochs"]]
    assert [m.value for m in series] == pytest.approx([e["valid_ua"] for e in h0["epochs"]])
    arts = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"config.yaml", "metrics.json", "confusion.png", "curves.png"} <= arts
    # artifacts beside the database, not in the working directory
    assert (cache / "mlflow" / "artifacts").is_dir()


def test_mlflow_any_uri(cache, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    _run(cache, tmp_path / "runs", "--track", "mlflow", "--track-uri", uri)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("mer-iemocap")
    assert len(client.search_runs([exp.experiment_id])) == 1
    # artifacts beside that database, never in the working directory (MLflow's ./mlruns)
    assert (tmp_path / "artifacts" / "mer-iemocap").is_dir()
    assert not (Path.cwd() / "mlruns").exists()


def test_tensorboard_event_files_read_back(cache, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = _run(cache, tmp_path / "runs", "--track", "tensorboard")
    assert list(run.glob("events.out.tfevents.*")), "event files go into the run directory"
    acc = EventAccumulator(str(run))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    hist = json.loads((run / "history.json").read_text())
    h0 = hist[0]
    ev = acc.Scalars(f"valid_ua/seed0-{h0['fold']}")
    assert [e.step for e in ev] == [e["epoch"] for e in h0["epochs"]]
    assert [e.value for e in ev] == pytest.approx([e["valid_ua"] for e in h0["epochs"]], abs=1e-6)
    metrics = json.loads((run / "metrics.json").read_text())
    assert "result/ua" in tags
    assert acc.Scalars("result/ua")[0].value == pytest.approx(metrics["mean"]["ua"], abs=1e-6)


def test_unknown_tracker_is_refused(cache, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "-d", "iemocap", "-f", "bert,mfcc", "--cache", str(cache), "--out", str(tmp_path),
              "--track", "wandb"])
    assert "unknown tracker wandb" in capsys.readouterr().err
