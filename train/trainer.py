"""One trainer for every fusion model: folds x seeds, early stopping, evaluation, run dirs.

The trainer is split by job; this module gathers the names callers import from it:
- ``mer.train.config``: ``TrainConfig`` (validated when made), optimizers, option tuples;
- ``mer.train.folds``: one fold of one seed (``train_fold``), ``evaluate``, ``autocast``;
- ``mer.train.pool``: which folds run in which process (``parallel_plan``, ``fold_results``);
- ``mer.train.run``: ``run_train``, which returns one ``RunResult`` per run written.

Early stopping watches the fold's validation split (carved from training material by
``mer.train.protocols``); the test split is used once, after training. Fusion hooks from
``mer.train.fusion`` (``loss``, ``predict_proba``, ``sweep``, ``calibrate``) are used when a
model defines them.
"""
from __future__ import annotations

from mer.train.config import (  # noqa: F401
    MONITORS,
    NORMALIZE,
    OPTIMIZERS,
    PRECISIONS,
    TrainConfig,
    check_options,
    config_fields,
    make_optimizer,
    parse_list,
)
from mer.train.folds import (  # noqa: F401
    FoldResult,
    autocast,
    calibrate_on_validation,
    check_balanced,
    evaluate,
    train_fold,
)
# Built by name from the fusion registry (re-exported: callers import them from here too).
from mer.train.fusion import build_model, check_context, fusion_wants, model_config  # noqa: F401
from mer.train.pool import fold_results, parallel_plan, usable_cores  # noqa: F401
from mer.train.run import DataKey, DataVariants, RunResult, load_labels, run_train  # noqa: F401
