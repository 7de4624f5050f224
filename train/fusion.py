"""The fusion-model interface and its registry.

A fusion model is a ``torch.nn.Module`` built from the list of inputs the user chose with
``--features`` (each an ``InputSpec``, dimensions read from store metadata) and the number
of outputs (classes, or 1 for regression). ``forward(batch)`` returns logits ``[B, n_out]``.

The batch is a dict keyed by input key (e.g. ``"bert.pooled"``, ``"mfcc.frames"``):
- fixed inputs:  ``batch[key]`` float tensor ``[B, D]``
- ragged inputs: ``batch[key]`` float tensor ``[B, T, D]`` (zero-padded) and
  ``batch[key + ".mask"]`` bool tensor ``[B, T]``, True on real frames/tokens.
Padded positions must never influence the output (tests change them and compare).

Optional hooks a model may define, used by the trainer when present:
- ``loss(logits, y) -> Tensor``: a model-specific training loss (default: cross-entropy,
  or MSE for regression);
- ``predict_proba(logits) -> Tensor [B, C]``: class probabilities (default: softmax);
- ``sweep(logits, y) -> list[dict]``: extra evaluation tables, e.g. the hierarchical
  model's threshold sweep, written to the run's metrics.json under ``"sweeps"``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from mer.common.errors import UsageError
from mer.common.registry import Registry

FUSIONS: Registry[type] = Registry("fusion", package="mer.train", marker="FUSIONS.register")


@dataclass(frozen=True)
class InputSpec:
    """One model input: what the model is built for, and where the data layer reads it.

    The one input vocabulary of training (the data layer's old ``InputSource`` is this class).
    ``dim`` is always the width the model sees; a store output holding ``layers`` stacked
    hidden states is ``dim * layers`` wide there (``width``), and reaches the model as their
    learned softmax mix of size ``dim`` (mer.train.layermix), never the stack itself.
    """

    key: str          # "<feature>.<output>" (+ "@mean" when pooled here), e.g. "bert.pooled", "mfcc.frames"
    kind: str         # as the model sees it: "fixed" | "ragged"
    dim: int
    modality: str     # "audio" | "text"
    layers: int = 1
    feature: str = ""          # the store's feature; default: the key's first part
    output: str = ""           # the store's output; default: the key's second part
    pooled_here: bool = False  # a ragged output averaged over frames by the data layer to make a vector

    def __post_init__(self):
        feat, _, out = self.key.partition(".")
        if not self.feature:
            object.__setattr__(self, "feature", feat)
        if not self.output:
            object.__setattr__(self, "output", out.removesuffix("@mean"))

    @property
    def width(self) -> int:
        """Values per row in the store (the stacked layers side by side)."""
        return self.dim * self.layers

    def to_record(self) -> dict:
        """The run config's ``inputs`` entry (the layout runs have always recorded: ``dim``
        there is the store's width)."""
        return {"key": self.key, "feature": self.feature, "output": self.output, "kind": self.kind,
                "dim": self.width, "modality": self.modality, "pooled_here": self.pooled_here, "layers": self.layers}

    @classmethod
    def from_record(cls, r: dict) -> "InputSpec":
        layers = int(r.get("layers") or 1)
        return cls(r["key"], r["kind"], int(r["dim"]) // layers, r["modality"], layers, r["feature"], r["output"],
                   bool(r.get("pooled_here", False)))


# What a fusion's ``wants`` may say: which output the data layer loads when the user names
# only a feature that offers both (``bert.pooled`` and ``bert.tokens``). "pooled": utterance
# vectors; "sequence": frame/token sequences where the feature has them; "both": each. A
# fusion that says nothing gets DEFAULT_WANTS. The one list and the one default.
WANTS = ("pooled", "sequence", "both")
DEFAULT_WANTS = "pooled"


def check_wants(wants: str, owner: str = "fusion") -> str:
    if wants not in WANTS:
        raise UsageError(f"{owner} declares wants={wants!r}; expected {', '.join(WANTS)}")
    return wants


def by_modality(inputs: list[InputSpec], modality: str) -> list[InputSpec]:
    return [i for i in inputs if i.modality == modality]


def model_config(cls, overrides: dict | None):
    """The fusion's dataclass config with ``--set name=value`` overrides (typed by the field);
    a name the fusion does not have is left out (it may be for another fusion of the run)."""
    from mer.common.config import make_config

    Config = getattr(cls, "Config", None)
    if Config is None:
        if overrides:
            raise UsageError(f"fusion {cls.__name__} has no config to set {sorted(overrides)} on")
        return None
    # ":" separates list items in --set (hidden_sizes=128:64), whose values sit in one token.
    return make_config(Config, overrides, owner=f"fusion {cls.__name__}", option="--set {}", unknown="ignore", seq_sep=":")


# Context modes (--context): "none" classifies utterances on their own; "dialog" gives a
# model batches of whole dialogues (mer.train.dialog). A fusion lists the modes it has in
# ``contexts`` (default: none only); ``dialog_wants`` overrides ``wants`` in dialog mode.
CONTEXTS = ("none", "dialog")


# A registration as written in a model module's source: the register call with a quoted name.
_REGISTERED = re.compile(r"""FUSIONS\.register\(\s*["']([^"']+)["']""")


def names_for_help() -> list[str]:
    """The fusion names, for help text, without importing the models (and torch with them):
    read from the source of the modules the registry would import. Where plugins may add
    models (``$MER_PLUGINS``, ``mer.plugins`` entry points) or the registry is already
    loaded, its own ``names()``."""
    import importlib.util
    import os
    from importlib.metadata import entry_points
    from pathlib import Path

    from mer.common.registry import PLUGINS_ENV, PLUGINS_GROUP, modules_mentioning

    if os.environ.get(PLUGINS_ENV) or len(entry_points(group=PLUGINS_GROUP)) or FUSIONS._loaded:
        return FUSIONS.names()
    names: set[str] = set()
    for mod in modules_mentioning(FUSIONS.package, FUSIONS.marker):
        spec = importlib.util.find_spec(mod)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            return FUSIONS.names()   # not plain source: ask the registry
        names.update(_REGISTERED.findall(Path(spec.origin).read_text(encoding="utf-8")))
    return sorted(names)


def context_fusions() -> list[str]:
    return [n for n in FUSIONS.names() if "dialog" in getattr(FUSIONS.get(n), "contexts", ("none",))]


def check_context(cls, fname: str, context: str) -> None:
    if context not in CONTEXTS:
        raise UsageError(f"--context {context}: unknown; choose from {', '.join(CONTEXTS)}")
    if context not in getattr(cls, "contexts", ("none",)):
        raise UsageError(f"--context {context}: fusion {fname} classifies utterances on their own; "
                         f"conversation-level fusions: {', '.join(context_fusions())}")


def fusion_wants(cls, context: str = "none") -> str:
    """Which outputs the data layer loads for a fusion (``dialog_wants`` in dialog mode)."""
    wants = getattr(cls, "wants", DEFAULT_WANTS)
    if context == "dialog":
        wants = getattr(cls, "dialog_wants", wants)
    return check_wants(wants, f"fusion {getattr(cls, '__name__', cls)}")


def build_model(cls, specs, n_out: int, cfg, classes: list[str] | None, context: str = "none", regression: bool = False):
    """Instantiate a fusion; class names go to models that ask for them (hierarchical needs
    to know which class is neutral), the context mode to conversation-level models. Inputs that are stacks of hidden states (``--bert.layer
    all``) get learned softmax layer weights in front of the model (mer.train.layermix)."""
    import inspect

    from mer.train.layermix import wrap

    kw = {}
    params = inspect.signature(cls.__init__).parameters
    if classes and "classes" in params:
        kw["classes"] = list(classes)
    # Models whose output differs between classes and targets (late fusion: probabilities
    # averaged, or predictions) ask; n_out alone cannot tell 3 classes from 3 targets.
    if regression and "regression" in params:
        kw["regression"] = True
    if context != "none":
        check_context(cls, cls.__name__, context)
        kw["context"] = context
    model = cls(specs, n_out, cfg, **kw) if cfg is not None else cls(specs, n_out, **kw)
    return wrap(model, specs)
