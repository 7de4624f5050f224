"""Seed 003 as its authors should have run it: the neutral threshold chosen on validation
data (``--set threshold=auto``), the test-fold sweep kept as analysis, and the `si`
protocol's single test-female fold reported beside the two-fold mean."""
import json

import numpy as np
import pytest
import yaml

from mer.train.synthetic_features import synthetic

GRID = [0.25, 0.30, 0.35, 0.40]


def _corpus(seed=3):
    man, sets = synthetic(160, seed=seed, text_dim=8, audio_dim=8, noise=0.6)
    return man, sets


def _train(tmp_path, man, sets, monkeypatch=None, seen=None):
    from mer.train.models_hier import HierarchicalFusion
    from mer.train.trainer import run_train

    if monkeypatch is not None:
        real = HierarchicalFusion.calibrate

        def spy(self, logits, y):  # records the labels the threshold is chosen on
            seen.append(np.asarray(y.cpu()))
            return real(self, logits, y)

        monkeypatch.setattr(HierarchicalFusion, "calibrate", spy)
    (run,) = run_train("iemocap", "bert,mfcc", "hierarchical", protocol="si", manifest=man, feature_sets=sets,
                       options={"threshold": "auto"}, out=tmp_path, epochs=2, device="cpu", quiet=True, plots=False)
    return run, json.loads((run / "metrics.json").read_text())


def test_threshold_auto_uses_only_validation_rows(tmp_path, monkeypatch):
    """Per fold, the threshold is chosen from the validation rows' labels (the spy sees
    exactly those), and changing every test label leaves the choice unchanged."""
    man, sets = _corpus()
    seen: list[np.ndarray] = []
    run, m = _train(tmp_path / "a", man, sets, monkeypatch, seen)
    df = man.df.set_index("id")
    classes = ["ang", "hap", "sad", "neu"]
    folds = {f["fold"]: f for f in m["folds"]}
    assert list(folds) == ["Ses05-F", "Ses05-M"]
    for (name, f), y_seen in zip(folds.items(), seen):
        val_gender = "M" if name.endswith("F") else "F"
        val = df[(df["session"] == "Ses05") & (df["gender"] == val_gender)]
        # same labels, same count, in data order: the validation half of session 5, nothing else
        assert y_seen.tolist() == [classes.index(e) for e in val["emotion"]]
        assert f["threshold"] in GRID and 0 <= f["threshold_valid_ua"] <= 1
    assert m["mean"]["threshold"] == pytest.approx(np.mean([f["threshold"] for f in m["folds"]]))
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model"]["threshold"] == "auto" and cfg["model"]["auto_thresholds"] == GRID
    # the saved fold model carries the threshold chosen for it (mer predict decides with it)
    from safetensors.numpy import load_file

    w = load_file(str(run / "weights" / "seed0-Ses05-F.safetensors"))
    assert float(w["chosen_threshold"]) == folds["Ses05-F"]["threshold"]

    # Relabel every test row of fold Ses05-F (session 5, female): training (sessions 1-4)
    # and validation (session 5, male) are untouched, so the threshold must not move.
    df2 = man.df.copy()
    test_rows = (df2["session"] == "Ses05") & (df2["gender"] == "F")
    df2.loc[test_rows, "emotion"] = np.roll(df2.loc[test_rows, "emotion"].to_numpy(), 1)
    from mer.common.manifest import Manifest, content_hashes

    man2 = Manifest(df2, {"dataset": "iemocap", **content_hashes(df2)})
    _, m2 = _train(tmp_path / "b", man2, sets)
    f2 = {f["fold"]: f for f in m2["folds"]}
    assert f2["Ses05-F"]["threshold"] == folds["Ses05-F"]["threshold"]
    assert f2["Ses05-F"]["threshold_valid_ua"] == folds["Ses05-F"]["threshold_valid_ua"]
    assert f2["Ses05-F"]["ua"] != folds["Ses05-F"]["ua"]  # the test labels did change


def test_si_reports_the_papers_test_female_fold_and_sweep_is_analysis(tmp_path):
    man, sets = _corpus(seed=4)
    run, m = _train(tmp_path, man, sets)
    pf = m["paper_fold"]
    female = next(f for f in m["folds"] if f["fold"] == "Ses05-F")
    assert pf["fold"] == "Ses05-F" and pf["mean"]["ua"] == pytest.approx(female["ua"])
    assert m["mean"]["ua"] == pytest.approx(np.mean([f["ua"] for f in m["folds"]]))  # the two-fold mean stays
    assert "analysis only" in m["sweeps_note"]
    assert all(s["split"] == "test" and s["analysis_only"] for s in m["sweeps"])
    from mer.train.rundir import runs_table

    row = runs_table([tmp_path]).iloc[0]
    assert row["paper_fold_ua"] == pytest.approx(female["ua"])


def test_calibrate_picks_the_best_validation_threshold():
    """On hand-made logits the chosen tau is the grid value with the best UA (ties: the smaller)."""
    import torch

    from mer.train.fusion import InputSpec
    from mer.train.models_hier import HierarchicalFusion

    specs = [InputSpec("a", "fixed", 4, "audio"), InputSpec("t", "fixed", 4, "text")]
    m = HierarchicalFusion(specs, 4, HierarchicalFusion.Config(threshold="auto"), classes=["ang", "hap", "sad", "neu"])
    assert float(m.chosen_threshold) == 0.30  # the grid's middle until calibrated
    # every utterance routed neutral by speech; the text model gives p(neutral) = 0.33 and
    # puts the rest on the true emotion. Truth: all emotional. Speech's neutral is kept
    # when p_text(neutral) >= tau: tau 0.25 and 0.30 keep them neutral (wrong), 0.35 and
    # 0.40 hand them to the text model (right); of the tie, the smaller.
    n = 40
    y = torch.tensor([0, 1, 2] * (n // 3) + [0] * (n % 3))
    l1 = torch.tensor([[4.0, 0.0]]).repeat(n, 1)
    l2 = torch.zeros(n, 3)
    p3 = torch.full((n, 4), 0.01)
    p3[:, 3] = 0.33
    p3[torch.arange(n), y] = 0.65
    logits = torch.cat([l1, l2, p3.log()], -1)
    out = m.calibrate(logits, y)
    assert out["threshold"] == 0.35 and float(m.chosen_threshold) == 0.35 and out["threshold_valid_ua"] == 1.0
    with pytest.raises(Exception, match="'auto'"):
        HierarchicalFusion(specs, 4, HierarchicalFusion.Config(threshold="best"), classes=["ang", "hap", "sad", "neu"])


def test_a_recipe_on_si_compares_the_papers_fold_with_the_paper(tmp_path):
    """Seed 003 reports one fold (test = session 5 female): a recipe's "run" figure beside the
    paper's is that fold's, not the two-fold mean (which stays in "mean")."""
    from mer.train.trainer import TrainConfig, run_train

    man, sets = _corpus(seed=4)
    recipe = {"name": "x", "paper": {"metric": "ua", "figure": 0.683}, "substitutions": [], "overrides": {}}
    [run] = run_train("iemocap", "bert,mfcc", "concat", protocol="si", manifest=man, feature_sets=sets, out=tmp_path,
                      config=TrainConfig(epochs=3), quiet=True, plots=False, recipe=recipe)
    m = json.loads((run / "metrics.json").read_text())
    female = next(f for f in m["folds"] if f["fold"] == "Ses05-F")
    assert m["paper"]["run"] == pytest.approx(female["ua"]) and m["paper"]["run_of"].startswith("fold Ses05-F")
