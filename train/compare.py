"""Does run B really beat run A? Paired tests on the per-utterance test predictions of runs
made with the same protocol and folds (`mer compare`, `mer runs --baseline`).

Every test pairs the two runs utterance by utterance (both predicted the same utterance in the
same test fold), which is far more sensitive than comparing two means with their stds:

- **paired bootstrap** (Efron & Tibshirani 1993; Koehn 2004 for MT): resample utterances with
  replacement, the same draw for both runs, and recompute the difference B - A of UA, WA and
  weighted F1; the 2.5 and 97.5 percentiles give a 95% interval;
- **McNemar's test** on correctness (Dietterich 1998): of the utterances exactly one run gets
  right, are B's wins more than chance? Exact two-sided binomial test on the discordant counts
  (the chi-square form is wrong for small counts, and exact costs nothing here);
- **paired permutation test** for UA: swap the two runs' predictions of each utterance at
  random; p = (1 + #{|dUA*| >= |dUA|}) / (1 + R) (Phipson & Smyth 2010: never 0).

Several seeds: each utterance then has one prediction per seed and run. The bootstrap and
the permutation move an utterance with all its seeds (a clustered resample, so seeds never
count as independent evidence); the statistic is the mean over seeds of the per-seed metric.
McNemar needs one prediction per utterance, so it is run per seed and the largest (most
conservative) p is reported. Across seeds, a paired t-test on the per-seed UA differences
(scipy's ``ttest_rel``) tests whether the gain holds from seed to seed; with fewer than
``MIN_SEEDS`` seeds there are too few for it, and the table says so.

More than two runs: each is compared with the first (the baseline); p-values of each test
are Holm-corrected over those comparisons (Holm 1979), which controls the family-wise error
without assuming independence.

Runs are refused, naming the difference, when they do not share the dataset, scheme,
classes, the set of test utterances of each seed, or the fold each utterance was tested in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mer.common.errors import MerError

METRICS = ("ua", "accuracy", "weighted_f1")
LABELS = {"ua": "UA", "accuracy": "WA", "weighted_f1": "weighted F1"}
MIN_SEEDS = 3          # fewer seeds than this: no test across seeds (a t-test on 1 df says nothing)
N_BOOT = 2000
N_PERM = 10000


# ----------------------------------------------------------------------------- reading runs
@dataclass
class RunPreds:
    """One run's test predictions as aligned arrays: ``pred[s, i]`` is seed ``seeds[s]``'s
    class index for utterance ``ids[i]``; ``fold[s, i]`` the fold it was tested in."""

    path: Path
    name: str
    dataset: str
    scheme: str
    protocol: str
    classes: list[str]
    seeds: list[int]
    ids: np.ndarray
    y: np.ndarray
    pred: np.ndarray
    fold: np.ndarray
    label: str = ""


def read_run(run) -> RunPreds:
    import pandas as pd

    from mer.train.rundir import read_metrics

    run = Path(run)
    m = read_metrics(run)
    p = run / "predictions.csv"
    if not p.exists():
        raise MerError(f"{run}: no predictions.csv")
    df = pd.read_csv(p, dtype={"id": str, "fold": str, "true": str, "predicted": str})
    classes = [str(c) for c in m.get("classes") or []]
    if m.get("scheme") == "regression" or not classes or "p_" + classes[0] not in df.columns:
        raise MerError(f"{run}: a regression run; `mer compare` tests classification runs")
    seeds = sorted(int(s) for s in df["seed"].unique())
    cidx = {c: i for i, c in enumerate(classes)}
    first = df[df["seed"] == seeds[0]].sort_values("id", kind="stable")
    ids = first["id"].to_numpy(str)
    if len(set(ids)) != len(ids):
        raise MerError(f"{p}: an utterance is predicted twice for seed {seeds[0]}")
    y = first["true"].map(cidx).to_numpy()
    pred = np.zeros((len(seeds), len(ids)), np.int64)
    fold = np.empty((len(seeds), len(ids)), object)
    for k, s in enumerate(seeds):
        d = df[df["seed"] == s].sort_values("id", kind="stable")
        got = d["id"].to_numpy(str)
        if not np.array_equal(got, ids):
            extra = sorted(set(got) ^ set(ids))[:3]
            raise MerError(f"{p}: seed {s} predicts other utterances than seed {seeds[0]} (e.g. {', '.join(extra)})")
        pred[k] = d["predicted"].map(cidx).to_numpy()
        fold[k] = d["fold"].to_numpy(str)
    feats = m.get("features", "")
    return RunPreds(run, run.name, str(m.get("dataset")), str(m.get("scheme")), str(m.get("protocol")), classes, seeds,
                    ids, y.astype(np.int64), pred, fold, f"{m.get('fusion')} [{feats}]")


def check_comparable(a: RunPreds, b: RunPreds) -> list[str]:
    """What differs between two runs so that they cannot be paired (empty: comparable)."""
    why = []
    for what in ("dataset", "scheme"):
        if getattr(a, what) != getattr(b, what):
            why.append(f"{what} differs: {getattr(a, what)} vs {getattr(b, what)}")
    if a.classes != b.classes:
        why.append(f"classes differ: {a.classes} vs {b.classes}")
    if why:
        return why
    if not set(a.seeds) & set(b.seeds):
        return [f"no seed in common: {a.seeds} vs {b.seeds}"]
    if not np.array_equal(a.ids, b.ids):
        only_a, only_b = sorted(set(a.ids) - set(b.ids)), sorted(set(b.ids) - set(a.ids))
        msg = "test utterances differ:"
        if only_a:
            msg += f" {len(only_a)} only in {a.name} (e.g. {', '.join(only_a[:3])})"
        if only_b:
            msg += f"{';' if only_a else ''} {len(only_b)} only in {b.name} (e.g. {', '.join(only_b[:3])})"
        return [msg]
    if not np.array_equal(a.y, b.y):
        i = int(np.flatnonzero(a.y != b.y)[0])
        return [f"true labels differ: utterance {a.ids[i]} is {a.classes[a.y[i]]} in {a.name}, {b.classes[b.y[i]]} in {b.name}"]
    for s in sorted(set(a.seeds) & set(b.seeds)):
        fa, fb = a.fold[a.seeds.index(s)], b.fold[b.seeds.index(s)]
        bad = np.flatnonzero(fa != fb)
        if len(bad):
            i = int(bad[0])
            return [f"folds differ (seed {s}): {len(bad)} utterances are tested in another fold, e.g. {a.ids[i]} "
                    f"in fold {fa[i]} of {a.name} but fold {fb[i]} of {b.name}"
                    + (f" (protocols {a.protocol} vs {b.protocol})" if a.protocol != b.protocol else "")]
    return []


def require_comparable(runs: list[RunPreds]) -> None:
    base = runs[0]
    for r in runs[1:]:
        why = check_comparable(base, r)
        if why:
            raise MerError(f"cannot compare {base.path} with {r.path}: " + "; ".join(why))


def _common(a: RunPreds, b: RunPreds) -> tuple[np.ndarray, np.ndarray, list[int]]:
    seeds = sorted(set(a.seeds) & set(b.seeds))
    return a.pred[[a.seeds.index(s) for s in seeds]], b.pred[[b.seeds.index(s) for s in seeds]], seeds


# ----------------------------------------------------------------------------- metrics
def weighted_metrics(y: np.ndarray, pred: np.ndarray, w: np.ndarray, n_classes: int) -> dict[str, float]:
    """UA, WA and weighted F1 of predictions ``pred`` with utterance weights ``w`` (bootstrap
    counts; all ones = the plain metrics, equal to mer.train.metrics.classification_metrics)."""
    conf = np.bincount(y * n_classes + pred, weights=w, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    support = conf.sum(1)
    predicted = conf.sum(0)
    tp = np.diag(conf)
    present = support > 0
    recall = np.divide(tp, support, out=np.zeros(n_classes), where=present)
    precision = np.divide(tp, predicted, out=np.zeros(n_classes), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n_classes), where=(precision + recall) > 0)
    total = support.sum()
    return {
        "ua": float(recall[present].mean()) if present.any() else float("nan"),
        "accuracy": float(tp.sum() / total) if total else float("nan"),
        "weighted_f1": float((f1 * support).sum() / total) if total else float("nan"),
    }


def _mean_over_seeds(y, preds: np.ndarray, w, n_classes) -> dict[str, float]:
    per = [weighted_metrics(y, p, w, n_classes) for p in preds]
    return {k: float(np.mean([d[k] for d in per])) for k in METRICS}


# ----------------------------------------------------------------------------- tests
def paired_bootstrap(y, pa: np.ndarray, pb: np.ndarray, n_classes: int, n_boot: int = N_BOOT, seed: int = 0,
                     level: float = 0.95) -> dict[str, dict]:
    """Difference B - A of each metric with a percentile interval from resampled utterances.
    ``pa``/``pb``: [S, N] predictions per seed (an utterance is resampled with all its seeds)."""
    rng = np.random.default_rng(seed)
    n = len(y)
    ones = np.ones(n)
    obs_a, obs_b = _mean_over_seeds(y, pa, ones, n_classes), _mean_over_seeds(y, pb, ones, n_classes)
    diffs = {k: np.empty(n_boot) for k in METRICS}
    for t in range(n_boot):
        w = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        ma, mb = _mean_over_seeds(y, pa, w, n_classes), _mean_over_seeds(y, pb, w, n_classes)
        for k in METRICS:
            diffs[k][t] = mb[k] - ma[k]
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {k: {"a": obs_a[k], "b": obs_b[k], "diff": obs_b[k] - obs_a[k],
                "low": float(np.nanpercentile(diffs[k], lo)), "high": float(np.nanpercentile(diffs[k], hi))}
            for k in METRICS}


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Exact McNemar test: two-sided binomial test of the discordant pairs (b: only A right,
    c: only B right) against p = 1/2. Equal to statsmodels' ``mcnemar(table, exact=True)``."""
    from scipy.stats import binomtest

    b = int(np.sum(correct_a & ~correct_b))
    c = int(np.sum(~correct_a & correct_b))
    p = 1.0 if b + c == 0 else float(binomtest(c, b + c, 0.5).pvalue)
    return {"only_a": b, "only_b": c, "p": min(1.0, p)}


def permutation_ua(y, pa: np.ndarray, pb: np.ndarray, n_classes: int, n_perm: int = N_PERM, seed: int = 0) -> dict:
    """Paired permutation test of the UA difference (two-sided); [S, N] predictions, an
    utterance's predictions swapped between the runs for all seeds at once."""
    rng = np.random.default_rng(seed)
    ones = np.ones(len(y))

    def ua(p):
        return np.mean([weighted_metrics(y, q, ones, n_classes)["ua"] for q in p])

    obs = ua(pb) - ua(pa)
    differ = np.flatnonzero((pa != pb).any(0))  # swapping identical predictions changes nothing
    hits = 0
    if len(differ):
        for _ in range(n_perm):
            swap = np.zeros(len(y), bool)
            swap[differ] = rng.random(len(differ)) < 0.5
            qa, qb = np.where(swap, pb, pa), np.where(swap, pa, pb)
            hits += abs(ua(qb) - ua(qa)) >= abs(obs) - 1e-12
    else:
        hits = n_perm
    return {"diff": float(obs), "p": float((1 + hits) / (1 + n_perm)), "n_perm": n_perm}


def seeds_test(y, pa, pb, n_classes, seeds) -> dict:
    """Paired t-test over seeds of the per-seed UA difference; None p when too few seeds."""
    ones = np.ones(len(y))
    d = [weighted_metrics(y, b, ones, n_classes)["ua"] - weighted_metrics(y, a, ones, n_classes)["ua"]
         for a, b in zip(pa, pb)]
    out = {"n_seeds": len(seeds), "ua_diffs": [float(x) for x in d], "p": None}
    if len(seeds) < MIN_SEEDS:
        out["note"] = f"{len(seeds)} seed(s) in common: too few for a test across seeds (needs {MIN_SEEDS}; 5 or more is better)"
        return out
    if np.allclose(d, d[0]):
        out["p"] = 1.0 if abs(d[0]) < 1e-12 else 0.0
        out["note"] = "the UA difference is the same for every seed"
        return out
    from scipy.stats import ttest_rel

    ua_b = [weighted_metrics(y, b, ones, n_classes)["ua"] for b in pb]
    ua_a = [weighted_metrics(y, a, ones, n_classes)["ua"] for a in pa]
    out["p"] = float(ttest_rel(ua_b, ua_a).pvalue)
    return out


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same as statsmodels' multipletests(method="holm"))."""
    p = np.asarray(pvalues, float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj.tolist()


# ----------------------------------------------------------------------------- the command
@dataclass
class Comparison:
    baseline: RunPreds
    runs: list[RunPreds]
    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def compare_runs(paths, n_boot: int = N_BOOT, n_perm: int = N_PERM, seed: int = 0) -> Comparison:
    """Compare every run with the first; returns the rows of the table (one per run)."""
    runs = [read_run(p) for p in paths]
    if len(runs) < 2:
        raise MerError("give at least two runs to compare")
    require_comparable(runs)
    base = runs[0]
    cmp = Comparison(base, runs[1:])
    # `mer runs` averages per-fold figures; the same run's two UAs differ, so say which this is
    cmp.notes.append("UA/WA here are pooled over every test utterance of all folds (per seed), not the mean "
                     "of per-fold figures that `mer runs` shows")
    nc = len(base.classes)
    for r in runs[1:]:
        pa, pb, seeds = _common(base, r)
        if seeds != sorted(set(base.seeds) | set(r.seeds)):
            cmp.notes.append(f"{r.name}: only seeds {seeds} are in both runs ({base.seeds} vs {r.seeds}); those are compared")
        boot = paired_bootstrap(base.y, pa, pb, nc, n_boot, seed)
        mc = [mcnemar(a == base.y, b == base.y) for a, b in zip(pa, pb)]
        worst = max(mc, key=lambda d: d["p"])
        perm = permutation_ua(base.y, pa, pb, nc, n_perm, seed)
        st = seeds_test(base.y, pa, pb, nc, seeds)
        if st.get("note"):
            cmp.notes.append(f"{r.name}: {st['note']}")
        cmp.rows.append({"run": r.name, "label": r.label, "path": str(r.path), "seeds": seeds, "n": int(len(base.y)),
                         "bootstrap": boot, "mcnemar": {**worst, "per_seed": mc},
                         "permutation_ua": perm, "seeds_test": st})
    if len(cmp.rows) > 1:  # Holm over the comparisons, per test
        for key in ("mcnemar", "permutation_ua", "seeds_test"):
            ps = [row[key]["p"] for row in cmp.rows]
            if all(p is not None for p in ps):
                for row, adj in zip(cmp.rows, holm(ps)):
                    row[key]["p_holm"] = adj
        cmp.notes.append(f"p-values Holm-corrected over the {len(cmp.rows)} comparisons with the baseline")
    return cmp


def _fmt_p(p) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "-"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def table(cmp: Comparison):
    """The comparison as a DataFrame of strings: differences B - baseline with 95% intervals."""
    import pandas as pd

    out = []
    for row in cmp.rows:
        d = {"run": row["run"], "vs": cmp.baseline.name, "seeds": len(row["seeds"]), "n": row["n"]}
        for k in METRICS:
            b = row["bootstrap"][k]
            d[f"d{LABELS[k].replace(' ', '_')}"] = f"{b['diff']:+.4f} [{b['low']:+.4f}, {b['high']:+.4f}]"
        holm_ = len(cmp.rows) > 1
        for key, name in (("mcnemar", "p McNemar"), ("permutation_ua", "p perm UA"), ("seeds_test", "p seeds")):
            t = row[key]
            d[name + (" (Holm)" if holm_ else "")] = _fmt_p(t.get("p_holm", t["p"]) if holm_ else t["p"])
        out.append(d)
    return pd.DataFrame(out)


def to_json(cmp: Comparison) -> dict:
    from mer.train.rundir import _plain

    return _plain({"baseline": str(cmp.baseline.path), "classes": cmp.baseline.classes, "comparisons": cmp.rows,
                   "notes": cmp.notes, "n_boot": N_BOOT})


def comparison_png(cmp: Comparison, path: Path) -> Path:
    """One panel per metric: B - baseline with its 95% bootstrap interval, a line at zero."""
    from mer.train.plots import _plt

    plt = _plt()
    n = len(cmp.rows)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 1.3 + 0.55 * n), dpi=110, sharey=True,
                             squeeze=False)
    ys = np.arange(n)[::-1]
    for ax, k in zip(axes[0], METRICS):
        for yv, row in zip(ys, cmp.rows):
            b = row["bootstrap"][k]
            sig = b["low"] > 0 or b["high"] < 0
            ax.errorbar(b["diff"], yv, xerr=[[b["diff"] - b["low"]], [b["high"] - b["diff"]]], fmt="o",
                        color="tab:blue" if sig else "tab:gray", capsize=4)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(f"{LABELS[k]}: run - baseline", fontsize=9)
        ax.set_xlabel("difference (95% paired bootstrap CI)", fontsize=8)
    axes[0, 0].set_yticks(ys, [f"{r['run'][:38]}" for r in cmp.rows], fontsize=8)
    fig.suptitle(f"baseline: {cmp.baseline.name[:60]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def baseline_columns(baseline, run_paths, n_perm: int = 2000, seed: int = 0) -> tuple[dict[str, tuple], list[str]]:
    """For `mer runs --baseline`: {run path: (UA difference, permutation p)} for runs that can
    be paired with the baseline, plus a note for each that cannot (and why)."""
    base = read_run(baseline)
    out, notes = {}, []
    for p in run_paths:
        if Path(p).resolve() == base.path.resolve():
            out[str(p)] = (0.0, 1.0)
            continue
        try:
            r = read_run(p)
        except MerError as e:
            notes.append(f"{Path(p).name}: {e}")
            continue
        why = check_comparable(base, r)
        if why:
            notes.append(f"{r.name}: not paired with the baseline ({'; '.join(why)})")
            continue
        pa, pb, _ = _common(base, r)
        perm = permutation_ua(base.y, pa, pb, len(base.classes), n_perm, seed)
        out[str(p)] = (perm["diff"], perm["p"])
    return out, notes
