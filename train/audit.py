"""The protocol audit written with every run (``metrics.json["audit"]``, one column in
``mer runs``): what a reader needs to trust the figures, checked from the run's own parts.

- the test speakers/sessions are disjoint from the training (and validation) ones wherever
  the protocol promises it: the protocol's ``group`` column for group protocols, and the
  ``speaker`` column too when the manifest has one (IEMOCAP's LOSO promises unseen speakers);
- validation rows are disjoint from test rows (by row and by utterance id);
- the label map's hash (classes in index order), so two runs compared share one map;
- rows per class in train, valid and test of every fold, and how the validation slice came
  about (the protocol's split, or carved by utterance or by dialogue);
- the reported fold metrics recomputed from ``predictions.csv`` with scikit-learn.

Published results have been wrong for each of these reasons (speaker leakage across folds,
tuning on test, label maps that differ between compared runs, metrics computed on other rows
than the predictions); the audit does not fix a run, it says what is wrong with it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

GROUP_KINDS = ("group_folds", "group_kfold", "speaker_independent")
TOL = 1e-9   # predicted labels are exact in predictions.csv: only float summation order may differ


def label_map_hash(classes) -> str:
    return hashlib.sha256(json.dumps(list(classes)).encode()).hexdigest()[:16]


def promised_columns(protocol: dict, meta) -> list[str]:
    """Columns whose values the protocol promises never to share between test and training."""
    if protocol.get("kind") not in GROUP_KINDS:
        return []
    cols = [str(protocol["group"])] if protocol.get("group") else []
    if "speaker" in meta.columns and meta["speaker"].notna().all() and "speaker" not in cols:
        cols.append("speaker")
    return [c for c in cols if c in meta.columns]


def _counts(y, rows, classes) -> dict:
    if classes is None:
        return {"n": int(len(rows))}
    c = np.bincount(np.asarray(y)[rows], minlength=len(classes))
    return {k: int(v) for k, v in zip(classes, c)}


def check_folds(protocol: dict, meta, y, classes, fold_sets: dict) -> tuple[list[dict], list[str]]:
    """(per-fold composition, problems) for ``fold_sets`` {seed: [Fold]} over rows of ``meta``."""
    cols = promised_columns(protocol, meta)
    ids = meta["id"].astype(str).to_numpy() if "id" in meta.columns else None
    parts, problems = [], []
    for seed, folds in fold_sets.items():
        for f in folds:
            entry = {"seed": seed, "fold": f.name, "valid_from": getattr(f, "valid_from", "protocol")}
            for part in ("train", "valid", "test"):
                entry[part] = _counts(y, getattr(f, part), classes)
            if set(f.valid.tolist()) & set(f.test.tolist()) or (
                    ids is not None and set(ids[f.valid]) & set(ids[f.test])):
                problems.append(f"seed {seed} fold {f.name}: validation rows are also test rows")
            if set(f.train.tolist()) & set(f.test.tolist()) or (
                    ids is not None and set(ids[f.train]) & set(ids[f.test])):
                problems.append(f"seed {seed} fold {f.name}: training rows are also test rows")
            for c in cols:
                v = meta[c].astype(str).to_numpy()
                seen = set(v[f.train]) | set(v[f.valid])
                leak = sorted(set(v[f.test]) & seen)
                entry[f"test_{c}s_disjoint"] = not leak
                if leak:
                    problems.append(f"seed {seed} fold {f.name}: {c} {', '.join(leak[:5])} in test and in training"
                                    + (f" (+{len(leak) - 5} more)" if len(leak) > 5 else ""))
            if classes is not None:
                absent = [k for k, n in entry["valid"].items() if n == 0 and entry["train"][k] > 0]
                if absent:
                    problems.append(f"seed {seed} fold {f.name}: validation slice has no {', '.join(absent)}")
            parts.append(entry)
    return parts, problems


def recheck_metrics(predictions: Path, folds: list[dict], classes, regression: bool) -> tuple[float, list[str]]:
    """(largest difference, problems): each fold's reported ua/accuracy (mae for regression)
    against scikit-learn on the rows of ``predictions.csv``."""
    import pandas as pd
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, mean_absolute_error

    df = pd.read_csv(predictions, dtype={"fold": str, "true": str if not regression else float,
                                         "predicted": str if not regression else float})
    import warnings

    worst, problems = 0.0, []
    targets = [c[len("true_"):] for c in df.columns if c.startswith("true_")] if "true" not in df.columns else []
    for f in folds:
        sel = df[(df["seed"] == f["seed"]) & (df["fold"] == str(f["fold"]))]
        if len(sel) != f.get("n", len(sel)):
            problems.append(f"seed {f['seed']} fold {f['fold']}: {len(sel)} predictions for {f.get('n')} reported rows")
        if regression and targets:   # multi-target: true_<t>/predicted_<t>; "mae" is their mean
            per = {t: mean_absolute_error(sel[f"true_{t}"], sel[f"predicted_{t}"]) for t in targets}
            pairs = [(f"mae_{t}", v) for t, v in per.items()] + [("mae", sum(per.values()) / len(per))]
        elif regression:
            pairs = [("mae", mean_absolute_error(sel["true"], sel["predicted"]))]
        else:
            with warnings.catch_warnings():   # a predicted class absent from the fold's test rows
                warnings.simplefilter("ignore", UserWarning)
                pairs = [("ua", balanced_accuracy_score(sel["true"], sel["predicted"])),
                         ("accuracy", accuracy_score(sel["true"], sel["predicted"]))]
        for k, v in pairs:
            if k in f:
                d = abs(float(v) - float(f[k]))
                worst = max(worst, d)
                if d > TOL:
                    problems.append(f"seed {f['seed']} fold {f['fold']}: reported {k} {f[k]:.6f}, "
                                    f"recomputed from predictions.csv {v:.6f}")
    return worst, problems


def run_audit(protocol: dict, data, fold_sets: dict, predictions: Path, folds: list[dict]) -> dict:
    """The audit of one run (see the module doc); ``problems`` empty means every check held."""
    classes = None if data.regression else list(data.classes)
    parts, problems = check_folds(protocol, data.meta, data.y, classes, fold_sets)
    worst, p2 = recheck_metrics(predictions, folds, classes, data.regression)
    return {
        "ok": not (problems or p2),
        "problems": problems + p2,
        "label_map_hash": label_map_hash(classes if classes is not None else ["<regression>"]),
        "disjoint_columns": promised_columns(protocol, data.meta),
        "metrics_recomputed_max_diff": worst,
        "folds": parts,
    }


def audit_line(audit: dict | None) -> str:
    """The ``audit`` column of ``mer runs``: ok, or how many problems (and the first)."""
    if not audit:
        return "-"
    if audit.get("ok"):
        return "ok"
    probs = audit.get("problems") or []
    return f"{len(probs)} problem(s): {probs[0]}" if probs else "failed"
