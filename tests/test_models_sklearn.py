"""Classical baselines (train/models_sklearn.py): their torch forward computes what
scikit-learn computes, they learn eGeMAPS-like functionals, and their saved runs reproduce
their predictions from safetensors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mer.train.data import FeatureSet
from mer.train.fusion import FUSIONS, InputSpec
from mer.train.synthetic_features import synthetic
from mer.train.trainer import TrainConfig, run_train

BASELINES = ["svm-linear", "svm-rbf", "logreg", "gbt"]


def _egemaps_like(n: int = 400, seed: int = 0):
    """The synthetic IEMOCAP-shaped manifest with an 88-d functional vector per utterance:
    dimensions on wildly different scales (F0 in Hz, loudness, dB slopes, jitter in 1e-2)
    and 16 of them shifted by the emotion, as eGeMAPS's pitch/loudness/spectral functionals
    are; the rest is noise."""
    man, _ = synthetic(n, seed=seed, ragged=False)
    classes = ["ang", "hap", "sad", "neu"]
    y = np.array([classes.index(e) for e in man.df["emotion"]])
    rng = np.random.default_rng(seed + 7)
    scale = 10 ** rng.uniform(-2, 2.5, 88)
    offset = rng.normal(size=88) * scale * 3
    shift = np.zeros((4, 88))
    informative = rng.choice(88, 16, replace=False)
    shift[:, informative] = rng.normal(size=(4, 16)) * 1.2
    x = (shift[y] + rng.normal(size=(n, 88))) * scale + offset
    ids = man.df["id"].astype(str).to_numpy()
    fs = FeatureSet("egemaps", "audio", ids, {"functionals": {"kind": "fixed", "dim": 88}},
                    {"functionals": x.astype(np.float32)}, {}, key="egemaps-like")
    return man, {"egemaps": fs}


@pytest.mark.parametrize("name", BASELINES)
def test_forward_equals_scikit_learn(name):
    """The tensors saved for a fitted model give scikit-learn's own decision values."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC, LinearSVC

    rng = np.random.default_rng(3)
    X = rng.normal(size=(120, 6))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + 2 * (X[:, 2] > 0.3)
    cls = FUSIONS.get(name)
    model = cls([InputSpec("f.x", "fixed", 6, "audio")], 4, cls.Config())
    model.fit_arrays(X, y, seed=0)
    Xt = rng.normal(size=(40, 6)).astype(np.float32)
    with torch.no_grad():
        got = model({"f.x": torch.from_numpy(Xt)}).numpy()
    Xd = Xt.astype(np.float64)
    if name == "svm-linear":
        want = LinearSVC(max_iter=5000, random_state=0).fit(X, y).decision_function(Xd)
    elif name == "logreg":
        want = LogisticRegression(max_iter=2000, random_state=0).fit(X, y).decision_function(Xd)
        p = LogisticRegression(max_iter=2000, random_state=0).fit(X, y).predict_proba(Xd)
        np.testing.assert_allclose(torch.softmax(torch.from_numpy(got).double(), -1).numpy(), p, atol=1e-4)
    elif name == "gbt":
        want = GradientBoostingClassifier(random_state=0).fit(X, y).decision_function(Xd)
    else:   # one-vs-rest binary SVCs with scikit-learn's "scale" gamma
        g = 1.0 / (X.shape[1] * X.var())
        want = np.stack([SVC(gamma=g, random_state=0).fit(X, (y == k).astype(int)).decision_function(Xd)
                         for k in range(4)], 1)
    np.testing.assert_allclose(got, want, atol=2e-3 * max(1.0, np.abs(want).max()))
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.97


def test_two_classes_and_a_class_missing_from_training():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(80, 3))
    y = np.where(X[:, 0] > 0, 2, 0)          # classes 0 and 2 of 3; class 1 never seen
    for name in BASELINES:
        cls = FUSIONS.get(name)
        model = cls([InputSpec("f.x", "fixed", 3, "audio")], 3, cls.Config())
        model.fit_arrays(X, y, seed=0)
        with torch.no_grad():
            out = model({"f.x": torch.from_numpy(X.astype(np.float32))})
        pred = out.argmax(1).numpy()
        assert set(pred) <= {0, 2}, name
        assert (pred == y).mean() > 0.9, name


def test_regression_is_refused_with_a_clear_message():
    from mer.common.errors import MerError

    with pytest.raises(MerError, match="regression"):
        FUSIONS.get("svm-rbf")([InputSpec("f.x", "fixed", 3, "audio")], 1)


@pytest.mark.parametrize("name", ["svm-linear", "svm-rbf"])
def test_svm_learns_egemaps_like_functionals(name, tmp_path):
    man, sets = _egemaps_like()
    run = run_train("iemocap", "egemaps", name, manifest=man, feature_sets=sets, out=tmp_path, quiet=True,
                    plots=False, config=TrainConfig(jobs=1))[0]
    m = json.loads((run / "metrics.json").read_text())
    assert len(m["folds"]) == 5                      # leave-one-session-out
    assert m["mean"]["ua"] > 0.8, m["mean"]           # chance is 0.25
    assert m["folds"][0]["best_epoch"] == 1


def test_saved_baselines_reproduce_their_predictions(tmp_path):
    """Weights are tensors in safetensors (no pickle): models rebuilt from them give
    predictions.csv again, for a kernel model and the trees."""
    from mer.train.rundir import load_models

    man, sets = _egemaps_like(200, seed=2)
    fs = sets["egemaps"]
    for name in ("svm-rbf", "gbt", "logreg"):
        run = run_train("iemocap", "egemaps", name, manifest=man, feature_sets=sets, out=tmp_path, quiet=True,
                        plots=False, protocol="si", config=TrainConfig(jobs=1), run_id=name)[0]
        cfg, sources, models = load_models(run)
        pred = pd.read_csv(run / "predictions.csv")
        for (model, norm), wfile in zip(models, cfg["weights"]):
            fold = wfile.split("-", 1)[1].rsplit(".", 1)[0]
            sub = pred[pred["fold"] == fold].head(8)
            rows = [int(np.flatnonzero(fs.ids == u)[0]) for u in sub["id"]]
            x = torch.from_numpy(norm.apply_np(sources[0].key, fs.fixed["functionals"][rows]))
            with torch.no_grad():
                p = torch.softmax(model({sources[0].key: x}), -1).numpy()
            np.testing.assert_allclose(p, sub[["p_ang", "p_hap", "p_sad", "p_neu"]].to_numpy(float), atol=2e-5,
                                       err_msg=name)


def test_baselines_in_compare_and_tune(tmp_path):
    """The baselines are ordinary runs for `mer compare`, and `mer tune` searches their config."""
    from dataclasses import asdict

    from mer.train.compare import compare_runs
    from mer.train.synthetic_features import write_stores
    from mer.train.tune import TuneSpec, default_storage, parse_param, run_trial, spec_train_dict

    man, sets = _egemaps_like(160, seed=4)
    a = run_train("iemocap", "egemaps", "concat", manifest=man, feature_sets=sets, out=tmp_path, quiet=True,
                  plots=False, config=TrainConfig(jobs=1, epochs=5), run_id="mlp")[0]
    b = run_train("iemocap", "egemaps", "svm-rbf", manifest=man, feature_sets=sets, out=tmp_path, quiet=True,
                  plots=False, config=TrainConfig(jobs=1), run_id="svm")[0]
    cmp = compare_runs([a, b], n_boot=50, n_perm=50, seed=0)
    assert len(cmp.rows) == 1
    cache = tmp_path / "cache"
    write_stores(man, sets, cache)
    spec = TuneSpec(study="svm", storage=default_storage("svm", cache), dataset="iemocap", features="egemaps",
                    fusion="svm-rbf", out=str(tmp_path / "t"), space={"C": asdict(parse_param("C", "0.1:10:log"))},
                    train=spec_train_dict(TrainConfig()), cache=str(cache))
    r = run_trial(asdict(spec), 0)
    assert r["state"] == "COMPLETE" and r["value"] > 0.6 and 0.1 <= r["params"]["C"] <= 10
    cfg = __import__("yaml").safe_load((Path(r["run"]) / "config.yaml").read_text())
    assert cfg["model"]["C"] == pytest.approx(r["params"]["C"])
