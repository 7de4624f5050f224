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

from dataclasses import dataclass

from mer.common.errors import UsageError
from mer.common.registry import Registry

FUSIONS: Registry[type] = Registry("fusion", package="mer.train", marker="FUSIONS.register")


@dataclass(frozen=True)
class InputSpec:
    key: str          # "<feature>.<output>", e.g. "bert.pooled", "mfcc.frames"
    kind: str         # "fixed" | "ragged"
    dim: int
    modality: str     # "audio" | "text"
    # >1: the store holds this many hidden states stacked along D; the model sees their
    # learned softmax mix of size ``dim`` (mer.train.layermix), never the stack itself.
    layers: int = 1


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
    if context == "dialog":
        return getattr(cls, "dialog_wants", getattr(cls, "wants", "pooled"))
    return getattr(cls, "wants", "pooled")


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
