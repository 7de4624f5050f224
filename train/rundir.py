"""Run directories: everything one `mer train` (fusion x feature set) produced.

Layout of ``runs/<id>/``::

    config.yaml        everything needed to rerun: dataset, manifest hash, scheme, protocol,
                       seeds, fusion + its config, training config, inputs and store keys
    metrics.json       {"dataset", "features", "fusion", "protocol", "folds": [...],
                        "mean": {...}, "std": {...}, "std_over": "folds"|"seeds", ...}
    predictions.csv    id, seed, fold, true, predicted, p_<class>... (regression: no p_;
                       multi-target regression: true_<target>, predicted_<target>...)
    history.json       per fold: per-epoch train/validation loss and accuracy
    weights/seed<S>-<fold>.safetensors   model state + normalisation stats of that fold
    data_report.{json,txt}   utterances left out (no label, missing features) and why
    confusion.png, curves.png
    layer_weights.png  learned softmax weights over an encoder's layers, per fold (inputs
                       from a --<feature>.layer all store only)

Nothing here is pickled; loading a run reads YAML, JSON and safetensors only, so it never
executes code from the run directory.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path

import numpy as np

from mer.common.errors import MerError

FORMAT_VERSION = 1


def _plain(x):
    """JSON/YAML-safe copy (numpy scalars and arrays, paths, tuples)."""
    return json.loads(json.dumps(x, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _run_id(root: Path, dataset, features: str, fusion: str, protocol: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = re.sub(r"[^A-Za-z0-9_.+@-]+", "_", f"{dataset}-{features}-{fusion}-{protocol}-{stamp}")
    rid, i = base, 2
    while (root / rid).exists():
        rid, i = f"{base}-{i}", i + 1
    return rid


def store_record(fs) -> dict:
    """What config.yaml keeps about a feature store: enough to find it again or re-extract."""
    skip = {"outputs", "config", "feature", "key", "modality"}
    return _plain({
        "feature": fs.feature,
        "key": fs.key,
        "modality": fs.modality,
        "path": fs.path,
        "config": fs.config,
        "outputs": fs.outputs,
        "attrs": {k: v for k, v in (fs.attrs or {}).items() if k not in skip},
    })


CHOSEN_KEYS = ("threshold",)


def paper_fold(protocol: dict, folds: list[dict], keys) -> dict | None:
    """The fold a paper reports on its own (``paper_fold:`` of the protocol; seed 003's
    speaker-independent setting tests on session 5's female speaker only), summarised over
    seeds, to stand beside the mean over all folds."""
    from mer.train.metrics import summarize

    name = protocol.get("paper_fold")
    chosen = [f for f in folds if f["fold"] == name] if name else []
    if not chosen:
        return None
    mean, std, _ = summarize(chosen, keys)
    return {"fold": name, "mean": mean, "std": std, "std_over": "seeds", "note": protocol.get("paper_fold_note", "")}


def write_run(out_root: Path, run_id, *, dataset, manifest, scheme, protocol, seeds, fusion, model_cfg, train_cfg,
              requests, sources, fcache, data, results, report, seconds, command=None, plots=True,
              recipe=None, fold_sets: dict | None = None, tuners=None) -> tuple[Path, dict]:
    import yaml

    from mer.common import __version__
    from mer.train.metrics import CLASSIFICATION_KEYS, regression_keys, summarize

    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    feats = ",".join(r.text for r in requests)
    if run_id:
        from mer.common.paths import check_name

        rid = check_name(run_id, "--run-id")
    else:
        rid = _run_id(out_root, dataset, feats.replace(",", "+"), fusion, protocol["name"])
    run = out_root / rid
    run.mkdir(parents=True, exist_ok=True)

    config = {
        "format_version": FORMAT_VERSION,
        "mer_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command,
        "dataset": dataset,
        "manifest": {"path": str(manifest.path) if manifest.path else None, "hash": manifest.meta.get("hash"),
                     "n": len(manifest)},
        "scheme": {"name": scheme.name, "kind": scheme.kind, "source": scheme.source},
        "classes": list(data.classes),
        "regression": bool(data.regression),
        "protocol": _plain(protocol),
        "seeds": list(seeds),
        "features": feats,
        "fusion": fusion,
        "model": _plain(asdict(model_cfg)) if is_dataclass(model_cfg) else {},
        "train": _plain(asdict(train_cfg)),
        "inputs": [_plain(s.to_record()) for s in sources],
        "stores": {f: store_record(fcache.get(f)) for f in dict.fromkeys(s.feature for s in sources)},
        "weights": [f"weights/seed{r.seed}-{r.fold}.safetensors" for r in results],
    }
    if manifest.meta.get("text_source"):  # text from ASR transcripts: which store, model, WER
        config["text_source"] = _plain(manifest.meta["text_source"])
    if getattr(data, "alignment", None):  # how audio was cut to tokens (word times or resampling)
        config["audio_to_tokens"] = _plain(data.alignment)
    if recipe:
        config["recipe"] = _plain(recipe)
    if tuners:   # --finetune: what was tuned; the encoder's config and tokenizer beside the weights
        config["finetune"] = {}
        for feat, t in tuners.items():
            t.save_assets(run / "encoder" / feat)
            config["finetune"][feat] = _plain({**t.record(t.module()), "assets": f"encoder/{feat}"})
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))

    from mer.train.finetune import inner_state
    from mer.train.layermix import weights_from_state

    keys = regression_keys(data.classes) if data.regression else CLASSIFICATION_KEYS
    folds = []
    mixes = []   # learned layer weights per fold, for inputs that are stacks of hidden states
    for r in results:
        entry = {"fold": r.fold, "seed": r.seed, **r.metrics, "seconds": round(r.seconds, 3)}
        if r.sweeps:
            entry["sweeps"] = _plain(r.sweeps)
        lw = weights_from_state(inner_state(r.state), data.specs)
        if lw:
            entry["layer_weights"] = lw
            mixes.append((r.seed, r.fold, lw))
        folds.append(_plain(entry))
    # What a model chose on each fold's validation split (hierarchical threshold=auto) is
    # summarised like a metric.
    keys = list(keys) + [k for k in CHOSEN_KEYS if any(k in f for f in folds)]
    mean, std, over = summarize(folds, keys)
    metrics = {
        "dataset": dataset,
        "features": feats,
        "fusion": fusion,
        "protocol": protocol["name"],
        "scheme": scheme.name,
        "seeds": list(seeds),
        "classes": list(data.classes),
        "n_utterances": int(len(data)),
        "folds": folds,
        "mean": mean,
        "std": std,
        "std_over": over,
        "train_seconds": round(seconds, 3),
        "feature_load_seconds": round(fcache.load_seconds, 3),
        # which encoders were tuned end to end (--finetune); empty: every input from a frozen store
        "finetune": sorted(tuners or {}),
    }
    paper = paper_fold(protocol, folds, keys)
    if paper:
        metrics["paper_fold"] = paper
    if any(r.sweeps for r in results):
        metrics["sweeps_note"] = ("computed on each test fold: analysis only, not a result "
                                  "(a threshold picked here would be tuned on test data; use threshold=auto)")
        metrics["sweeps"] = [{"fold": r.fold, "seed": r.seed, "split": "test", "analysis_only": True, "table": _plain(r.sweeps)}
                             for r in results if r.sweeps]
    if recipe:
        # the paper's figure next to this run's value of the same metric (synthetic or substituted
        # runs say so in "substitutions"; their numbers are not the paper's)
        pm = recipe["paper"]["metric"]
        # Like for like: where the protocol names the fold the paper reports alone (seed 003:
        # test = session 5 female), the run's figure is that fold's, not the mean of all folds.
        run_value, run_of = mean.get(pm), "mean of all folds"
        if paper and pm in paper["mean"]:
            run_value, run_of = paper["mean"][pm], f"fold {paper['fold']} (the paper's)"
        metrics["paper"] = {**recipe["paper"], "run": run_value, "run_of": run_of,
                            "substituted": bool(recipe.get("substitutions")),
                            "overrides": sorted(recipe.get("overrides") or {})}
    _write_predictions(run / "predictions.csv", data, results)
    if fold_sets is not None:   # the protocol audit, from the run's own folds and predictions.csv
        from mer.train.audit import run_audit

        metrics["audit"] = _plain(run_audit(protocol, data, fold_sets, run / "predictions.csv", folds))
    (run / "metrics.json").write_text(json.dumps(metrics, indent=1))
    (run / "history.json").write_text(json.dumps(
        [{"fold": r.fold, "seed": r.seed, "best_epoch": r.best_epoch, "epochs": _plain(r.history)} for r in results], indent=1))
    _write_weights(run / "weights", results, fusion)
    report.write(run / "data_report")
    if plots:
        from mer.train import plots as P

        if not data.regression:
            cm = np.sum([np.asarray(r.metrics["confusion"]) for r in results], axis=0)
            P.confusion_png(cm, data.classes, run / "confusion.png",
                            title=f"{dataset} {fusion} [{feats}] {protocol['name']}: all test folds")
        P.curves_png(results, run / "curves.png", regression=data.regression, title=f"{fusion} [{feats}]")
    if mixes:  # written even with --no-plots: the learned weights are a result, not a diagnostic
        from mer.train import plots as P

        P.layer_weights_png(mixes, run / "layer_weights.png", title=f"{fusion} [{feats}]: learned layer weights")
    return run, metrics   # the metrics as written to metrics.json (the caller reports them)


def _write_predictions(path: Path, data, results) -> None:
    import pandas as pd

    parts = []
    for r in results:
        d = {"id": data.ids[r.rows], "seed": r.seed, "fold": r.fold}
        if data.regression and data.y.ndim == 2:   # multi-target: true_<target>, predicted_<target>
            for i, t in enumerate(data.classes):
                d[f"true_{t}"] = data.y[r.rows, i]
                d[f"predicted_{t}"] = np.asarray(r.proba, float)[:, i]
        elif data.regression:
            d.update(true=data.y[r.rows], predicted=np.asarray(r.proba, float))
        else:
            cls = np.asarray(data.classes, dtype=object)
            d.update(true=cls[data.y[r.rows]], predicted=cls[r.proba.argmax(1)])
            for i, c in enumerate(data.classes):
                d[f"p_{c}"] = np.round(r.proba[:, i], 6)
        parts.append(pd.DataFrame(d))
    pd.concat(parts, ignore_index=True).to_csv(path, index=False)


def _write_weights(folder: Path, results, fusion: str) -> None:
    import torch
    from safetensors.torch import save_file

    folder.mkdir(exist_ok=True)
    for r in results:
        tensors = {k: v for k, v in r.state.items()}
        for k, v in r.norm.tensors().items():
            tensors[k] = torch.from_numpy(np.ascontiguousarray(v))
        meta = {"fusion": fusion, "seed": str(r.seed), "fold": r.fold, "best_epoch": str(r.best_epoch)}
        save_file(tensors, str(folder / f"seed{r.seed}-{r.fold}.safetensors"), metadata=meta)


# ----------------------------------------------------------------------------- reading runs
def read_config(run) -> dict:
    import yaml

    p = Path(run) / "config.yaml"
    if not p.exists():
        raise MerError(f"{run}: not a run directory (no config.yaml)")
    cfg = yaml.safe_load(p.read_text())  # safe_load: plain data only, no object construction
    if not isinstance(cfg, dict) or "fusion" not in cfg:
        raise MerError(f"{p}: not a mer run config")
    return cfg


def read_metrics(run) -> dict:
    p = Path(run) / "metrics.json"
    if not p.exists():
        raise MerError(f"{run}: no metrics.json (training did not finish?)")
    return json.loads(p.read_text())


def load_models(run, device: str = "cpu"):
    """[(model, Normalizer)] for every fold/seed of a run: built from the registry by name,
    weights from safetensors (no pickle, nothing from the run is executed)."""
    from safetensors.torch import load_file

    from mer.train.data import Normalizer
    from mer.train.fusion import FUSIONS, InputSpec, build_model, model_config

    cfg = read_config(run)
    cls = FUSIONS.get(cfg["fusion"])
    sources = [InputSpec.from_record(s) for s in cfg["inputs"]]
    n_out = max(1, len(cfg["classes"])) if cfg.get("regression") else len(cfg["classes"])
    mcfg = model_config(cls, cfg.get("model") or {})
    models = []
    for rel in cfg["weights"]:
        p = Path(run) / rel
        if not p.exists():
            raise MerError(f"{run}: weights file {rel} is missing")
        t = load_file(str(p), device="cpu")
        norm = Normalizer.from_tensors({k: v.numpy() for k, v in t.items() if k.startswith("norm/")})
        state = {k: v for k, v in t.items() if not k.startswith("norm/")}
        model = build_model(cls, sources, n_out, mcfg, None if cfg.get("regression") else cfg["classes"],
                            (cfg.get("train") or {}).get("context", "none"), regression=bool(cfg.get("regression")))
        if cfg.get("finetune"):   # the tuned encoders, rebuilt from the run's own config files
            from mer.train.finetune import Finetuned, saved_encoder

            model = Finetuned(model, {f: saved_encoder(run, rec) for f, rec in cfg["finetune"].items()}, sources)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise MerError(f"{p}: weights do not fit {cfg['fusion']} (missing {missing[:3]}, unexpected {unexpected[:3]})")
        models.append((model.to(device).eval(), norm))
    return cfg, sources, models


# ----------------------------------------------------------------------------- comparing runs
def find_runs(roots) -> list[Path]:
    """Run directories under ``roots``: a run dir itself, a folder holding run dirs, or a
    folder of such folders (`mer tune` writes a study's runs into ``<out>/<study>/``)."""
    found = []
    for r in roots:
        r = Path(r)
        if (r / "metrics.json").exists():
            found.append(r)
        elif r.is_dir():
            found += sorted(p.parent for p in r.glob("*/metrics.json"))
            found += sorted(p.parent for p in r.glob("*/*/metrics.json") if not (p.parent.parent / "metrics.json").exists())
    return found


def runs_table(roots, filters: list[str] = (), sort: str | None = None, ascending: bool | None = None):
    """One row per run: id, dataset, features, fusion, protocol, scheme, seeds, folds, n,
    then ``<metric>`` and ``<metric>_std`` for every summarised metric.

    ``filters``: ``field=pattern`` (shell-style wildcards), all must match.
    """
    import fnmatch

    import pandas as pd

    from mer.train.audit import audit_line

    rows = []
    for run in find_runs(roots):
        try:
            m = read_metrics(run)
        except (MerError, ValueError):
            continue  # a half-written run; `mer runs` lists finished ones only
        row = {"run": run.name, "dataset": m.get("dataset"), "features": m.get("features"), "fusion": m.get("fusion"),
               "protocol": m.get("protocol"), "scheme": m.get("scheme"), "seeds": len(m.get("seeds") or [0]),
               "folds": len(m.get("folds") or []), "n": m.get("n_utterances")}
        paper = m.get("paper") or {}
        row["recipe"] = paper.get("recipe", "")
        row["encoders"] = ("tuned: " + ",".join(m["finetune"])) if m.get("finetune") else "frozen"
        fig = paper.get("figure")
        row["paper"] = (f"{paper['metric']} {fig:.4f}" if fig is not None else f"{paper['metric']} (not given)") if paper else ""
        for k, v in (m.get("mean") or {}).items():
            row[k] = v
            row[f"{k}_std"] = (m.get("std") or {}).get(k)
        for k in ("ua", "accuracy"):  # the fold a paper reports alone (si: Ses05-F), when the protocol names one
            if k in ((m.get("paper_fold") or {}).get("mean") or {}):
                row[f"paper_fold_{k}"] = m["paper_fold"]["mean"][k]
        tune = m.get("tune") or {}   # a `mer tune` trial or its final re-run: `--filter study=S`
        row["study"] = tune.get("study", "")
        row["trial"] = "" if not tune else (f"best-{tune['trial']}" if tune.get("final") else str(tune["trial"]))
        row["audit"] = audit_line(m.get("audit"))
        row["path"] = str(run)
        rows.append(row)
    df = pd.DataFrame(rows)
    for f in filters:
        key, sep, pat = f.partition("=")
        if not sep:
            raise MerError(f"--filter {f!r}: expected field=pattern, e.g. fusion=concat")
        if len(df) == 0:
            break
        if key not in df.columns:
            raise MerError(f"--filter {f!r}: no field {key!r}; fields: {', '.join(df.columns)}")
        df = df[df[key].astype(str).map(lambda v: fnmatch.fnmatchcase(v, pat))]
    if sort and len(df):
        if sort not in df.columns:
            raise MerError(f"--sort {sort!r}: no such column; columns: {', '.join(df.columns)}")
        asc = ascending if ascending is not None else sort in ("mae", "run", "dataset", "features", "fusion", "protocol")
        df = df.sort_values(sort, ascending=asc, kind="stable")
    return df.reset_index(drop=True)
