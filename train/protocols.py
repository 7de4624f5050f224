"""Evaluation protocols: folds built from the protocol specs in ``manifests/<dataset>.yaml``.

Every fold has three disjoint index sets into the training data: ``train``, ``valid`` (for
early stopping) and ``test``. The validation split always comes from training material
(a named dev split, the other half of session 5 in ``si``, or a stratified slice carved
from the training rows); the test fold is never looked at before the final evaluation.

Kinds (``kind:`` in the yaml):
- ``group_folds``: one fold per value of ``group`` (IEMOCAP LOSO: 5 sessions)
- ``speaker_independent``: train on every group but ``test_group``; split that group by
  ``split_by`` (gender): one half validation, the other test, then swapped (2 folds)
- ``random``: stratified split with ``fractions: [train, valid, test]``
- ``official``: the manifest's ``split`` column through ``splits: {train, valid, test}``
- ``per_class``: every row pooled (official splits ignored), then ``test_fraction`` of each
  class drawn at random as the test set, ceil(fraction x class rows) of each, utterance by
  utterance (seed 002's Table 1: MELD pooled, 80/20 per class, 10,676 / 2,674); the
  validation slice is carved from the rest as usual. Dialogues are cut, as the paper's
  utterance-level draw cuts them (with ``--context dialog`` each part is a dialogue)
- ``group_kfold``: ``k`` folds over the values of ``group`` (e.g. speakers)
- ``auto``: official when the split column names train and test rows, else group_kfold
  over speakers when there are several, else random 80/20

Dialogues are never cut by a test split this module draws: random test splits keep each
value of the manifest's ``dialog`` column on one side (stratified by label over whole
dialogues). Validation slices carved from training rows (``carve_valid``) are stratified
utterances, or whole dialogues where the model uses context (``valid_by="dialog"``), with a
minimum size and every class present where the rows allow; the test rows are never in them. Folds defined by other
columns follow those columns: ``si`` splits session 5 by gender, and ``group_kfold`` over
speakers keeps speakers apart, so a two-speaker dialogue can end up in two parts there
(with ``--context dialog`` each part is then a dialogue of its own).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mer.common.errors import MerError
from mer.common.report import Report

VALID_FRACTION = 0.1   # share of the training rows held out for early stopping when no dev split exists
# A carved validation slice holds at least this many rows and this many of every class (fewer
# only when the training rows cannot spare them: at most a third of them go). A 14-row slice
# from 2 dialogues made folds keep their epoch-1 model (issue 21): early stopping needs a
# slice whose UA moves by less than the model's real progress between epochs.
MIN_VALID_ROWS = 30
MIN_VALID_PER_CLASS = 3
VALID_BY = ("auto", "utterance", "dialog")   # --valid-by; auto: dialog for context models, else utterance


@dataclass
class Fold:
    name: str
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    valid_from: str = "protocol"   # "protocol" (a named split) | "utterance" | "dialog" (carved from train)

    def check(self) -> None:
        a, b, c = set(self.train.tolist()), set(self.valid.tolist()), set(self.test.tolist())
        if a & b or a & c or b & c:
            raise MerError(f"fold {self.name}: train/valid/test overlap (a protocol bug)")
        for part in ("train", "valid", "test"):
            if len(getattr(self, part)) == 0:
                raise MerError(f"fold {self.name}: the {part} split is empty")


def without_test(folds: list[Fold]) -> list[Fold]:
    """The folds a hyper-parameter search trains on: each fold's test rows are left out
    entirely and its validation rows are the split scored (early stopping and the score read
    the same rows, as the search's objective is a validation figure). A search that scored
    test folds would choose its configuration on the data it then reports."""
    return [Fold(f.name, f.train, f.valid, f.valid) for f in folds]


def _stratify_ok(y: np.ndarray | None) -> bool:
    if y is None:
        return False
    _, counts = np.unique(y, return_counts=True)
    return len(counts) > 1 and counts.min() >= 2


def dialog_groups(df) -> np.ndarray | None:
    """One group code per row from the manifest's ``dialog`` column (rows without one are
    groups of their own); None when no row names a dialogue."""
    from mer.train.dialog import dialog_order

    if "dialog" not in df.columns or df["dialog"].isna().all():
        return None
    return dialog_order(df)[0]


def _grouped_split(rows: np.ndarray, y: np.ndarray | None, groups: np.ndarray, fraction: float, seed: int,
                   report: Report | None, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Hold out about ``fraction`` of ``rows`` as whole groups (dialogues), stratified by
    ``y`` over groups when possible: StratifiedGroupKFold with k = 1/fraction folds, the
    fold closest in size to the target is held out."""
    from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

    g = groups[rows]
    n_groups = len(np.unique(g))
    if n_groups < 2:
        raise MerError(f"cannot split {what or 'a held-out set'}: all {len(rows)} rows belong to one dialogue")
    k = max(2, int(round(1.0 / max(fraction, 1e-9))))
    target = fraction * len(rows)
    ys = None if y is None else np.asarray(y)[rows]
    held = None
    if ys is not None and n_groups >= k and _stratify_ok(ys):
        try:
            import warnings

            with warnings.catch_warnings():   # "least populated class has fewer members than n_splits": expected here
                warnings.simplefilter("ignore", UserWarning)
                cands = [te for _, te in StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(rows, ys, g)]
            held = min(cands, key=lambda te: abs(len(te) - target))
        except ValueError:
            held = None
    if held is None:
        if report is not None and ys is not None:
            report.note(what or "split", "", "unstratified split", "too few dialogues to stratify by label")
        n_test = min(max(1, int(round(fraction * n_groups))), n_groups - 1)
        _, held = next(GroupShuffleSplit(n_splits=1, test_size=n_test, random_state=seed).split(rows, groups=g))
    mask = np.zeros(len(rows), bool)
    mask[held] = True
    return np.sort(rows[~mask]), np.sort(rows[mask])


def split_rows(rows: np.ndarray, y: np.ndarray | None, fraction: float, seed: int,
               report: Report | None = None, what: str = "", groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Split ``rows`` into (rest, held-out ``fraction``), stratified by ``y`` when possible.

    ``groups`` (one label per row of the data, e.g. dialogue ids): no group is cut; when
    every row is its own group this is the plain utterance-level split."""
    from sklearn.model_selection import train_test_split

    rows = np.asarray(rows)
    if len(rows) < 2:
        raise MerError(f"cannot split {len(rows)} rows for {what or 'a held-out set'}")
    if groups is not None and len(np.unique(groups[rows])) < len(rows):
        return _grouped_split(rows, y, groups, fraction, seed, report, what)
    ys = None if y is None else np.asarray(y)[rows]
    strat = ys if _stratify_ok(ys) else None
    n_hold = max(1, int(round(fraction * len(rows))))
    if strat is not None and n_hold < len(np.unique(strat)):
        strat = None
    if strat is None and ys is not None and report is not None:
        report.note(what or "split", "", "unstratified split", "a class has fewer than 2 rows, or the held-out set is smaller than the class count")
    try:
        a, b = train_test_split(rows, test_size=n_hold, random_state=seed, stratify=strat)
    except ValueError:  # sklearn refuses some stratifications of tiny sets; fall back, noted
        if report is not None:
            report.note(what or "split", "", "unstratified split", "stratified split impossible")
        a, b = train_test_split(rows, test_size=n_hold, random_state=seed)
    return np.sort(a), np.sort(b)


def per_class_split(rows: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held-out): ``ceil(fraction * n_c)`` rows of every class ``c`` held out, drawn
    at random (seeded). Ceil, not round: it reproduces seed 002's Table 1 to the row (e.g.
    MELD disgust 361 -> 73 test, sadness 1,002 -> 201), and every class with 2+ rows keeps
    one on each side."""
    import math

    rows = np.asarray(rows)
    yr = np.asarray(y)[rows]
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(yr):
        mine = rows[yr == c]
        k = min(math.ceil(fraction * len(mine) - 1e-9), len(mine) - 1) if len(mine) > 1 else 0
        held.append(rng.permutation(mine)[:k])
    held = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    return np.setdiff1d(rows, held), held


def _top_up(rest: np.ndarray, held: np.ndarray, y: np.ndarray, groups: np.ndarray | None, want: int,
            seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Move rows (whole groups when ``groups``) from ``rest`` to ``held`` until ``held`` has
    ``MIN_VALID_PER_CLASS`` rows of every class of ``rest`` and ``want`` rows, never taking
    more than a third of all rows, nor a class's last ``MIN_VALID_PER_CLASS`` rows in ``rest``."""
    rng = np.random.default_rng(seed)
    in_held = np.zeros(len(y), bool)
    in_rest = np.zeros(len(y), bool)
    in_held[held] = True
    in_rest[rest] = True
    cap = (len(rest) + len(held)) // 3

    def move(cands) -> None:
        pick = cands[rng.integers(len(cands))]
        take = in_rest & (groups == groups[pick]) if groups is not None else (np.arange(len(y)) == pick)
        in_rest[take] = False
        in_held[take] = True

    for c in np.unique(y[in_rest | in_held]):
        while (y[in_held] == c).sum() < MIN_VALID_PER_CLASS and in_held.sum() < cap:
            if (y[in_rest] == c).sum() <= MIN_VALID_PER_CLASS:
                break
            move(np.flatnonzero(in_rest & (y == c)))
    while in_held.sum() < min(want, cap) and in_rest.any():
        move(np.flatnonzero(in_rest))
    return np.flatnonzero(in_rest), np.flatnonzero(in_held)


def carve_valid(rows: np.ndarray, y: np.ndarray | None, fraction: float, seed: int, report: Report | None,
                what: str, groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, str]:
    """(train, valid, "utterance" | "dialog"): the early-stopping slice carved from ``rows``:
    stratified, at least ``MIN_VALID_ROWS`` rows and ``MIN_VALID_PER_CLASS`` of every class
    where the rows allow, whole dialogues when ``groups`` is given. A slice still too small
    or missing a class is noted in the report and warned about."""
    rows = np.asarray(rows)
    frac = fraction
    if len(rows):   # raise the share so the stratified draw itself reaches the minimum
        frac = min(max(fraction, MIN_VALID_ROWS / len(rows)), 1 / 3)
    tr, va = split_rows(rows, y, frac, seed, report, what, groups)
    if y is not None:
        tr, va = _top_up(tr, va, np.asarray(y), groups, MIN_VALID_ROWS, seed)
    by = "dialog" if groups is not None and len(np.unique(groups[rows])) < len(rows) else "utterance"
    problems = []
    if len(va) < MIN_VALID_ROWS:
        problems.append(f"{len(va)} rows (fewer than {MIN_VALID_ROWS})")
    if y is not None:
        ya = np.asarray(y)
        missing = sorted(set(ya[tr].tolist()) - set(ya[va].tolist()))
        if missing:
            problems.append(f"no row of class index {missing}")
    if problems:
        msg = f"{what}: validation slice too small to trust early stopping: {'; '.join(problems)}"
        if report is not None:
            report.note(what or "validation", "", "small validation slice", "; ".join(problems))
        from mer.common import console

        console.warn(msg)
    return tr, va, by


def _values(df, column: str, protocol: str) -> np.ndarray:
    if column not in df.columns:
        raise MerError(f"protocol {protocol!r} needs the manifest column {column!r}")
    col = df[column]
    if col.isna().any():
        bad = df.loc[col.isna(), "id"].iloc[0]
        raise MerError(f"protocol {protocol!r}: utterance {bad} has no {column!r} value ({int(col.isna().sum())} such)")
    return col.astype(str).to_numpy()


def _as_list(v) -> list[str]:
    if v is None:
        return []
    return [str(x) for x in (v if isinstance(v, (list, tuple)) else [v])]


def resolve_auto(spec_protocols: dict, df) -> dict:
    """``auto``: pick a protocol from what the manifest holds (official > speaker groups > random)."""
    split = df["split"].dropna().astype(str) if "split" in df.columns else None
    if split is not None and len(split) == len(df):
        for name, p in spec_protocols.items():
            if p.get("kind") == "official":
                tr, te = _as_list(p["splits"].get("train")), _as_list(p["splits"].get("test"))
                if split.isin(tr).any() and split.isin(te).any():
                    return {"name": name, **p, "resolved_from": "auto"}
    if "speaker" in df.columns and df["speaker"].notna().all() and df["speaker"].nunique() >= 2:
        for name, p in spec_protocols.items():
            if p.get("kind") == "group_kfold":
                return {"name": name, **p, "resolved_from": "auto"}
        return {"name": "speaker", "kind": "group_kfold", "group": "speaker", "k": 5, "resolved_from": "auto"}
    return {"name": "random", "kind": "random", "fractions": [0.8, 0.0, 0.2], "resolved_from": "auto"}


def make_folds(spec: dict, df, y: np.ndarray | None, seed: int = 0, report: Report | None = None,
               valid_fraction: float = VALID_FRACTION, valid_by: str = "utterance") -> list[Fold]:
    """Folds for the rows of ``df`` (the training data's manifest rows, in data order).

    ``y`` (class indices) is used to stratify random splits; pass None for regression.
    ``valid_by``: carved validation slices of single utterances, or of whole dialogues
    (``dialog``: what context models need, since they see a dialogue's other utterances).
    Whole-dialogue slices were 14-17 rows from 2 dialogues on short-dialogue corpora and
    class-skewed (IEMOCAP improvisations are emotion-themed), so they are not the default.
    """
    if valid_by not in VALID_BY[1:]:
        raise MerError(f"valid_by {valid_by!r}: choose utterance or dialog")
    kind = spec.get("kind")
    name = spec.get("name", kind)
    n = len(df)
    allrows = np.arange(n)
    folds: list[Fold] = []
    dialogs = dialog_groups(df)   # no test split drawn here cuts a dialogue
    vgroups = dialogs if valid_by == "dialog" else None
    carved: dict[int, str] = {}

    def carve(train_rows, label):
        tr, va, by = carve_valid(train_rows, y, valid_fraction, seed, report, f"{label} validation", vgroups)
        carved[id(va)] = by
        return tr, va

    if kind == "group_folds":
        g = _values(df, spec["group"], name)
        groups = sorted(set(g))
        if len(groups) < 2:
            raise MerError(f"protocol {name!r}: needs at least 2 values of {spec['group']!r}, found {groups}")
        for grp in groups:
            test = allrows[g == grp]
            tr, va = carve(allrows[g != grp], grp)
            folds.append(Fold(grp, tr, va, test))
    elif kind == "speaker_independent":
        g = _values(df, spec["group"], name)
        tg = str(spec["test_group"])
        if tg not in set(g):
            raise MerError(f"protocol {name!r}: no utterance has {spec['group']}={tg!r}")
        s = _values(df.loc[g == tg], spec["split_by"], name)
        halves = sorted(set(s))
        if len(halves) != 2:
            raise MerError(f"protocol {name!r}: {spec['split_by']!r} of group {tg} must take 2 values, found {halves}")
        train = allrows[g != tg]
        held = allrows[g == tg]
        for test_half in halves:
            val_half = [h for h in halves if h != test_half][0]
            folds.append(Fold(f"{tg}-{test_half}", train, held[s == val_half], held[s == test_half]))
    elif kind == "random":
        ftr, fva, fte = (list(spec.get("fractions", [0.8, 0.0, 0.2])) + [0, 0, 0])[:3]
        if not np.isclose(ftr + fva + fte, 1.0) or fte <= 0:
            raise MerError(f"protocol {name!r}: fractions {spec.get('fractions')} must sum to 1 with a test share")
        rest, test = split_rows(allrows, y, fte, seed, report, f"{name} test", dialogs)
        if fva > 0:
            tr, va, by = carve_valid(rest, y, fva / (ftr + fva), seed, report, f"{name} validation", vgroups)
            carved[id(va)] = by
        else:
            tr, va = carve(rest, name)
        folds.append(Fold(f"seed{seed}", tr, va, test))
    elif kind == "per_class":
        if y is None:
            raise MerError(f"protocol {name!r}: draws its test set per class, so it needs a classification scheme")
        fte = float(spec.get("test_fraction", 0.2))
        if not 0 < fte < 1:
            raise MerError(f"protocol {name!r}: test_fraction {fte} must lie between 0 and 1")
        rest, test = per_class_split(allrows, y, fte, seed)
        tr, va = carve(rest, name)
        folds.append(Fold(f"seed{seed}", tr, va, test))
    elif kind == "official":
        sp = _values(df, "split", name)
        splits = spec.get("splits") or {}
        tr_names, va_names, te_names = (_as_list(splits.get(k)) for k in ("train", "valid", "test"))
        tr = allrows[np.isin(sp, tr_names)]
        te = allrows[np.isin(sp, te_names)]
        if va_names:
            va = allrows[np.isin(sp, va_names)]
            if len(va) == 0:
                tr, va = carve(tr, "official")
                if report is not None:
                    report.note("official", "", "no rows in the named validation split", f"{va_names}: carved {valid_fraction:.0%} of train")
        else:
            tr, va = carve(tr, "official")
        other = set(sp) - set(tr_names) - set(va_names) - set(te_names)
        if other and report is not None:
            report.note("official", "", "rows in no named split left out", ", ".join(sorted(other)))
        if len(tr) == 0 or len(te) == 0:
            raise MerError(f"protocol {name!r}: the manifest's split column has no rows named {tr_names or te_names}")
        folds.append(Fold("official", tr, va, te))
    elif kind == "group_kfold":
        from sklearn.model_selection import GroupKFold

        g = _values(df, spec["group"], name)
        k = int(spec.get("k", 5))
        ng = len(set(g))
        if ng < 2:
            raise MerError(f"protocol {name!r}: needs at least 2 values of {spec['group']!r}")
        if ng < k:
            if report is not None:
                report.note(name, "", "fewer groups than folds", f"{ng} groups: {ng} folds instead of {k}")
            k = ng
        gkf = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
        for i, (tr_all, te) in enumerate(gkf.split(allrows, groups=g)):
            tr, va = carve(tr_all, f"fold{i + 1}")
            folds.append(Fold(f"fold{i + 1}", tr, va, np.sort(te)))
    elif kind == "auto":
        raise MerError("protocol 'auto' must be resolved first (resolve_auto)")
    else:
        raise MerError(f"protocol {name!r}: unknown kind {kind!r}")
    for f in folds:
        f.valid_from = carved.get(id(f.valid), "protocol")
        f.check()
    return folds


def protocol_spec(dataset: str, name: str | None, df) -> dict:
    """The named protocol of ``dataset`` (``auto`` resolved against the manifest rows)."""
    from mer.common.schemes import dataset_spec, protocol

    spec = protocol(dataset, name)
    if spec["kind"] == "auto":
        spec = resolve_auto(dataset_spec(dataset).get("protocols") or {}, df)
    return spec
