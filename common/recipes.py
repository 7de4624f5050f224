"""Recipes: the seed papers' settings as small data files (``manifests/recipes/*.yaml``).

One YAML file per paper names everything a reproduction needs: the features with their
extractor settings (``features``: extractor -> config fields), the model inputs
(``inputs``, what ``mer train --features`` would take), the fusion and its config
(``model``, what ``--set`` would take), the training settings (``train``: optimizer, lr,
weight decay, batch size, epochs, patience, monitored quantity, gradient clipping), the
context mode, protocol and label scheme, and the metric the paper reports with its figure.
A recipe may carry the paper's search space (``space``) for ``mer tune --recipe``.

``mer extract --recipe NAME -d D`` extracts exactly the recipe's features;
``mer train --recipe NAME -d D`` trains it and writes the paper's figure next to the run's.
Options given on the command line override the recipe's values, and the run records which.

Encoders that are not installed here (bert-base-uncased, roberta-large, OpenL3 weights, a
user's openSMILE .conf) stop the command with a message naming what to download and which
option points at it. ``--substitute`` replaces each missing one by the recipe's
``substitute`` entry (the packaged all-MiniLM-L6-v2 for text, the packaged Resemblyzer
d-vector for OpenL3, a shipped openSMILE set for a missing .conf) and records every
substitution in the run: its numbers are then not the paper's.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from mer.common.errors import MerError, UsageError

RECIPE_KEYS = {"name", "seed", "paper", "dataset", "scheme", "protocol", "features", "inputs", "fusion", "model",
               "context", "train", "metric", "figure", "figure_text", "differs", "notes", "substitute", "space"}
TRAIN_KEYS = {"optimizer", "lr", "weight_decay", "batch_size", "epochs", "patience", "monitor", "grad_clip",
              "balanced", "max_len"}
METRICS = ("accuracy", "ua", "weighted_f1", "macro_f1")


@dataclass
class Recipe:
    name: str
    seed: str
    paper: str
    dataset: str
    scheme: str
    protocol: str
    features: dict[str, dict]
    inputs: str
    fusion: str
    metric: str
    figure: float
    figure_text: str
    model: dict = field(default_factory=dict)
    context: str = "none"
    train: dict = field(default_factory=dict)
    differs: str = ""
    notes: str = ""
    substitute: dict[str, dict] = field(default_factory=dict)
    # The paper's hyper-parameter search space, for `mer tune --recipe` (name -> "low:high[:log]",
    # "a,b,c", a list, or {low, high, log}; mer.train.tune.parse_param reads it).
    space: dict = field(default_factory=dict)
    path: str = ""

    def paper_record(self) -> dict:
        return {"recipe": self.name, "seed": self.seed, "paper": self.paper, "metric": self.metric,
                "figure": self.figure, "figure_text": self.figure_text}


def _files():
    return resources.files("mer.manifests").joinpath("recipes")


def names() -> list[str]:
    return sorted(p.name[:-5] for p in _files().iterdir() if p.name.endswith(".yaml"))


def load(name: str) -> Recipe:
    """The recipe ``name`` (a packaged one) or a path to a recipe .yaml file of your own."""
    import yaml

    p = Path(name).expanduser()
    if p.suffix in (".yaml", ".yml") and p.is_file():
        text, where = p.read_text(), str(p)
    else:
        f = _files().joinpath(f"{name}.yaml")
        if not f.is_file():
            raise UsageError(f"--recipe {name}: no such recipe; choose from {', '.join(names())} (or give a .yaml path)")
        text, where = f.read_text(), f"manifests/recipes/{name}.yaml"
    d = yaml.safe_load(text) or {}
    bad = sorted(set(d) - RECIPE_KEYS)
    if bad:
        raise MerError(f"{where}: unknown recipe keys {bad}; valid: {', '.join(sorted(RECIPE_KEYS))}")
    bad = sorted(set(d.get("train") or {}) - TRAIN_KEYS)
    if bad:
        raise MerError(f"{where}: unknown train keys {bad}; valid: {', '.join(sorted(TRAIN_KEYS))}")
    if d.get("metric") not in METRICS:
        raise MerError(f"{where}: metric {d.get('metric')!r} must be one of {', '.join(METRICS)}")
    try:
        r = Recipe(**{k: v for k, v in d.items()}, path=where)
    except TypeError as e:
        raise MerError(f"{where}: {e}") from None
    r.features = {k: dict(v or {}) for k, v in (r.features or {}).items()}
    return r


# ----------------------------------------------------------------------------- encoders
def _missing(feature: str, cfg: dict) -> str | None:
    """Why the recipe's setting of ``feature`` cannot run here (an encoder or file that is
    not installed), or None. The message says what to download and which option takes it."""
    if feature in ("bert", "wav2vec"):
        model = str(cfg.get("model") or "")
        if not model:
            return None
        try:
            if feature == "bert":
                from mer.extract.text import resolve_text_model

                resolve_text_model(model)
            else:
                from mer.extract.torchutil import resolve_hf_model

                resolve_hf_model(model, f"--{feature}.model")
        except MerError:
            return (f"needs the {'text' if feature == 'bert' else 'speech'} encoder {model}, which is not installed here: "
                    f"download it on a machine with internet (`huggingface-cli download {model}`), copy the folder "
                    f"here and point `--{feature}.model /path/to/{model.split('/')[-1]}` at it")
        return None
    if feature == "openl3":
        import os

        w = cfg.get("weights") or os.environ.get("MER_OPENL3_WEIGHTS")
        if not w or not Path(str(w)).expanduser().is_file():
            return ("needs the OpenL3 weights, which cannot be downloaded here: convert the official Keras file "
                    "(`python -m mer.extract.openl3 convert openl3_audio_mel256_music.h5 openl3.safetensors`) and "
                    "pass `--openl3.weights openl3.safetensors` (or set MER_OPENL3_WEIGHTS)")
        return None
    if feature == "smile":
        conf = cfg.get("config")
        if not conf or not Path(str(conf)).expanduser().is_file():
            return (f"needs the openSMILE config {conf or '(none given)'}, which the opensmile wheel does not ship: "
                    f"take it from an openSMILE release (config/misc/emo_large.conf, with opensmile-python's source "
                    f"and sink includes) and pass `--smile.config /path/to/{Path(str(conf or 'emo_large.conf')).name}`")
    return None


@dataclass
class Plan:
    """What a recipe runs here: features (after CLI overrides and substitutions) and inputs."""

    features: dict[str, dict]
    inputs: str
    substitutions: list[dict]


def plan(recipe: Recipe, overrides: dict[str, dict] | None = None, substitute: bool = False) -> Plan:
    """The recipe's features with ``overrides`` (feature -> {field: value} from the command
    line) applied; a missing encoder is an error, or with ``substitute`` replaced by the
    recipe's ``substitute`` entry for that feature (recorded)."""
    feats = {f: {**c, **(overrides or {}).get(f, {})} for f, c in recipe.features.items()}
    inputs = recipe.inputs
    subs: list[dict] = []
    out: dict[str, dict] = {}
    for f, cfg in feats.items():
        why = _missing(f, cfg)
        if why is None:
            out[f] = cfg
            continue
        if not substitute:
            raise MerError(f"recipe {recipe.name}: {f} {why}; or run with --substitute to use the packaged "
                           f"{_sub_text(recipe, f)} (the results are then not the paper's)")
        s = recipe.substitute.get(f)
        if s is None:
            raise MerError(f"recipe {recipe.name}: {f} {why} (and the recipe names no substitute for it)")
        new = s.get("feature", f)
        new_cfg = {k: v for k, v in cfg.items() if new == f and k not in (s.get("drop") or [])}
        new_cfg.update(s.get("config") or {})
        out[new] = new_cfg
        if new != f:
            inputs = rename_input(inputs, f, new)
        subs.append({"feature": f, "wanted": cfg, "used_feature": new, "used": new_cfg, "why": why})
    return Plan(out, inputs, subs)


def rename_input(inputs: str, old: str, new: str) -> str:
    """``inputs`` with feature ``old`` replaced by ``new`` (its default output: the old
    feature's output names need not exist in the substitute)."""
    return ",".join("+".join(new if p.split(".")[0] == old else p for p in part.split("+")) for part in inputs.split(","))


def _sub_text(recipe: Recipe, f: str) -> str:
    s = recipe.substitute.get(f) or {}
    if s.get("feature") and s["feature"] != f:
        return f"{s['feature']} features instead"
    return ", ".join(f"{k}={v}" for k, v in (s.get("config") or {}).items()) or "default"


def table() -> list[dict]:
    """One row per packaged recipe, for ``mer recipes``."""
    rows = []
    for n in names():
        r = load(n)
        rows.append({"recipe": r.name, "seed": r.seed, "dataset": r.dataset, "fusion": r.fusion,
                     "context": r.context, "protocol": r.protocol, "scheme": r.scheme,
                     "features": r.inputs, "metric": r.metric, "paper figure": f"{100 * r.figure:.2f}",
                     "reported as": r.figure_text})
    return rows


# ----------------------------------------------------------------------------- training
def train_plan(recipe: Recipe, dataset: str, cache=None, manifest=None, substitute: bool = False) -> Plan:
    """The stores a recipe trains on: for each feature the newest complete store extracted
    with the recipe's settings, else (with ``substitute``) one of its substitute, else an
    error naming the `mer extract --recipe` command (and the encoder to install)."""
    from mer.extract.cache import find_store

    feats: dict[str, dict] = {}
    inputs = recipe.inputs
    subs: list[dict] = []

    def has(f, cfg) -> bool:
        try:
            find_store(dataset, f, cache=cache, manifest=manifest, where=match_config(f, cfg))
            return True
        except MerError:
            return False

    for f, cfg in recipe.features.items():
        if has(f, cfg):
            feats[f] = cfg
            continue
        s = recipe.substitute.get(f)
        if substitute and s is not None:
            new = s.get("feature", f)
            new_cfg = {**(cfg if new == f else {}), **(s.get("config") or {})}
            if has(new, new_cfg):
                feats[new] = new_cfg
                if new != f:
                    inputs = rename_input(inputs, f, new)
                subs.append({"feature": f, "wanted": cfg, "used_feature": new, "used": new_cfg,
                             "why": _missing(f, cfg) or "no store with the recipe's settings"})
                continue
        how = f"`mer extract --recipe {recipe.name} --dataset {dataset}" + (" --substitute`" if substitute else "`")
        why = _missing(f, cfg)
        nor = (f" nor its substitute {s.get('feature', f)} {s.get('config') or {}}" if substitute and s is not None else "")
        raise MerError(f"recipe {recipe.name}: no complete {f} store extracted with {cfg}{nor} for {dataset} from the "
                       f"current manifest; run {how} first" + (f" (it {why})" if why and not substitute else ""))
    return Plan(feats, inputs, subs)


def match_config(feature: str, cfg: dict) -> dict:
    """The typed config fields a store of ``feature`` must have to be the recipe's."""
    from mer.common.config import make_config
    from mer.extract.base import EXTRACTORS

    full = make_config(EXTRACTORS.get(feature).Config, cfg, owner=f"extractor {feature}", option=f"--{feature}.{{}}")
    return json.loads(json.dumps({k: getattr(full, k) for k in cfg}, default=str))


# Recipe keys -> mer train options (the CLI parameter names).
TRAIN_OPTIONS = {"optimizer": "optimizer", "lr": "lr", "weight_decay": "weight_decay", "batch_size": "batch_size",
                 "epochs": "epochs", "patience": "patience", "monitor": "monitor", "grad_clip": "grad_clip",
                 "balanced": "balanced", "max_len": "max_len"}


def train_setup(name: str, dataset: str, values: dict, given: set[str], cache=None, manifest=None,
                substitute: bool = False) -> tuple[dict, dict, dict]:
    """``mer train --recipe``: (option values, the run's recipe record, store configs).

    ``values``: the command's option values by parameter name; ``given``: the names the user
    typed. The recipe fills every option not given; a given one overrides the recipe and is
    recorded under ``overrides`` as ``{option: {"recipe": ..., "command line": ...}}``."""
    r = load(name)
    if r.dataset != dataset:
        raise UsageError(f"--recipe {r.name} is set up for --dataset {r.dataset} (its features, scheme and protocol "
                         f"are {r.dataset}'s), not {dataset}")
    out = dict(values)
    overrides: dict[str, dict] = {}

    def take(opt, recipe_value, same=lambda a, b: a == b):
        if opt in given:
            if not same(values[opt], recipe_value):
                overrides[opt] = {"recipe": recipe_value, "command line": values[opt]}
        else:
            out[opt] = recipe_value

    p = None
    if "features" not in given:
        p = train_plan(r, dataset, cache, manifest, substitute)
    take("features", (p.inputs,) if p else (r.inputs,), lambda a, b: list(a) == list(b))
    take("fusion", [r.fusion], lambda a, b: list(a) == list(b))
    take("protocol", r.protocol)
    take("scheme", r.scheme)
    take("context", r.context)
    for k, v in r.train.items():
        take(TRAIN_OPTIONS[k], v)
    opts = {k: str(v) for k, v in r.model.items()}
    for k, v in (values.get("options") or {}).items():
        if k in opts and opts[k] != v:
            overrides[f"set {k}"] = {"recipe": opts[k], "command line": v}
        opts[k] = v
    out["options"] = opts
    record = {"name": r.name, "file": r.path, "paper": r.paper_record(), "overrides": overrides,
              "substitutions": p.substitutions if p else [], "differs": r.differs}
    store_cfgs = {f: match_config(f, c) for f, c in p.features.items()} if p else {}
    return out, record, store_cfgs
