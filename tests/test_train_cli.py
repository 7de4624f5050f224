"""`mer train` / `mer runs` / `mer predict` through the CLI, on real feature stores.

The stores are written with mer.extract.store's writer from the synthetic corpus (no audio
needed); an end-to-end test with `mer extract` on synthesized speech runs when the
extraction engine is importable.
"""
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from mer.common.cli import main
from mer.train.synthetic_features import synthetic, write_stores


def _mer(*args):
    try:
        main([str(a) for a in args])
    except SystemExit as e:  # main() exits only on errors
        raise AssertionError(f"mer {' '.join(map(str, args))} exited with {e.code}") from None


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    man, sets = synthetic(300, seed=1, text_dim=12, audio_dim=10, noise=0.7)
    write_stores(man, sets, root)
    return root


def test_train_writes_complete_run_dirs_and_runs_compares_them(cache, tmp_path, capsys):
    out = tmp_path / "runs"
    _mer("train", "-d", "iemocap", "-f", "bert,mfcc", "-f", "mfcc", "--fusion", "concat,late", "--cache", cache,
         "--out", out, "--epochs", 15, "--seeds", "0,1", "-q")
    runs = sorted(p for p in out.iterdir())
    assert len(runs) == 4
    for run in runs:
        for f in ("config.yaml", "metrics.json", "predictions.csv", "confusion.png", "curves.png", "history.json",
                  "data_report.json"):
            assert (run / f).stat().st_size > 0, f"{run.name}: {f}"
        m = json.loads((run / "metrics.json").read_text())
        assert {"dataset", "features", "fusion", "protocol", "folds", "mean", "std"} <= set(m)
        assert len(m["folds"]) == 10 and m["std_over"] == "seeds"
        assert {"fold", "accuracy", "ua", "weighted_f1", "macro_f1", "per_class", "confusion"} <= set(m["folds"][0])
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert cfg["protocol"]["name"] == "loso" and cfg["seeds"] == [0, 1]
        assert all(s["key"] and s["path"] for s in cfg["stores"].values())
        assert len(list((run / "weights").glob("*.safetensors"))) == 10
        p = pd.read_csv(run / "predictions.csv")
        assert len(p) == 2 * 300 and {"id", "fold", "true", "predicted", "p_ang", "p_neu"} <= set(p.columns)
        np.testing.assert_allclose(p[["p_ang", "p_hap", "p_sad", "p_neu"]].sum(axis=1), 1.0, atol=1e-4)
    fused = [r for r in runs if "bert+mfcc-concat" in r.name][0]
    audio = [r for r in runs if "-mfcc-concat" in r.name][0]
    ua = lambda r: json.loads((r / "metrics.json").read_text())["mean"]["ua"]  # noqa: E731
    assert ua(fused) > ua(audio) + 0.2

    capsys.readouterr()
    _mer("runs", out, "--filter", "fusion=concat", "--sort", "ua", "--csv", tmp_path / "t.csv",
         "--markdown", tmp_path / "t.md", "--plot", tmp_path / "t.png")
    shown = capsys.readouterr().out
    assert "bert,mfcc" in shown and "late" not in shown.split("wrote")[0]
    t = pd.read_csv(tmp_path / "t.csv")
    assert list(t["fusion"]) == ["concat", "concat"] and t["ua"].iloc[0] >= t["ua"].iloc[1]
    assert (tmp_path / "t.md").read_text().startswith("| run |")
    assert (tmp_path / "t.png").stat().st_size > 1000


def test_saved_weights_reproduce_the_test_predictions(cache, tmp_path):
    """Read-back equals written: models rebuilt from safetensors give predictions.csv again."""
    import torch

    from mer.train.data import FeatureSet, InputSource, single_batch
    from mer.train.rundir import load_models

    _mer("train", "-d", "iemocap", "-f", "bert,mfcc.frames", "--fusion", "concat", "--cache", cache, "--out", tmp_path,
         "--epochs", 5, "--run-id", "r", "--protocol", "si", "-q", "--no-plots")
    run = tmp_path / "r"
    cfg, sources, models = load_models(run)
    assert [s.key for s in sources] == ["bert.mean", "mfcc.frames"]
    stores = {f: FeatureSet.from_store(s["path"]) for f, s in cfg["stores"].items()}
    pred = pd.read_csv(run / "predictions.csv")
    assert sorted(pred["fold"].unique()) == ["Ses05-F", "Ses05-M"]
    for (model, norm), wfile in zip(models, cfg["weights"]):
        fold = wfile.split("-", 1)[1].rsplit(".", 1)[0]
        sub = pred[pred["fold"] == fold].head(5)
        for _, row in sub.iterrows():
            batch = {}
            for s in sources:
                fs = stores[s.feature]
                i = int(np.flatnonzero(fs.ids == row["id"])[0])
                if s.kind == "fixed":
                    x = fs.fixed[s.output][i]
                else:
                    v, o = fs.ragged[s.output]
                    x = v[o[i]:o[i + 1]]
                batch.update(single_batch({s.output: x}, [s], norm))
            with torch.no_grad():
                p = torch.softmax(model(batch), -1).numpy()[0]
            np.testing.assert_allclose(p, row[["p_ang", "p_hap", "p_sad", "p_neu"]].to_numpy(float), atol=2e-5)


def test_regression_scheme(tmp_path):
    from mer.common.manifest import Manifest, content_hashes
    from mer.train.trainer import run_train

    man, sets = synthetic(300, seed=4, text_dim=8, audio_dim=8, noise=0.5)
    df = man.df.copy()
    y = df["emotion"].map({"ang": 0, "hap": 1, "sad": 2, "neu": 3}).to_numpy()
    rng = np.random.default_rng(0)
    # sentiment from both bits: text bit -> +-1.5, audio bit -> +-0.8
    df["score"] = np.where(y < 2, 1.5, -1.5) + np.where(np.isin(y, [0, 2]), 0.8, -0.8) + 0.1 * rng.normal(size=len(df))
    df["split"] = rng.choice(["train", "valid", "test"], len(df), p=[0.7, 0.1, 0.2])
    df["dataset"] = "mosi"
    man = Manifest(df, {"dataset": "mosi", **content_hashes(df)})
    (run,) = run_train("mosi", "bert,mfcc", "concat", scheme="regression", manifest=man, feature_sets=sets,
                       out=tmp_path, epochs=60, device="cpu", quiet=True)
    m = json.loads((run / "metrics.json").read_text())
    assert m["protocol"] == "official" and set(m["mean"]) >= {"mae", "corr", "acc2", "acc7"}
    assert m["mean"]["corr"] > 0.9 and m["mean"]["mae"] < 0.6
    p = pd.read_csv(run / "predictions.csv")
    assert list(p.columns) == ["id", "seed", "fold", "true", "predicted"]


def test_errors_are_one_line(cache, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "-d", "iemocap", "-f", "bert.nope", "--cache", str(cache), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert "no output 'nope'" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["train", "-d", "iemocap", "-f", "egemaps", "--cache", str(cache), "--out", str(tmp_path)])
    assert "mer extract --dataset iemocap --features egemaps" in capsys.readouterr().err


def test_end_to_end_extract_train_predict(tmp_path, capsys):
    """Synthesized speech corpus -> prepare -> extract mfcc + bert -> train -> predict."""
    pytest.importorskip("mer.extract.engine")
    pytest.importorskip("espeakng_loader")
    from mer.common.datasets.prepare import prepare
    from mer.common.synth import generate
    from mer.extract.engine import run_extract

    corpus, cache = tmp_path / "corpus", tmp_path / "cache"
    generate(corpus, layout="iemocap", per_class=2, sessions=5, seed=0, quiet=True)
    man, _ = prepare("iemocap", corpus, cache=cache)
    run_extract("iemocap", ["mfcc", "bert"], cache=cache, workers=0, quiet=True)
    _mer("train", "-d", "iemocap", "-f", "bert,mfcc", "--fusion", "concat", "--cache", cache, "--out", tmp_path / "runs",
         "--run-id", "e2e", "--epochs", 3, "-q")
    run = tmp_path / "runs" / "e2e"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert [i["key"] for i in cfg["inputs"]] == ["bert.mean", "mfcc.pooled"] or cfg["inputs"][1]["feature"] == "mfcc"
    row = man.df.iloc[0]
    capsys.readouterr()
    _mer("predict", "--run", run, "--audio", row["audio"], "--text", row["text"], "--out", tmp_path / "p.csv")
    p = pd.read_csv(tmp_path / "p.csv")
    probs = p[[c for c in p.columns if c.startswith("p_")]].to_numpy(float)
    assert p["predicted"].iloc[0] in cfg["classes"] and abs(probs.sum() - 1) < 1e-3
    # a table of several utterances gives one row each
    pd.DataFrame({"id": man.df["id"][:3], "audio": man.df["audio"][:3], "text": man.df["text"][:3]}).to_csv(
        tmp_path / "new.csv", index=False)
    _mer("predict", "--run", run, "--manifest", tmp_path / "new.csv", "--out", tmp_path / "p3.csv")
    assert list(pd.read_csv(tmp_path / "p3.csv")["id"]) == list(man.df["id"][:3])


def test_meld_emo6_stratified_counts_fear_and_splits_each_class_80_20(tmp_path):
    """Seed 002's MELD setting: scheme emo6 leaves fear out (counted in the data report by
    its raw label) and protocol `stratified` pools MELD's splits, then splits 80/20 by class."""
    from mer.common.manifest import Manifest, content_hashes
    from mer.common.schemes import scheme
    from mer.train.trainer import run_train

    man, sets = synthetic(300, seed=5, text_dim=8, audio_dim=8, noise=0.5)
    df = man.df.copy()
    df["emotion"] = df["emotion"].map({"ang": "anger", "hap": "joy", "sad": "sadness", "neu": "neutral"})
    df.loc[df.index[:30], "emotion"] = "fear"
    df["split"] = np.random.default_rng(1).choice(["train", "dev", "test"], len(df), p=[0.7, 0.1, 0.2])
    df["dataset"] = "meld"
    man = Manifest(df, {"dataset": "meld", **content_hashes(df)})
    lab, classes = scheme("meld", "emo6").apply(df)
    assert classes == ["neutral", "joy", "surprise", "anger", "sadness", "disgust"] and int(lab.isna().sum()) == 30
    (run,) = run_train("meld", "bert,mfcc", "concat", scheme="emo6", protocol="stratified", manifest=man,
                       feature_sets=sets, out=tmp_path, epochs=3, device="cpu", quiet=True, plots=False)
    rep = json.loads((run / "data_report.json").read_text())
    assert rep["counts"]["without a label under the scheme: emotion fear"] == 30
    p = pd.read_csv(run / "predictions.csv")
    assert len(p) == round(0.2 * 270) and "fear" not in set(p["true"])
    test_split = df.set_index("id").loc[p["id"], "split"]
    assert set(test_split) == {"train", "dev", "test"}  # the release's splits are pooled
    whole = df[df["emotion"] != "fear"]["emotion"].value_counts(normalize=True)
    share = p["true"].value_counts(normalize=True)
    for c in whole.index:  # each class in the test fold within 2 points of its share of the corpus
        assert abs(share[c] - whole[c]) < 0.02, c


def test_train_help_does_not_import_torch():
    """`mer train --help` lists the fusions and every choice without importing the models:
    torch (seconds to import) stays out of the process."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from mer.common.cli import main\n"
            "try:\n    main(['train', '--help'])\n"
            "except SystemExit:\n    pass\n"
            "print('TORCH', 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert "TORCH False" in out
    from mer.train.config import MONITORS, NORMALIZE, PRECISIONS
    from mer.train.fusion import CONTEXTS, FUSIONS

    for name in FUSIONS.names():   # the registry's names, all of them, in the help text
        assert name in out
    for option, choices in (("--context", CONTEXTS), ("--precision", PRECISIONS), ("--normalize", NORMALIZE),
                            ("--monitor", MONITORS)):   # choices from the code's tuples
        assert f"{option} [{'|'.join(choices)}]" in out


def test_run_train_returns_results_that_the_cli_prints(cache, tmp_path, capsys):
    """run_train hands back each run's directory and metrics (no re-reading its own files);
    `mer train` prints exactly those."""
    from mer.train.trainer import RunResult, run_train

    (r,) = run_train("iemocap", "bert,mfcc", "concat", protocol="si", cache=cache, out=tmp_path / "a", epochs=2,
                     plots=False, quiet=True)
    assert isinstance(r, RunResult) and r.fusion == "concat" and r.features == "bert,mfcc"
    written = json.loads((r.path / "metrics.json").read_text())
    assert r.metrics == written["mean"] and r.paper_fold == written["paper_fold"]
    assert (r / "metrics.json").exists() and str(r) == str(r.path)
    capsys.readouterr()
    _mer("train", "-d", "iemocap", "-f", "bert,mfcc", "--fusion", "concat", "--protocol", "si", "--cache", cache,
         "--out", tmp_path / "b", "--epochs", 2, "--no-plots", "--run-id", "x")
    out = capsys.readouterr().out
    m = json.loads((tmp_path / "b" / "x" / "metrics.json").read_text())
    assert f"{tmp_path / 'b' / 'x'}: accuracy {m['mean']['accuracy']:.4f}" in out
    assert f"paper's fold {m['paper_fold']['fold']}" in out
