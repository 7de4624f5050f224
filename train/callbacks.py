"""Per-epoch hooks: how code outside the trainer sees each epoch as it ends.

``mer tune`` reports each epoch's validation metric to Optuna's pruner through here (and
stops a trial the pruner rejects by raising from its hook). Hooks are process-local: folds
trained in forked workers (``--jobs`` > 1) do not call the parent's hooks, so a caller that
needs every epoch trains with one job (``mer tune`` does: its trials are the parallelism).
"""
from __future__ import annotations

import contextlib
from typing import Callable

EpochHook = Callable[[int, str, dict], None]   # (seed, fold name, history record of the epoch)
_HOOKS: list[EpochHook] = []


@contextlib.contextmanager
def on_epoch(hook: EpochHook):
    """Call ``hook(seed, fold, record)`` at the end of every epoch trained inside the block."""
    _HOOKS.append(hook)
    try:
        yield hook
    finally:
        _HOOKS.remove(hook)


def epoch_end(seed: int, fold: str, record: dict) -> None:
    """Called by the trainer after each epoch's validation; a hook may raise to stop training."""
    for hook in list(_HOOKS):
        hook(seed, fold, record)
