"""Evaluation metrics (sklearn.metrics underneath).

Classification: accuracy (WA), unweighted accuracy (UA = mean per-class recall over the
classes present in the test fold), weighted and macro F1, per-class precision/recall/F1,
confusion matrix. Regression (MOSI/MOSEI scores in [-3, 3]): MAE, Pearson r, Acc-2
(negative < 0 vs non-negative >= 0), Acc-2 without zeros, F1 of Acc-2, Acc-7 (rounded and
clipped to [-3, 3]), and CCC (the concordance correlation coefficient dimensional-emotion
work reports: MSP-Podcast, AVEC). Multi-target regression (arousal, valence, dominance at
once): MAE, Pearson r and CCC per target (``ccc_<target>``) and their means.
"""
from __future__ import annotations

import numpy as np

# Scalar metrics summarised as mean/std across folds (or seeds) and shown by `mer runs`.
CLASSIFICATION_KEYS = ("accuracy", "ua", "weighted_f1", "macro_f1")
REGRESSION_KEYS = ("mae", "corr", "ccc", "acc2", "acc2_nonzero", "f1_acc2", "acc7")
PER_TARGET_KEYS = ("mae", "corr", "ccc")


def regression_keys(targets: list[str] | None = None) -> tuple[str, ...]:
    """The summarised keys of a regression run: one target's, or the means and each
    target's ``<key>_<target>`` for a multi-target scheme."""
    if not targets:
        return REGRESSION_KEYS
    return PER_TARGET_KEYS + tuple(f"{k}_{t}" for t in targets for k in PER_TARGET_KEYS)


def ccc(y_true, y_pred) -> float:
    """Lin's concordance correlation coefficient, 2 cov / (var_t + var_p + (mean_t - mean_p)^2),
    with population (1/n) moments as in the AVEC and MSP-Podcast scoring scripts. Unlike
    Pearson r it falls when predictions are shifted or scaled. NaN where it is undefined
    (fewer than 2 rows, or both series constant and equal); never reported as 0."""
    t = np.asarray(y_true, np.float64)
    p = np.asarray(y_pred, np.float64)
    if t.shape != p.shape:
        raise ValueError(f"ccc: y_true has shape {t.shape}, y_pred {p.shape}")
    if len(t) < 2:
        return float("nan")
    mt, mp = t.mean(), p.mean()
    vt, vp = t.var(), p.var()
    cov = ((t - mt) * (p - mp)).mean()
    den = vt + vp + (mt - mp) ** 2
    return float(2 * cov / den) if den > 0 else float("nan")


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


def _pearson(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    if len(y_true) > 1 and np.std(y_true) > 0 and np.std(y_pred) > 0:
        return float(np.corrcoef(y_true, y_pred)[0, 1])
    return float("nan")  # undefined for a constant series; never reported as 0


def multi_regression_metrics(y_true, y_pred, targets: list[str]) -> dict:
    """[n, T] targets: MAE, Pearson r and CCC per target, and their means (``ccc`` is the
    mean CCC, the early-stopping monitor)."""
    y_true = np.asarray(y_true, float)
    y_pred = np.asarray(y_pred, float)
    if y_true.ndim != 2 or y_true.shape != y_pred.shape or y_true.shape[1] != len(targets):
        raise ValueError(f"multi-target metrics: y_true {y_true.shape}, y_pred {y_pred.shape}, targets {targets}")
    out: dict = {"n": int(len(y_true))}
    per = {k: [] for k in PER_TARGET_KEYS}
    for i, t in enumerate(targets):
        vals = {"mae": float(np.mean(np.abs(y_true[:, i] - y_pred[:, i]))) if len(y_true) else float("nan"),
                "corr": _pearson(y_true[:, i], y_pred[:, i]),
                "ccc": ccc(y_true[:, i], y_pred[:, i])}
        for k, v in vals.items():
            out[f"{k}_{t}"] = v
            per[k].append(v)
    for k, vs in per.items():
        # NaN (an undefined target) makes the mean NaN: a mean over fewer targets would flatter.
        out[k] = float(np.mean(vs))
    return out


def regression_metrics(y_true, y_pred, targets: list[str] | None = None) -> dict:
    from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error

    if np.ndim(y_true) == 2:
        return multi_regression_metrics(y_true, y_pred, targets or [str(i) for i in range(np.shape(y_true)[1])])
    y_true = np.asarray(y_true, float)
    y_pred = np.asarray(y_pred, float)
    corr = _pearson(y_true, y_pred)
    b_true, b_pred = y_true >= 0, y_pred >= 0
    nz = y_true != 0
    return {
        "n": int(len(y_true)),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "corr": corr,
        "ccc": ccc(y_true, y_pred),
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
