"""Evaluation metrics (sklearn.metrics underneath).

Classification: accuracy (WA), unweighted accuracy (UA = mean per-class recall over the
classes present in the test fold), weighted and macro F1, per-class precision/recall/F1,
confusion matrix. Regression (MOSI/MOSEI scores in [-3, 3]): MAE, Pearson r, Acc-2
(negative < 0 vs non-negative >= 0), Acc-2 without zeros, F1 of Acc-2, Acc-7 (rounded and
clipped to [-3, 3]).
"""
from __future__ import annotations

import numpy as np

# Scalar metrics summarised as mean/std across folds (or seeds) and shown by `mer runs`.
CLASSIFICATION_KEYS = ("accuracy", "ua", "weighted_f1", "macro_f1")
REGRESSION_KEYS = ("mae", "corr", "acc2", "acc2_nonzero", "f1_acc2", "acc7")


def classification_metrics(y_true, y_pred, classes: list[str]) -> dict:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    y_true = np.asarray(y_true, int)
    y_pred = np.asarray(y_pred, int)
    labels = list(range(len(classes)))
    present = sorted(set(y_true.tolist()))
    # UA averages recall over the classes that occur in the test fold (a class with no
    # test rows has no recall); sklearn's balanced_accuracy_score does the same.
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    ua = float(np.mean([r[c] for c in present])) if present else float("nan")
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "ua": ua,
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "per_class": {
            c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, c in enumerate(classes)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def regression_metrics(y_true, y_pred) -> dict:
    from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error

    y_true = np.asarray(y_true, float)
    y_pred = np.asarray(y_pred, float)
    if len(y_true) > 1 and np.std(y_true) > 0 and np.std(y_pred) > 0:
        corr = float(np.corrcoef(y_true, y_pred)[0, 1])
    else:
        corr = float("nan")  # undefined for a constant series; never reported as 0
    b_true, b_pred = y_true >= 0, y_pred >= 0
    nz = y_true != 0
    return {
        "n": int(len(y_true)),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "corr": corr,
        "acc2": float(accuracy_score(b_true, b_pred)),
        "acc2_nonzero": float(accuracy_score(y_true[nz] > 0, y_pred[nz] > 0)) if nz.any() else float("nan"),
        "f1_acc2": float(f1_score(b_true, b_pred, average="weighted", zero_division=0)),
        "acc7": float(accuracy_score(np.clip(np.round(y_true), -3, 3), np.clip(np.round(y_pred), -3, 3))),
    }


def summarize(folds: list[dict], keys) -> tuple[dict, dict, str]:
    """Mean and std of scalar metrics.

    One seed: mean and std over folds. Several seeds: each seed's fold mean first, then
    mean and std across seeds (the spread that says how much a result depends on the seed).
    Returns (mean, std, "folds" | "seeds").
    """
    seeds = sorted({f.get("seed", 0) for f in folds})
    mean, std = {}, {}
    for k in keys:
        vals = [f[k] for f in folds if k in f]
        if not vals:
            continue
        if len(seeds) > 1:
            per_seed = [np.nanmean([f[k] for f in folds if f.get("seed", 0) == s and k in f]) for s in seeds]
            vals = per_seed
        arr = np.asarray(vals, float)
        mean[k] = float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan")
        std[k] = float(np.nanstd(arr)) if np.isfinite(arr).any() else float("nan")
    return mean, std, ("seeds" if len(seeds) > 1 else "folds")
