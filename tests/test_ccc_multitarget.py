"""CCC (concordance correlation coefficient) as a metric and the regression early-stopping
monitor, and multi-target regression (arousal, valence, dominance at once) on an
MSP-Podcast-layout fixture with CCC reported per target."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mer.train.metrics import ccc, regression_keys, regression_metrics


def test_ccc_against_hand_values():
    t = np.array([1.0, 2.0, 3.0, 4.0])
    assert ccc(t, t) == pytest.approx(1.0)
    # Pearson r is 1 for a shifted or scaled prediction; CCC is not:
    # shift by 1: 2*cov / (vt + vp + 1) = 2*1.25 / (1.25 + 1.25 + 1)
    assert ccc(t, t + 1) == pytest.approx(2.5 / 3.5)
    # scale by 2 around the mean: cov = 2.5, vp = 5: 5 / (1.25 + 5 + 0)
    assert ccc(t, 2 * (t - t.mean()) + t.mean()) == pytest.approx(5.0 / 6.25)
    assert ccc(t, -t + 5) == pytest.approx(-1.0)
    assert np.isnan(ccc([2.0], [2.0])) and np.isnan(ccc([3.0, 3.0], [3.0, 3.0]))
    # A constant prediction of a varying target is defined, and 0.
    assert ccc(t, np.full(4, 2.5)) == pytest.approx(0.0)


def test_ccc_matches_the_textbook_formula_on_random_data():
    rng = np.random.default_rng(3)
    t = rng.normal(size=200)
    p = 0.6 * t + rng.normal(scale=0.5, size=200) + 0.3
    r = np.corrcoef(t, p)[0, 1]
    expect = 2 * r * t.std() * p.std() / (t.var() + p.var() + (t.mean() - p.mean()) ** 2)
    assert ccc(t, p) == pytest.approx(expect, rel=1e-9)
    assert regression_metrics(t, p)["ccc"] == pytest.approx(expect, rel=1e-9)


def test_multi_target_metrics_per_target_and_mean():
    t = np.array([[1.0, 5.0], [2.0, 4.0], [3.0, 2.0], [4.0, 1.0]])
    p = t.copy()
    p[:, 1] += 1.0
    m = regression_metrics(t, p, ["arousal", "valence"])
    assert m["ccc_arousal"] == pytest.approx(1.0)
    v = t[:, 1]
    assert m["ccc_valence"] == pytest.approx(ccc(v, v + 1))
    assert m["ccc"] == pytest.approx((1.0 + ccc(v, v + 1)) / 2)
    assert m["mae_valence"] == pytest.approx(1.0) and m["mae"] == pytest.approx(0.5)
    assert set(regression_keys(["arousal", "valence"])) >= {"ccc", "ccc_arousal", "mae_valence", "corr_arousal"}


def test_score_ranks_an_undefined_ccc_lowest():
    from mer.train.folds import _score

    # NaN compares false with everything: a NaN first epoch would stay "best" for ever.
    assert _score({"ccc": 0.1}, 1.0, "ccc") > _score({"ccc": float("nan")}, 0.5, "ccc")


def test_multi_target_scheme_labels():
    from mer.common.schemes import scheme

    sch = scheme("msp-podcast", "avd")
    assert sch.is_regression and sch.targets == ["arousal", "valence", "dominance"]
    df = pd.DataFrame({"activation": [5.0, np.nan, 8.0], "valence": [2.0, 3.0, 4.0], "dominance": [1.0, 2.0, 0.5]})
    lab, names = sch.apply(df)
    assert names == ["arousal", "valence", "dominance"] and list(lab.columns) == names
    assert lab.iloc[0].tolist() == [5.0, 2.0, 1.0]
    assert lab.iloc[1].isna().all()               # one target missing: the row is unlabelled
    assert lab.iloc[2].tolist() == [7.0, 4.0, 1.0]  # clipped to the 1..7 scale
    assert sch.unlabelled(df, lab) == {"(a target missing)": 1}
    assert scheme("msp-podcast", "arousal").targets == []


def test_msp_podcast_dimensional_fixture_trains_with_ccc_per_target(tmp_path):
    """prepare -> extract mfcc -> train --scheme avd on the MSP-Podcast-layout fixture:
    three outputs, CCC per target in metrics.json, predictions per target, and the
    unlabelled Test2 rows never trained or tested on."""
    pytest.importorskip("mer.extract.engine")
    from click.testing import CliRunner

    from corpus_fixtures_ser import MSP_ROWS, make_msp_podcast
    from mer.common.cli import cli

    def mer(*a):
        res = CliRunner().invoke(cli, [str(x) for x in a], catch_exceptions=False)
        assert res.exit_code == 0, res.output

    cache, runs = tmp_path / "cache", tmp_path / "runs"
    mer("prepare", "-d", "msp-podcast", "--root", make_msp_podcast(tmp_path), "--cache", cache, "--workers", "2")
    mer("extract", "-d", "msp-podcast", "-f", "mfcc", "--cache", cache, "--workers", "0", "-q")
    mer("train", "-d", "msp-podcast", "-f", "mfcc", "--fusion", "concat", "--scheme", "avd", "--cache", cache,
        "--out", runs, "--run-id", "avd", "--epochs", "40", "--lr", "0.01", "--no-plots", "-q")
    m = json.loads((runs / "avd" / "metrics.json").read_text())
    (fold,) = m["folds"]
    for t in ("arousal", "valence", "dominance"):
        for k in ("ccc", "mae", "corr"):
            assert f"{k}_{t}" in fold and f"{k}_{t}" in m["mean"]
        assert -1.0 <= fold[f"ccc_{t}"] <= 1.0
    assert fold["ccc"] == pytest.approx(np.mean([fold[f"ccc_{t}"] for t in ("arousal", "valence", "dominance")]))
    # The fixture's attributes follow the class, as does each class's tone: learnable.
    assert fold["ccc"] > 0.3, fold
    p = pd.read_csv(runs / "avd" / "predictions.csv")
    assert {"true_arousal", "predicted_arousal", "true_dominance", "predicted_dominance"} <= set(p.columns)
    test1 = {r[0][:-4] for r in MSP_ROWS if r[7] == "Test1"}
    assert set(p["id"]) == test1
    h = json.loads((runs / "avd" / "history.json").read_text())
    assert "valid_ccc" in h[0]["epochs"][0]
    # The blind Test2 rows, kept by prepare, are what `mer predict` is for: one value per target.
    man = pd.read_parquet(cache / "msp-podcast" / "manifest.parquet")
    blind = man[man["split"] == "Test2"][["id", "audio", "text"]]
    blind.to_csv(tmp_path / "blind.csv", index=False)
    mer("predict", "--run", runs / "avd", "--manifest", tmp_path / "blind.csv", "--out", tmp_path / "pred.csv")
    pred = pd.read_csv(tmp_path / "pred.csv")
    assert list(pred.columns) == ["id", "predicted_arousal", "predicted_valence", "predicted_dominance"]
    assert list(pred["id"]) == list(blind["id"]) and np.isfinite(pred.iloc[:, 1:].to_numpy()).all()


@pytest.mark.parametrize("fusion", ["attention", "concat", "cross", "interaction", "late", "masked", "weighted"])
def test_every_fusion_with_several_outputs_trains_three_targets(tmp_path, fusion):
    """Multi-target regression for every fusion that can produce several outputs (late
    fusion averaged log-probabilities of 3 'classes' before: a loss error on [n, 3] targets);
    hierarchical is classification-only (it needs a neutral class) and says so."""
    from mer.common.manifest import Manifest, content_hashes
    from mer.train.run import run_train
    from mer.train.synthetic_features import synthetic

    man, sets = synthetic(160, seed=2, text_dim=8, audio_dim=8, noise=0.5)
    df = man.df.copy()
    y = df["emotion"].map({"ang": 0, "hap": 1, "sad": 2, "neu": 3}).to_numpy()
    rng = np.random.default_rng(0)
    df["activation"] = np.where(np.isin(y, [0, 1]), 6.0, 2.0)
    df["valence"] = np.where(np.isin(y, [1, 3]), 6.0, 2.0)
    df["dominance"] = np.where(y == 0, 6.0, 3.0)
    df["split"] = rng.choice(["Train", "Development", "Test1"], len(df), p=[0.7, 0.1, 0.2])
    df["dataset"] = "msp-podcast"
    man = Manifest(df, {"dataset": "msp-podcast", **content_hashes(df)})
    feats = "bert.tokens,mfcc.frames" if fusion == "masked" else "bert,mfcc"
    (run,) = run_train("msp-podcast", feats, fusion, scheme="avd", manifest=man, feature_sets=sets, out=tmp_path,
                       epochs=3, device="cpu", quiet=True, plots=False)
    m = json.loads((run / "metrics.json").read_text())
    assert {"ccc_arousal", "ccc_valence", "ccc_dominance", "ccc"} <= set(m["mean"])
    assert all(np.isfinite(m["mean"][f"mae_{t}"]) for t in ("arousal", "valence", "dominance"))


def test_hierarchical_refuses_regression_in_one_line(tmp_path):
    from mer.common.errors import MerError
    from mer.common.manifest import Manifest, content_hashes
    from mer.train.run import run_train
    from mer.train.synthetic_features import synthetic

    man, sets = synthetic(40, seed=2, text_dim=4, audio_dim=4)
    df = man.df.copy()
    df["activation"], df["valence"], df["dominance"] = 3.0, 4.0, 5.0
    man = Manifest(df, {"dataset": "msp-podcast", **content_hashes(df)})
    with pytest.raises(MerError, match="hierarchical"):
        run_train("msp-podcast", "bert,mfcc", "hierarchical", scheme="avd", manifest=man, feature_sets=sets,
                  out=tmp_path, epochs=1, device="cpu", quiet=True, plots=False)
