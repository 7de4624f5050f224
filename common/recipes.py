"""Recipes: the seed papers' settings as small data files (``manifests/recipes/*.yaml``).

One YAML file per paper names everything a reproduction needs: the features with their
extractor settings (``features``: extractor -> config fields), the model inputs
(``inputs``, what ``mer train --features`` would take), the fusion and its config
(``model``, what ``--set`` would take), the training settings (``train``: optimizer, lr,
weight decay, batch size, epochs, patience, monitored quantity, gradient clipping; and
``finetune``, the features whose encoders are fine-tuned, with ``encoder_lr``), the
context mode, protocol and label scheme, and the metric the paper reports with its figure.
A recipe may carry the paper's search space (``space``) for ``mer tune --recipe``.

``mer extract --recipe NAME -d D`` extracts exactly the recipe's features;
``mer train --recipe NAME -d D`` trains it and writes the paper's figure next to the run's.
Options given on the command line override the recipe's values, and the run records which.

This module reads and checks recipe files only (the bottom layer: it imports neither
extract nor train). Planning what to extract and what is missing is ``mer.extract.recipes``;
setting up a training run from a recipe is ``mer.train.recipes``.

Encoders that are not installed here (bert-base-uncased, roberta-large, OpenL3 weights, a
user's openSMILE .conf) stop the command with a message naming what to download and which
option points at it. ``--substitute`` replaces each missing one by the recipe's
``substitute`` entry (the packaged all-MiniLM-L6-v2 for text, the packaged Resemblyzer
d-vector for OpenL3, a shipped openSMILE set for a missing .conf) and records every
substitution in the run: its numbers are then not the paper's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from mer.common.errors import MerError, UsageError

RECIPE_KEYS = {"name", "seed", "paper", "dataset", "scheme", "protocol", "features", "inputs", "fusion", "model",
               "context", "train", "metric", "figure", "figure_text", "differs", "notes", "substitute", "space"}
TRAIN_KEYS = {"optimizer", "lr", "weight_decay", "batch_size", "epochs", "patience", "monitor", "grad_clip",
              "balanced", "max_len", "batch_frames", "accumulate", "warmup", "schedule",
              # fine-tuning (mer.train.finetune): which features' encoders are tuned, and how; the
              # encoder itself, its layer selection and token cap are the feature's own settings
              "finetune", "encoder_lr", "freeze_layers"}
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
    figure: float | None       # None: the paper's text does not give the run system's figure (figure_text says why)
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
    if d.get("figure") is None and not d.get("figure_text"):
        raise MerError(f"{where}: figure: null needs figure_text saying why the paper's figure is not given")
    if d.get("metric") not in METRICS:
        raise MerError(f"{where}: metric {d.get('metric')!r} must be one of {', '.join(METRICS)}")
    try:
        r = Recipe(**{k: v for k, v in d.items()}, path=where)
    except TypeError as e:
        raise MerError(f"{where}: {e}") from None
    r.features = {k: dict(v or {}) for k, v in (r.features or {}).items()}
    return r


def table() -> list[dict]:
    """One row per packaged recipe, for ``mer recipes``."""
    rows = []
    for n in names():
        r = load(n)
        rows.append({"recipe": r.name, "seed": r.seed, "dataset": r.dataset, "fusion": r.fusion,
                     "context": r.context, "protocol": r.protocol, "scheme": r.scheme,
                     "features": r.inputs, "metric": r.metric, "paper figure": f"{100 * r.figure:.2f}" if r.figure is not None else "-",
                     "reported as": r.figure_text})
    return rows
