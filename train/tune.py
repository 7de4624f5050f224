"""`mer tune`: hyper-parameter search with Optuna, trials run in parallel on Dask.

A study searches one (feature set, fusion) pair over a space of training options (``lr``,
``weight_decay``, ``batch_size``, ``epochs``, ``patience``, ``optimizer``, ``grad_clip``,
``max_len``, ``balanced``) and fusion config fields (what ``--set`` takes):

* the sampler is TPE and the pruner the median rule on each epoch's validation metric
  (step = the fold's index x epochs + the epoch, so trials are compared epoch by epoch on
  the same fold);
* a trial trains on every fold of the protocol with its test rows left out
  (``TrainConfig.score_on="valid"``): the objective is the mean over folds of the
  validation metric, and no test fold is read. The study records this (user attribute
  ``objective_split``);
* each trial is a Dask task on a worker (a local cluster of ``--workers N``, or the
  scheduler at ``--scheduler``) that asks the study for its parameters, trains, and tells
  the result. The study lives in an Optuna storage (default: SQLite under the cache,
  ``<cache>/studies/<study>.db``; any Optuna URL, e.g. PostgreSQL, for studies spanning
  machines), so a killed study resumes: ``--trials N`` runs only the trials missing to N
  (finished and pruned trials count; failed ones do not);
* each finished trial is an ordinary run directory ``<out>/<study>/trial-NNNN`` whose
  metrics.json carries ``"tune": {study, trial, params, objective_split}``
  (``mer runs --filter study=S``);
* the best configuration is then re-run with ``--final-seeds`` on the test folds
  (``<out>/<study>/best-trial-NNNN``) and written as a recipe (``<out>/<study>/best.yaml``,
  for ``mer train --recipe``); plots: optimisation history, parameter importances and
  parallel coordinates.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from mer.common.errors import MerError, UsageError

# Training options a space may search: the keys a recipe's ``train:`` carries (so the best
# configuration is a recipe), less ``monitor`` (the objective's own metric).
TRAIN_PARAMS = ("optimizer", "lr", "weight_decay", "batch_size", "epochs", "patience", "grad_clip", "balanced", "max_len")
CLASSIFICATION_METRICS = ("ua", "accuracy", "weighted_f1", "macro_f1")


# ----------------------------------------------------------------------------- search space
@dataclass
class Param:
    """One dimension: ``float``/``int`` ranges (``log`` for a log scale) or ``categorical``."""

    name: str
    kind: str                     # "float" | "int" | "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list = field(default_factory=list)

    def suggest(self, trial):
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_categorical(self.name, self.choices)

    def text(self) -> str:
        if self.kind == "categorical":
            return ",".join(str(c) for c in self.choices)
        return f"{self.low}:{self.high}" + (":log" if self.log else "")


def _number(s: str, where: str):
    try:
        return int(s)
    except ValueError:
        try:
            return float(s)
        except ValueError:
            raise UsageError(f"{where}: {s!r} is not a number") from None


def _value(s):
    """A categorical choice as typed: int, float, bool or string (YAML's reading)."""
    import yaml

    v = yaml.safe_load(str(s)) if isinstance(s, str) else s
    return v if isinstance(v, (int, float, bool, str)) else str(s)


def parse_param(name: str, spec, where: str = "--space") -> Param:
    """``"1e-5:1e-2:log"`` (float range, log scale), ``"1:3"`` (int range: both ends whole),
    ``"64,128,256"`` (choices), or the YAML forms ``{low, high, log, int}`` / a list."""
    w = f"{where} {name}"
    if isinstance(spec, dict):
        bad = sorted(set(spec) - {"low", "high", "log", "int", "choices"})
        if bad:
            raise UsageError(f"{w}: unknown keys {bad} (low, high, log, int; or choices)")
        if "choices" in spec:
            return Param(name, "categorical", choices=[_value(c) for c in spec["choices"]])
        if "low" not in spec or "high" not in spec:
            raise UsageError(f"{w}: a range needs low and high")
        lo, hi = _number(str(spec["low"]), w), _number(str(spec["high"]), w)
        integer = bool(spec.get("int", isinstance(lo, int) and isinstance(hi, int)))
        return _range(name, lo, hi, bool(spec.get("log", False)), integer, w)
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise UsageError(f"{w}: no choices")
        return Param(name, "categorical", choices=[_value(c) for c in spec])
    s = str(spec).strip()
    if ":" in s:
        parts = s.split(":")
        log = parts[-1] == "log"
        if log:
            parts = parts[:-1]
        if len(parts) != 2:
            raise UsageError(f"{w}={s}: expected low:high or low:high:log")
        lo, hi = _number(parts[0], w), _number(parts[1], w)
        return _range(name, lo, hi, log, isinstance(lo, int) and isinstance(hi, int), w)
    choices = [_value(c.strip()) for c in s.split(",") if c.strip()]
    if not choices:
        raise UsageError(f"{w}: nothing given")
    return Param(name, "categorical", choices=choices)


def _range(name, lo, hi, log, integer, w) -> Param:
    if not lo < hi:
        raise UsageError(f"{w}: low {lo} must be below high {hi}")
    if log and lo <= 0:
        raise UsageError(f"{w}: a log scale needs low > 0 (got {lo})")
    return Param(name, "int" if integer else "float", lo, hi, log)


def parse_space(items=(), yaml_file: str | None = None, base: dict | None = None) -> dict[str, Param]:
    """The search space: ``base`` (a recipe's ``space:``), then a YAML file's (a mapping, or
    one with a ``space:`` key), then ``--space name=spec`` items, later ones winning."""
    out: dict[str, Param] = {}
    for n, s in (base or {}).items():
        out[n] = parse_param(n, s, "recipe space")
    if yaml_file:
        import yaml

        p = Path(yaml_file)
        if not p.is_file():
            raise UsageError(f"--space-file {p}: no such file")
        d = yaml.safe_load(p.read_text()) or {}
        d = d.get("space", d) if isinstance(d, dict) else d
        if not isinstance(d, dict):
            raise UsageError(f"--space-file {p}: expected a mapping name -> range or choices")
        for n, s in d.items():
            out[n] = parse_param(str(n), s, f"{p}:")
    for it in items:
        n, sep, s = str(it).partition("=")
        if not sep or not n.strip():
            raise UsageError(f"--space {it!r}: expected name=spec, e.g. lr=1e-5:1e-2:log or hidden=64,128,256")
        out[n.strip()] = parse_param(n.strip(), s)
    return out


def default_space(fusion_cls) -> dict:
    """The space searched when none is given: the fusion's own ``tune_space`` (the classical
    baselines: their regularisation and sizes), else the learning rate and weight decay,
    plus ``hidden`` and ``dropout`` where the fusion's config has them."""
    from mer.train.trainer import config_fields

    own = getattr(fusion_cls, "tune_space", None)
    if own is not None:
        return dict(own)
    have = config_fields(fusion_cls)
    space = {"lr": "1e-4:1e-2:log", "weight_decay": "1e-6:1e-2:log"}
    if "hidden" in have:
        space["hidden"] = "64,128,256"
    if "dropout" in have:
        space["dropout"] = "0.0:0.5"
    return space


def check_space(space: dict[str, Param], fusion_cls) -> None:
    """Every dimension names a training option or a field of the fusion's config."""
    from mer.train.trainer import config_fields

    fusion_fields = config_fields(fusion_cls)
    bad = [n for n in space if n not in TRAIN_PARAMS and n not in fusion_fields]
    if bad:
        raise UsageError(f"--space {', '.join(bad)}: not a training option ({', '.join(TRAIN_PARAMS)}) nor a field of "
                         f"{fusion_cls.__name__}'s config ({', '.join(fusion_fields) or 'none'})")


# ----------------------------------------------------------------------------- the study
@dataclass
class TuneSpec:
    """Everything a trial needs, as plain data (sent to Dask workers)."""

    study: str
    storage: str
    dataset: str
    features: str
    fusion: str
    out: str
    space: dict                    # name -> asdict(Param)
    train: dict                    # TrainConfig fields (the base every trial starts from)
    options: dict = field(default_factory=dict)   # fusion --set values
    protocol: str | None = None
    scheme: str | None = None
    cache: str | None = None
    manifest: str | None = None
    store_configs: dict = field(default_factory=dict)
    seed: int = 0                  # trials train with this seed; the samplers are seeded from it
    metric: str = "ua"
    direction: str = "maximize"
    pruner: str = "median"
    startup_trials: int = 4        # random trials before TPE models the space, and before pruning starts
    command: str | None = None

    def params(self) -> dict[str, Param]:
        return {n: Param(**p) for n, p in self.space.items()}


def default_storage(study: str, cache=None) -> str:
    from mer.common.paths import cache_root, check_name

    check_name(study, "--study")
    d = cache_root(cache) / "studies"
    d.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{d / (study + '.db')}"


def open_storage(url: str):
    """An Optuna storage for ``url``; SQLite waits for its lock instead of failing at once
    (trials on several local workers write to one file)."""
    import optuna

    if url.startswith("sqlite:"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})
    return url


def _sampler(spec: TuneSpec, k: int):
    import optuna

    # Each trial's sampler gets its own seed: workers that all started from one seed would
    # draw the same startup configurations.
    return optuna.samplers.TPESampler(seed=spec.seed * 1_000_003 + k, n_startup_trials=spec.startup_trials)


def _pruner(spec: TuneSpec):
    import optuna

    if spec.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=spec.startup_trials, n_warmup_steps=2)


def load_study(spec: TuneSpec, k: int = 0, create: bool = False):
    import optuna

    kw = dict(study_name=spec.study, storage=open_storage(spec.storage), sampler=_sampler(spec, k), pruner=_pruner(spec))
    if create:
        return optuna.create_study(direction=spec.direction, load_if_exists=True, **kw)
    return optuna.load_study(**kw)


def trial_config(spec: TuneSpec, values: dict, score_on: str):
    """(TrainConfig, fusion options) of a trial's parameter values."""
    from mer.train.trainer import TrainConfig

    options = dict(spec.options)
    options.update({n: str(v) for n, v in values.items() if n not in TRAIN_PARAMS})
    # made anew, not mutated: TrainConfig checks its values when it is made
    tc = TrainConfig(**{**spec.train, **{n: v for n, v in values.items() if n in TRAIN_PARAMS}, "score_on": score_on})
    return tc, options


def _epoch_value(spec: TuneSpec, record: dict) -> float | None:
    key = {"mae": "valid_mae", "accuracy": "valid_accuracy"}.get(spec.metric, "valid_ua")
    v = record.get(key)
    return None if v is None or not math.isfinite(v) else float(v)


def _mark(run_dir: Path, info: dict) -> None:
    """Add ``"tune": info`` to a run's metrics.json (what `mer runs` filters a study on)."""
    p = Path(run_dir) / "metrics.json"
    m = json.loads(p.read_text())
    m["tune"] = info
    p.write_text(json.dumps(m, indent=1))


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_trial(spec_d: dict, k: int) -> dict:
    """One trial, on a Dask worker (or here): ask the study, train on validation folds, tell."""
    import optuna

    from mer.train.callbacks import on_epoch
    from mer.train.trainer import run_train

    spec = TuneSpec(**spec_d)
    t0 = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.WARNING)   # a worker's own logger, not the caller's
    study = load_study(spec, k, create=True)   # created here too when a trial is run on its own
    trial = study.ask()
    values = {n: p.suggest(trial) for n, p in spec.params().items()}
    trial.set_user_attr("objective_split", "validation")
    tc, options = trial_config(spec, values, "valid")
    # Trials are the parallelism: one process and one thread each, so every epoch reaches
    # the pruner (forked fold workers would not call this process's hooks).
    tc.jobs, tc.threads = 1, tc.threads or 1
    steps: dict[tuple, int] = {}
    # One fold's steps never reach the next fold's, even where the space searches --epochs,
    # so every trial reports fold k's epoch e at the same step.
    ep = spec.params().get("epochs")
    stride = max(int(spec.train["epochs"]), int(max(ep.choices) if ep and ep.kind == "categorical" else ep.high) if ep else 0)

    def report(seed, fold, record):
        i = steps.setdefault((seed, fold), len(steps))
        v = _epoch_value(spec, record)
        if v is None:
            return
        trial.report(v, i * stride + int(record["epoch"]))
        if trial.should_prune():
            raise optuna.TrialPruned(f"fold {fold} epoch {record['epoch']}: {v:.4f} below the median")

    run_id = f"trial-{trial.number:04d}"
    info = {"number": trial.number, "params": values, "seconds": None, "worker_peak_rss_mb": None, "run": None}
    try:
        with on_epoch(report):
            runs = run_train(spec.dataset, spec.features, spec.fusion, protocol=spec.protocol, scheme=spec.scheme,
                             seeds=[spec.seed], cache=spec.cache, out=Path(spec.out) / spec.study, manifest=spec.manifest,
                             options=options, config=tc, run_id=run_id, command=spec.command, plots=False, quiet=True,
                             store_configs=spec.store_configs or None)
    except optuna.TrialPruned as e:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        info.update(state="PRUNED", value=None, note=str(e))
    except MerError as e:
        # A configuration that cannot train (lr so high the loss diverges) fails this trial only.
        trial.set_user_attr("error", str(e))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        info.update(state="FAIL", value=None, note=str(e))
    else:
        run_dir = Path(runs[0])
        m = json.loads((run_dir / "metrics.json").read_text())
        value = float(m["mean"][spec.metric])
        _mark(run_dir, {"study": spec.study, "trial": trial.number, "params": values, "objective": spec.metric,
                        "objective_split": "validation", "value": value})
        trial.set_user_attr("run", str(run_dir))
        study.tell(trial, value)
        info.update(state="COMPLETE", value=value, run=str(run_dir))
    info.update(seconds=round(time.perf_counter() - t0, 3), worker_peak_rss_mb=round(_peak_rss_mb(), 1))
    return info


@dataclass
class TuneResult:
    study: str
    storage: str
    trials_run: list[dict]          # this call's trials
    n_complete: int
    n_pruned: int
    n_failed: int
    best: dict | None               # number, value, params
    final_run: str | None = None    # the best configuration re-run on the test folds
    final: dict | None = None       # its test metrics (mean, std)
    recipe: str | None = None
    plots: list[str] = field(default_factory=list)
    seconds: float = 0.0
    stale: int = 0


def _counts(study):
    import optuna

    S = optuna.trial.TrialState
    states = [t.state for t in study.get_trials(deepcopy=False)]
    return sum(s == S.COMPLETE for s in states), sum(s == S.PRUNED for s in states), sum(s == S.FAIL for s in states)


def _fail_stale(study) -> int:
    """Trials a killed study left RUNNING are marked failed (so they are run again): a study
    is driven by one `mer tune` at a time, whose workers may span machines."""
    import optuna

    stale = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
    for t in stale:
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    return len(stale)


def run_tune(spec: TuneSpec, trials: int, workers: int = 1, scheduler: str | None = None,
             final_seeds=(0, 1, 2), plots: bool = True, say=None) -> TuneResult:
    """Run the trials missing to ``trials`` (on a local Dask cluster of ``workers``, on
    ``scheduler``, or here with ``workers=0``), then re-run the best on the test folds."""
    import optuna

    from mer.common import console

    say = say or console.info   # status lines on stderr (console.quiet() silences them)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()
    study = load_study(spec, create=True)
    if study.direction.name.lower() != spec.direction:
        raise UsageError(f"study {spec.study} in {spec.storage} {study.direction.name.lower()}s its objective; "
                         f"this one would {spec.direction} {spec.metric}: use another --study")
    old = study.user_attrs.get("config")
    mine = {"dataset": spec.dataset, "features": spec.features, "fusion": spec.fusion, "protocol": spec.protocol,
            "scheme": spec.scheme, "metric": spec.metric, "space": {n: Param(**p).text() for n, p in spec.space.items()}}
    if old and old != mine:
        diff = sorted(k for k in mine if old.get(k) != mine.get(k))
        raise UsageError(f"study {spec.study} was started with other settings ({', '.join(diff)}: "
                         f"{ {k: old.get(k) for k in diff} }); resume it with the same ones or use another --study")
    study.set_user_attr("config", mine)
    study.set_user_attr("objective_split", "validation")
    study.set_user_attr("objective", f"mean over folds of the validation {spec.metric}; test folds left out")
    stale = _fail_stale(study)
    done, pruned, failed = _counts(study)
    missing = max(0, trials - done - pruned)
    say(f"study {spec.study}: {done} complete, {pruned} pruned, {failed} failed"
        + (f" ({stale} left running by a killed run, marked failed)" if stale else "")
        + f"; running {missing} trial(s)" + (f" on {scheduler}" if scheduler else f" on {workers} worker(s)" if workers else " here"))
    base = len(study.get_trials(deepcopy=False))
    spec_d = asdict(spec)
    results: list[dict] = []
    if missing:
        if workers == 0 and not scheduler:
            for i in range(missing):
                results.append(run_trial(spec_d, base + i))
                _say_trial(say, results[-1])
        else:
            results = _on_dask(spec_d, base, missing, workers, scheduler, say)
    done, pruned, failed = _counts(study)
    res = TuneResult(spec.study, spec.storage, results, done, pruned, failed, None, stale=stale)
    if done:
        b = study.best_trial
        res.best = {"number": b.number, "value": b.value, "params": b.params}
        say(f"best: trial {b.number}, validation {spec.metric} {b.value:.4f}, {b.params}")
        if final_seeds:
            _final(spec, study, res, list(final_seeds), say)
    if plots and done >= 2:
        from mer.train.plots import study_pngs

        res.plots = [str(p) for p in study_pngs(study, Path(spec.out) / spec.study, spec.metric)]
    res.seconds = round(time.perf_counter() - t0, 3)
    summary = Path(spec.out) / spec.study / "study.json"
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(json.dumps({**asdict(res), "objective_split": "validation", "config": mine,
                                   "trials": [_trial_row(t) for t in study.get_trials(deepcopy=False)]}, indent=1,
                                  default=str))
    return res


def _trial_row(t) -> dict:
    return {"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
            "run": t.user_attrs.get("run"), "error": t.user_attrs.get("error"),
            "last_step": t.last_step}


def _say_trial(say, r: dict) -> None:
    v = f" {r['value']:.4f}" if r.get("value") is not None else ""
    say(f"  trial {r['number']}: {r['state']}{v} ({r['seconds']:.1f} s) {r['params']}" +
        (f": {r['note']}" if r.get("note") and r["state"] == "FAIL" else ""))


def _on_dask(spec_d: dict, base: int, n: int, workers: int, scheduler: str | None, say) -> list[dict]:
    from mer.common.errors import require

    require("distributed", "dask")
    from distributed import Client, LocalCluster, as_completed

    if scheduler:
        client, cluster = Client(scheduler), None
    else:
        # one thread per worker process: each trial trains in one process with one torch
        # thread (run_trial), so a worker is one trial at a time and N workers use N cores
        import logging

        # silence_logs: the nanny's "still alive after 4 s, killing" at shutdown is expected
        # (a worker's torch threads) and says nothing about the study.
        cluster = LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=True,
                               dashboard_address=None, memory_limit=0, silence_logs=logging.ERROR)
        client = Client(cluster)
    try:
        futs = [client.submit(run_trial, spec_d, base + i, pure=False) for i in range(n)]
        out = []
        for f in as_completed(futs):
            out.append(f.result())
            _say_trial(say, out[-1])
        return sorted(out, key=lambda r: r["number"])
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _final(spec: TuneSpec, study, res: TuneResult, seeds: list[int], say) -> None:
    """Re-run the best trial's configuration with ``seeds`` on the test folds; write its recipe."""
    from mer.train.trainer import run_train

    b = study.best_trial
    tc, options = trial_config(spec, b.params, "test")
    run_id = f"best-trial-{b.number:04d}"
    root = Path(spec.out) / spec.study
    run_dir = root / run_id
    if not (run_dir / "metrics.json").exists():   # the same best trial as last time: its run stands
        say(f"re-running trial {b.number}'s configuration on the test folds with seeds {seeds}")
        run_dir = Path(run_train(spec.dataset, spec.features, spec.fusion, protocol=spec.protocol, scheme=spec.scheme,
                                 seeds=seeds, cache=spec.cache, out=root, manifest=spec.manifest, options=options,
                                 config=tc, run_id=run_id, command=spec.command, quiet=True,
                                 store_configs=spec.store_configs or None)[0])
        _mark(run_dir, {"study": spec.study, "trial": b.number, "params": b.params, "objective": spec.metric,
                        "objective_split": "validation", "value": b.value, "final": True})
    m = json.loads((run_dir / "metrics.json").read_text())
    res.final_run = str(run_dir)
    res.final = {"mean": m["mean"], "std": m["std"], "seeds": seeds}
    res.recipe = str(write_recipe(spec, b, tc, options, m, root / "best.yaml"))
    mean, std = m["mean"].get(spec.metric), m["std"].get(spec.metric)
    say(f"best configuration on the test folds ({len(seeds)} seeds): {spec.metric} {mean:.4f}"
        + (f" +- {std:.4f}" if std is not None and std == std else "") + f"; recipe {res.recipe}")


def write_recipe(spec: TuneSpec, best, tc, options: dict, metrics: dict, path: Path) -> Path:
    """The best configuration as a recipe `mer train --recipe PATH -d DATASET` accepts."""
    import yaml

    from mer.common.recipes import METRICS, TRAIN_KEYS

    feats: dict[str, dict] = {}
    for part in spec.features.split(","):
        for item in part.split("+"):
            f = item.split(".")[0].split("@")[0].strip()
            if f:
                feats.setdefault(f, {})
    for f, cfg in (spec.store_configs or {}).items():
        feats.setdefault(f, {}).update(cfg)
    for f, cfg in (spec.train.get("stores") or {}).items():
        feats.setdefault(f, {}).update(cfg)
    train = {k: getattr(tc, k) for k in sorted(TRAIN_KEYS) if getattr(tc, k) is not None}
    cfg = metrics.get("protocol")
    metric = spec.metric if spec.metric in METRICS else "ua"
    mean, std = metrics["mean"].get(metric), metrics["std"].get(metric)
    recipe = {
        "name": f"{spec.study}-best",
        "seed": "tune",
        "paper": f"mer tune study {spec.study}, trial {best.number} (validation {spec.metric} {best.value:.4f})",
        "dataset": spec.dataset,
        "scheme": metrics.get("scheme"),
        "protocol": cfg,
        "features": feats,
        "inputs": spec.features,
        "fusion": spec.fusion,
        "model": {k: _value(v) for k, v in options.items()},
        "context": tc.context,
        "train": train,
        "metric": metric,
        "figure": round(float(mean), 6) if mean is not None else 0.0,
        "figure_text": f"{metric} {mean:.4f}" + (f" +- {std:.4f}" if std is not None and std == std else "")
                       + f" on the test folds over seeds {metrics.get('seeds')} (mer tune, not a paper's figure)",
        "notes": f"chosen by mer tune on validation folds only (test folds left out); search space: "
                 + "; ".join(f"{n}={Param(**p).text()}" for n, p in spec.space.items()),
    }
    path = Path(path)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True))
    return path


def spec_train_dict(tc) -> dict:
    """TrainConfig as the plain dict a TuneSpec carries."""
    from mer.train.trainer import TrainConfig

    return {f.name: getattr(tc, f.name) for f in fields(TrainConfig)}
