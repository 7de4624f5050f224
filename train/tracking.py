"""Experiment tracking (``--track mlflow|tensorboard`` of `mer train` and `mer tune`), off by default.

A finished run directory is logged from its own files (config.yaml, history.json,
metrics.json, the PNGs), so what a tracker shows is exactly what the run recorded, folds
trained in worker processes included, and a run can be logged again later:

* ``mlflow``: one MLflow run per run directory: its parameters (dataset, features, fusion,
  protocol, the fusion's config as ``model.*``, the training config as ``train.*``), each
  fold's per-epoch metrics (``valid_ua/seed0-Ses01`` at step = epoch), the summary metrics
  (``ua``, ``ua_std``...), and config.yaml, metrics.json and the plots as artifacts. The
  default store is local, ``sqlite:///<cache>/mlflow/mlflow.db`` with artifacts in
  ``<cache>/mlflow/artifacts`` (no server); ``--track-uri`` takes any tracking URI.
* ``tensorboard``: event files written into the run directory itself (``tensorboard
  --logdir runs/`` shows every run): per-epoch scalars per fold, the summary metrics, and
  the run's configuration as text.
"""
from __future__ import annotations

import json
from pathlib import Path

from mer.common.registry import Registry

TRACKERS: Registry = Registry("tracker", package="mer.train", marker="TRACKERS.register")


def _run_files(run_dir: Path):
    import yaml

    run_dir = Path(run_dir)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    hp = run_dir / "history.json"
    history = json.loads(hp.read_text()) if hp.exists() else []
    return cfg, metrics, history


def _flat(d: dict, prefix: str) -> dict[str, str]:
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v) if isinstance(v, (list, tuple)) else str(v)
    return out


def run_params(cfg: dict, metrics: dict) -> dict[str, str]:
    p = {"dataset": cfg.get("dataset"), "features": cfg.get("features"), "fusion": cfg.get("fusion"),
         "protocol": (cfg.get("protocol") or {}).get("name"), "scheme": (cfg.get("scheme") or {}).get("name"),
         "seeds": json.dumps(cfg.get("seeds"))}
    p = {k: str(v) for k, v in p.items()}
    p.update(_flat(cfg.get("model") or {}, "model."))
    p.update(_flat(cfg.get("train") or {}, "train."))
    tune = metrics.get("tune")
    if tune:
        p.update({"tune.study": str(tune.get("study")), "tune.trial": str(tune.get("trial")),
                  "tune.objective_split": str(tune.get("objective_split"))})
    return p


def summary_metrics(metrics: dict) -> dict[str, float]:
    out = {}
    for part, suffix in (("mean", ""), ("std", "_std")):
        for k, v in (metrics.get(part) or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v:
                out[f"{k}{suffix}"] = float(v)
    return out


def epoch_series(history: list[dict]):
    """(name, epoch, value) of every numeric per-epoch quantity of every fold."""
    for h in history:
        tag = f"seed{h['seed']}-{h['fold']}"
        for rec in h.get("epochs") or []:
            for k, v in rec.items():
                if k != "epoch" and isinstance(v, (int, float)) and v == v:
                    yield f"{k}/{tag}", int(rec["epoch"]), float(v)


# ----------------------------------------------------------------------------- MLflow
def mlflow_uri(uri: str | None = None, cache=None) -> str:
    if uri:
        return uri
    from mer.common.paths import cache_root

    d = cache_root(cache) / "mlflow"
    d.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{d / 'mlflow.db'}"


@TRACKERS.register("mlflow")
def track_mlflow(run_dir, uri: str | None = None, experiment: str | None = None, cache=None, tags=None) -> str:
    """Log a run directory as one MLflow run; returns the MLflow run id."""
    from mer.common.errors import require

    require("mlflow", "track")
    import time

    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    run_dir = Path(run_dir)
    cfg, metrics, history = _run_files(run_dir)
    uri = mlflow_uri(uri, cache)
    client = MlflowClient(tracking_uri=uri)
    name = experiment or f"mer-{cfg.get('dataset')}"
    exp = client.get_experiment_by_name(name)
    if exp is None:
        # A local SQLite store keeps artifacts beside its database, not in the working directory
        # (MLflow's default, ./mlruns); a tracking server decides for itself.
        local = uri.startswith("sqlite:///")
        art = (Path(uri[len("sqlite:///"):]).parent / "artifacts" / name).as_uri() if local else None
        exp_id = client.create_experiment(name, artifact_location=art)
    else:
        exp_id = exp.experiment_id
    all_tags = {"mer.run_dir": str(run_dir.resolve()), **{k: str(v) for k, v in (tags or {}).items()}}
    run = client.create_run(exp_id, run_name=run_dir.name, tags=all_tags)
    rid = run.info.run_id
    now = int(time.time() * 1000)
    # MLflow caps a param value at 6000 characters and a batch at 100 params / 1000 metrics.
    params = [Param(k, v[:6000]) for k, v in run_params(cfg, metrics).items()]
    for i in range(0, len(params), 100):
        client.log_batch(rid, params=params[i:i + 100])
    ms = [Metric(k, v, now, step) for k, step, v in epoch_series(history)]
    ms += [Metric(k, v, now, 0) for k, v in summary_metrics(metrics).items()]
    for i in range(0, len(ms), 1000):
        client.log_batch(rid, metrics=ms[i:i + 1000])
    client.log_batch(rid, tags=[RunTag("mer.fusion", str(cfg.get("fusion")))])
    for f in ["config.yaml", "metrics.json", *sorted(p.name for p in run_dir.glob("*.png"))]:
        if (run_dir / f).exists():
            client.log_artifact(rid, str(run_dir / f))
    client.set_terminated(rid)
    return rid


# ----------------------------------------------------------------------------- TensorBoard
@TRACKERS.register("tensorboard")
def track_tensorboard(run_dir, uri: str | None = None, experiment: str | None = None, cache=None, tags=None) -> str:
    """Write the run's curves and results as TensorBoard event files into the run directory."""
    from mer.common.errors import require

    require("tensorboard", "track")
    from torch.utils.tensorboard import SummaryWriter

    run_dir = Path(run_dir)
    cfg, metrics, history = _run_files(run_dir)
    w = SummaryWriter(log_dir=str(run_dir))
    try:
        for k, step, v in epoch_series(history):
            w.add_scalar(k, v, step)
        for k, v in summary_metrics(metrics).items():
            w.add_scalar(f"result/{k}", v, 0)
        w.add_text("config", "\n".join(f"    {k}: {v}" for k, v in run_params(cfg, metrics).items()), 0)
    finally:
        w.close()
    return str(run_dir)


def track(run_dirs, backends, uri: str | None = None, experiment: str | None = None, cache=None, tags=None) -> list[str]:
    """Log each run directory with each backend (``--track``); returns what each wrote
    (MLflow run ids, event-file folders)."""
    out = []
    for b in backends:
        fn = TRACKERS.get(b)
        for r in run_dirs:
            out.append(fn(r, uri=uri, experiment=experiment, cache=cache, tags=tags))
    return out
