"""`mer compare` / `mer runs --baseline`: paired tests on constructed predictions with known
answers, checked against scipy and statsmodels where they have the same test."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mer.common.cli import main
from mer.common.errors import MerError
from mer.train import compare as C

CLASSES = ["ang", "hap", "sad", "neu"]


def fake_run(path, y, preds, folds=None, seeds=None, dataset="iemocap", ids=None):
    """A run directory with metrics.json and predictions.csv only (what `mer compare` reads).
    ``preds``: [S, N] class indices, one row per seed."""
    preds = np.atleast_2d(preds)
    n = len(y)
    seeds = seeds or list(range(len(preds)))
    ids = ids if ids is not None else [f"u{i:03d}" for i in range(n)]
    folds = folds if folds is not None else [f"Ses0{1 + i % 5}" for i in range(n)]
    path.mkdir(parents=True)
    rows = []
    for s, p in zip(seeds, preds):
        for i in range(n):
            r = {"id": ids[i], "seed": s, "fold": folds[i], "true": CLASSES[y[i]], "predicted": CLASSES[p[i]]}
            r.update({f"p_{c}": float(j == p[i]) for j, c in enumerate(CLASSES)})
            rows.append(r)
    pd.DataFrame(rows).to_csv(path / "predictions.csv", index=False)
    (path / "metrics.json").write_text(json.dumps({"dataset": dataset, "scheme": "emo4", "protocol": "loso",
                                                   "classes": CLASSES, "fusion": "concat", "features": "x",
                                                   "seeds": seeds, "mean": {}, "folds": []}))
    return path


def flipped(n=100, flips=30, seed=0):
    """y, A, B: both right on 50, both wrong (same wrong class) on 20, A right and B wrong on
    ``flips`` of the rest, the others both right."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    a = y.copy()
    b = y.copy()
    wrong = (y + 1) % 4
    a[50:70] = b[50:70] = wrong[50:70]
    b[70:70 + flips] = wrong[70:70 + flips]
    return y, a, b


def test_identical_runs_give_p_one_and_a_zero_interval(tmp_path):
    y, a, _ = flipped()
    cmp = C.compare_runs([fake_run(tmp_path / "a", y, a), fake_run(tmp_path / "b", y, a)], n_boot=300, n_perm=500)
    row = cmp.rows[0]
    assert row["mcnemar"]["p"] == 1.0 and row["permutation_ua"]["p"] == 1.0
    for k in C.METRICS:
        assert row["bootstrap"][k]["diff"] == 0 and row["bootstrap"][k]["low"] == 0 and row["bootstrap"][k]["high"] == 0


def test_thirty_flips_in_a_hundred_are_significant_and_match_statsmodels(tmp_path):
    from scipy.stats import binomtest
    from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

    y, a, b = flipped(flips=30)
    cmp = C.compare_runs([fake_run(tmp_path / "a", y, a), fake_run(tmp_path / "b", y, b)], n_boot=1000, n_perm=5000)
    row = cmp.rows[0]
    ca, cb = a == y, b == y
    table = [[int(np.sum(ca & cb)), int(np.sum(ca & ~cb))], [int(np.sum(~ca & cb)), int(np.sum(~ca & ~cb))]]
    ref = sm_mcnemar(table, exact=True).pvalue
    assert row["mcnemar"]["only_a"] == 30 and row["mcnemar"]["only_b"] == 0
    assert row["mcnemar"]["p"] == pytest.approx(ref, rel=1e-9) and ref == pytest.approx(binomtest(0, 30).pvalue)
    assert row["mcnemar"]["p"] < 1e-8
    assert row["permutation_ua"]["p"] < 0.01 and row["permutation_ua"]["p"] == pytest.approx(1 / 5001)
    wa = row["bootstrap"]["accuracy"]
    assert wa["diff"] == pytest.approx(-0.30) and wa["high"] < -0.15 and wa["low"] > -0.45


def test_permutation_and_bootstrap_agree_with_scipy_on_a_moderate_effect(tmp_path):
    from scipy.stats import bootstrap, permutation_test

    rng = np.random.default_rng(3)
    n = 120
    y = rng.integers(0, 4, n)
    a = np.where(rng.random(n) < 0.7, y, (y + 1) % 4)
    b = a.copy()
    flip = rng.choice(n, 14, replace=False)  # B fixes some of A's errors and breaks a few right ones
    b[flip] = np.where(a[flip] == y[flip], (y[flip] + 2) % 4, y[flip])
    ones = np.ones(n)

    def ua(p):
        return C.weighted_metrics(y, p, ones, 4)["ua"]

    ref = permutation_test((a, b), lambda x, z: ua(z) - ua(x), permutation_type="samples", n_resamples=20000,
                           alternative="two-sided", random_state=0).pvalue
    mine = C.permutation_ua(y, a[None], b[None], 4, n_perm=20000)["p"]
    # Monte Carlo error of each estimate is at most sqrt(.25/20000) = 0.0035; 0.02 is > 4 sigma of the sum.
    assert 0.01 < ref < 0.9 and abs(mine - ref) < 0.02

    ca, cb = (a == y).astype(float), (b == y).astype(float)
    ci = bootstrap((ca, cb), lambda u, v: v.mean() - u.mean(), paired=True, vectorized=False, n_resamples=4000,
                   method="percentile", random_state=0).confidence_interval
    boot = C.paired_bootstrap(y, a[None], b[None], 4, n_boot=4000)["accuracy"]
    # Percentile endpoints of 4000 resamples: a sampling sd of about 0.005 each at n = 120.
    assert abs(boot["low"] - ci.low) < 0.02 and abs(boot["high"] - ci.high) < 0.02


def test_metrics_match_the_training_metrics():
    from mer.train.metrics import classification_metrics

    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    ref = classification_metrics(y, p, CLASSES)
    got = C.weighted_metrics(y, p, np.ones(200), 4)
    for k in C.METRICS:
        assert got[k] == pytest.approx(ref[k], abs=1e-12)


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.03, 0.2, 0.0001]
    assert C.holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]))


def test_several_runs_are_holm_corrected_and_too_few_seeds_are_said(tmp_path):
    y, a, b = flipped(flips=10)
    _, _, c = flipped(flips=20)
    runs = [fake_run(tmp_path / n, y, np.stack([p, p]), seeds=[0, 1]) for n, p in (("a", a), ("b", b), ("c", c))]
    cmp = C.compare_runs(runs, n_boot=200, n_perm=500)
    assert len(cmp.rows) == 2
    raw = [r["mcnemar"]["p"] for r in cmp.rows]
    assert [r["mcnemar"]["p_holm"] for r in cmp.rows] == pytest.approx(C.holm(raw))
    assert any("too few for a test across seeds" in n for n in cmp.notes)
    assert any("Holm" in n for n in cmp.notes)
    t = C.table(cmp)
    assert "p McNemar (Holm)" in t.columns and t["p seeds (Holm)"].tolist() == ["-", "-"]


def test_seed_test_with_enough_seeds_matches_scipy(tmp_path):
    from scipy.stats import ttest_rel

    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 80)
    pa = np.stack([np.where(rng.random(80) < 0.6, y, (y + 1) % 4) for _ in range(4)])
    pb = np.stack([np.where(rng.random(80) < 0.7, y, (y + 1) % 4) for _ in range(4)])
    st = C.seeds_test(y, pa, pb, 4, [0, 1, 2, 3])
    ua = lambda p: [C.weighted_metrics(y, q, np.ones(80), 4)["ua"] for q in p]  # noqa: E731
    assert st["p"] == pytest.approx(ttest_rel(ua(pb), ua(pa)).pvalue)


def test_refuses_runs_whose_folds_or_utterances_differ(tmp_path):
    y, a, b = flipped()
    base = fake_run(tmp_path / "a", y, a)
    folds = [f"Ses0{1 + i % 5}" for i in range(100)]
    folds[7] = "Ses05"
    other = fake_run(tmp_path / "b", y, b, folds=folds)
    with pytest.raises(MerError, match=r"folds differ.*u007 in fold Ses03 of a but fold Ses05 of b"):
        C.compare_runs([base, other])
    ids = [f"u{i:03d}" for i in range(100)]
    ids[3] = "zz"
    with pytest.raises(MerError, match=r"test utterances differ: 1 only in a \(e\.g\. u003\); 1 only in c \(e\.g\. zz\)"):
        C.compare_runs([base, fake_run(tmp_path / "c", y, b, ids=ids)])
    with pytest.raises(MerError, match="dataset differs: iemocap vs meld"):
        C.compare_runs([base, fake_run(tmp_path / "d", y, b, dataset="meld")])


def test_compare_and_runs_baseline_on_two_real_runs(tmp_path, capsys):
    from mer.train.synthetic_features import synthetic, write_stores

    cache = tmp_path / "cache"
    man, sets = synthetic(200, seed=2, text_dim=8, audio_dim=6, noise=0.8, ragged=False)
    write_stores(man, sets, cache)
    out = tmp_path / "runs"
    for f, rid in (("mfcc", "audio"), ("bert,mfcc", "fused")):
        main(["train", "-d", "iemocap", "-f", f, "--fusion", "concat", "--cache", str(cache), "--out", str(out),
              "--run-id", rid, "--epochs", "8", "-q", "--no-plots"])
    capsys.readouterr()
    png = tmp_path / "cmp.png"
    main(["compare", str(out / "audio"), str(out / "fused"), "--plot", str(png), "--json", str(tmp_path / "c.json"),
          "--bootstrap", "300", "--permutations", "1000"])
    shown = capsys.readouterr().out
    assert "dUA" in shown and "p McNemar" in shown and "fused" in shown and "too few" in shown
    res = json.loads((tmp_path / "c.json").read_text())["comparisons"][0]
    # Audio alone carries one of the two label bits: fusion is far better, and the tests say so.
    assert res["bootstrap"]["ua"]["low"] > 0.1 and res["mcnemar"]["p"] < 1e-6
    assert png.stat().st_size > 5000

    main(["runs", str(out), "--baseline", str(out / "audio"), "--csv", str(tmp_path / "r.csv")])
    shown = capsys.readouterr().out
    assert "d_ua" in shown and "p_ua" in shown
    t = pd.read_csv(tmp_path / "r.csv").set_index("run")
    assert t.loc["audio", "d_ua"] == 0 and t.loc["audio", "p_ua"] == 1
    assert t.loc["fused", "d_ua"] == pytest.approx(res["bootstrap"]["ua"]["diff"])
    assert t.loc["fused", "p_ua"] == pytest.approx(1 / 2001)  # the smallest p of 2,000 permutations
