"""Recipes (issue 11): the five seed papers' settings as data, `mer recipes`, `mer extract
--recipe`, `mer train --recipe` with overrides recorded, missing encoders and --substitute."""
import json
from dataclasses import fields

import numpy as np
import pandas as pd
import pytest
import yaml

from mer.common import recipes
from mer.extract import recipes as extract_recipes
from mer.train import recipes as train_recipes
from mer.common.cli import main
from mer.common.errors import MerError, UsageError


def _mer(*args):
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        raise AssertionError(f"mer {' '.join(map(str, args))} exited with {e.code}") from None


def test_recipes_cover_every_seed_paper_and_are_complete_and_valid(capsys):
    from mer.common.schemes import dataset_spec
    from mer.extract.base import EXTRACTORS
    from mer.train.fusion import FUSIONS
    from mer.train.trainer import TrainConfig

    names = recipes.names()
    # one per seed paper, and seed 003's two systems (LSTM-ST-I and its headline W2v-ST-I)
    assert len(names) == 6 and {"hierarchical-ser", "w2v-st-i"} <= set(names)
    seen_seeds = set()
    train_fields = {f.name for f in fields(TrainConfig)}
    for n in names:
        r = recipes.load(n)
        seen_seeds.add(r.seed)
        spec = dataset_spec(r.dataset)
        assert r.scheme in spec["schemes"] and r.protocol in spec["protocols"], n
        assert r.fusion in FUSIONS.names() and r.context in ("none", "dialog"), n
        for f, cfg in r.features.items():
            have = {x.name for x in fields(EXTRACTORS.get(f).Config)}
            assert set(cfg) <= have, (n, f, set(cfg) - have)
        model_fields = {x.name for x in fields(FUSIONS.get(r.fusion).Config)}
        assert set(r.model) <= model_fields, (n, set(r.model) - model_fields)
        assert {train_recipes.TRAIN_OPTIONS[k] for k in r.train} <= train_fields
        assert {"optimizer", "lr", "batch_size", "epochs", "patience", "monitor"} <= set(r.train), n
        assert (r.figure is None or 0 < r.figure < 1) and r.metric in recipes.METRICS and r.figure_text and r.differs
        for part in r.inputs.replace("+", ",").split(","):   # inputs name the recipe's features only
            assert part.split(".")[0] in r.features, (n, part)
        for f, s in r.substitute.items():
            assert f in r.features and (s.get("feature") or f) in EXTRACTORS.names()
    assert seen_seeds == {"000", "001", "002", "003", "004"}
    capsys.readouterr()
    _mer("recipes")
    out = capsys.readouterr().out
    for n in names:
        r = recipes.load(n)
        assert n in out and (r.figure is None or f"{100 * r.figure:.2f}" in out) and r.figure_text in out


def test_unknown_recipe_and_bad_keys_are_clear_errors(tmp_path):
    with pytest.raises(UsageError, match="choose from"):
        recipes.load("nope")
    bad = tmp_path / "r.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "metric": "ua", "learning_rate": 1}))
    with pytest.raises(MerError, match="unknown recipe keys"):
        recipes.load(str(bad))


def test_missing_encoder_names_the_model_and_the_option_and_substitute_records_it():
    r = recipes.load("cm-roberta")
    with pytest.raises(MerError) as e:
        extract_recipes.plan(r, {"smile": {"config": "/nonexistent/emo_large.conf"}})
    msg = str(e.value)
    assert "--substitute" in msg and "--smile.config" in msg
    with pytest.raises(MerError) as e:
        extract_recipes.plan(recipes.load("atfsc"))
    msg = str(e.value)
    assert "bert-base-uncased" in msg and "--bert.model" in msg and "huggingface-cli download bert-base-uncased" in msg
    p = extract_recipes.plan(r, substitute=True)
    assert p.features["bert"] == {"model": "all-MiniLM-L6-v2", "layer": "last4"}
    assert set(p.features) == {"compare", "dvector", "bert"} and "openl3" not in p.inputs
    assert p.inputs == "compare,dvector,bert.mean"
    assert {s["feature"]: s["used_feature"] for s in p.substitutions} == {"smile": "compare", "openl3": "dvector",
                                                                          "bert": "bert"}
    # a command-line setting that makes the encoder available is used instead of substituting
    p2 = extract_recipes.plan(recipes.load("atfsc"), {"bert": {"model": "all-MiniLM-L6-v2"}})
    assert not p2.substitutions and p2.features["bert"]["model"] == "all-MiniLM-L6-v2"



def test_recipes_ask_each_extractor_what_is_missing(monkeypatch):
    """No extractor name is written in the recipe planner: any extractor's ``missing()``
    (here mfcc's, which never misses anything) stops a recipe that uses it."""
    from mer.extract.base import EXTRACTORS

    mfcc = EXTRACTORS.get("mfcc")
    assert mfcc.missing(mfcc.Config()) is None
    monkeypatch.setattr(mfcc, "missing", classmethod(lambda cls, config: f"needs n_mfcc={config.n_mfcc} weights"))
    r = recipes.Recipe(name="r", seed="x", paper="p", dataset="iemocap", scheme="emo4", protocol="loso",
                       features={"mfcc": {"n_mfcc": 13}}, inputs="mfcc", fusion="concat", metric="ua", figure=0.5,
                       figure_text="")
    with pytest.raises(MerError, match="recipe r: mfcc needs n_mfcc=13 weights"):
        extract_recipes.plan(r)

@pytest.fixture
def recipe_cache(tmp_path):
    """Two bert stores of different configs and one mfcc store, plus a recipe of our own."""
    from mer.train.synthetic_features import synthetic, write_stores

    man, sets = synthetic(200, seed=2, text_dim=8, audio_dim=8, noise=0.5, ragged=False)
    cache = tmp_path / "cache"
    sets["bert"].config = {"model": "/models/other-encoder", "layer": "last"}
    sets["mfcc"].config = {"n_mfcc": 13}
    write_stores(man, {"bert": sets["bert"], "mfcc": sets["mfcc"]}, cache)
    wanted = synthetic(200, seed=2, text_dim=8, audio_dim=8, noise=0.5, ragged=False)[1]["bert"]
    wanted.config = {"model": "/somewhere/all-MiniLM-L6-v2", "layer": "last"}
    wanted.key = "the-recipes-one"
    write_stores(man, {"bert": wanted}, cache)
    rec = {"name": "mine", "seed": "x", "paper": "a test", "dataset": "iemocap", "scheme": "emo4", "protocol": "sd",
           "features": {"bert": {"model": "all-MiniLM-L6-v2"}, "mfcc": {"n_mfcc": 13}}, "inputs": "bert,mfcc",
           "fusion": "concat", "model": {"hidden": 32}, "context": "none",
           "train": {"optimizer": "adam", "lr": 0.01, "weight_decay": 3e-4, "batch_size": 16, "epochs": 4,
                     "patience": 4, "monitor": "loss"},
           "metric": "ua", "figure": 0.683, "figure_text": "UA 68.3", "differs": "nothing"}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(rec))
    return cache, path


def test_train_recipe_uses_its_stores_and_settings_and_records_overrides(recipe_cache, tmp_path, capsys):
    cache, path = recipe_cache
    out = tmp_path / "runs"
    _mer("train", "--recipe", path, "-d", "iemocap", "--cache", cache, "--out", out, "--run-id", "r", "--epochs", 2,
         "--set", "hidden=16", "--no-plots", "-q")
    cfg = yaml.safe_load((out / "r" / "config.yaml").read_text())
    assert cfg["stores"]["bert"]["config"]["model"].endswith("all-MiniLM-L6-v2")     # the recipe's store, not the newest other
    assert cfg["fusion"] == "concat" and cfg["features"] == "bert,mfcc" and cfg["protocol"]["name"] == "sd"
    t = cfg["train"]
    assert (t["optimizer"], t["lr"], t["weight_decay"], t["batch_size"], t["patience"], t["monitor"]) == \
        ("adam", 0.01, 3e-4, 16, 4, "loss")
    assert t["epochs"] == 2 and cfg["model"]["hidden"] == 16                          # the command line wins
    ov = cfg["recipe"]["overrides"]
    assert ov["epochs"] == {"recipe": 4, "command line": 2} and ov["set hidden"]["recipe"] == "32"
    assert cfg["recipe"]["name"] == "mine" and cfg["recipe"]["substitutions"] == []
    m = json.loads((out / "r" / "metrics.json").read_text())
    assert m["paper"]["figure"] == 0.683 and m["paper"]["metric"] == "ua" and m["paper"]["run"] == m["mean"]["ua"]
    capsys.readouterr()
    _mer("runs", out)
    shown = capsys.readouterr().out
    assert "recipe" in shown and "paper" in shown and "ua 0.6830" in shown


def test_train_recipe_without_its_stores_says_which_extract_to_run(recipe_cache, tmp_path):
    cache, path = recipe_cache
    rec = yaml.safe_load(path.read_text())
    rec["features"]["mfcc"] = {"n_mfcc": 40}
    path.write_text(yaml.safe_dump(rec))
    with pytest.raises(MerError) as e:
        train_recipes.train_setup(str(path), "iemocap", {"options": {}}, set(), cache)
    assert "mer extract --recipe mine --dataset iemocap" in str(e.value)
    with pytest.raises(UsageError, match="set up for --dataset iemocap"):
        train_recipes.train_setup(str(path), "meld", {"options": {}}, set(), cache)


@pytest.fixture(scope="module")
def synthetic_corpora(tmp_path_factory):
    """Small synthetic corpora with real speech, prepared once: IEMOCAP layout (5 sessions,
    2 utterances per class and session) and MELD layout (3 per class and split)."""
    pytest.importorskip("espeakng_loader")
    from mer.common.datasets.prepare import prepare
    from mer.common.synth import generate

    root = tmp_path_factory.mktemp("recipes")
    cache = root / "cache"
    generate(root / "iemocap", layout="iemocap", per_class=2, sessions=5, seed=0, quiet=True)
    prepare("iemocap", root / "iemocap", cache=cache, quiet=True)
    generate(root / "meld", layout="meld", per_class=3, seed=0, quiet=True)
    prepare("meld", root / "meld", cache=cache, quiet=True)
    return cache


@pytest.mark.parametrize("name", recipes.names())
def test_every_recipe_runs_end_to_end_with_substitute(name, synthetic_corpora, tmp_path, monkeypatch):
    """Each recipe's two commands on a synthetic corpus (issue 18: "every recipe runs end to end
    with --substitute"): none of the papers' encoders is installed here, so --substitute uses
    the packaged ones (a config-built tiny wav2vec2 for w2v-st-i) and says so; the run records
    the recipe's settings, and a fine-tuned recipe tunes the substitute."""
    cache = synthetic_corpora
    monkeypatch.setenv("MER_CACHE", str(cache))   # where the tiny wav2vec2 substitute is built
    r = recipes.load(name)
    if name == "atfsc":   # without --substitute: the message names the model (tested above)
        with pytest.raises(SystemExit):
            main(["extract", "--recipe", name, "-d", r.dataset, "--cache", str(cache), "--workers", "0", "-q"])
    _mer("extract", "--recipe", name, "-d", r.dataset, "--cache", cache, "--substitute", "--workers", 0, "-q")
    _mer("train", "--recipe", name, "-d", r.dataset, "--cache", cache, "--substitute", "--out", tmp_path / "runs",
         "--run-id", name, "--epochs", 1, "-q", "--no-plots")
    run = tmp_path / "runs" / name
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["fusion"] == r.fusion and cfg["scheme"]["name"] == r.scheme and cfg["protocol"]["name"] == r.protocol
    assert cfg["train"]["lr"] == r.train["lr"] and cfg["train"]["batch_size"] == r.train["batch_size"]
    assert cfg["train"]["context"] == r.context and cfg["train"]["grad_clip"] == 0
    assert cfg["recipe"]["overrides"] == {"epochs": {"recipe": r.train["epochs"], "command line": 1}}
    subs = {s["feature"]: s for s in cfg["recipe"]["substitutions"]}
    assert subs and set(subs) <= set(r.substitute)
    m = json.loads((run / "metrics.json").read_text())
    assert m["paper"]["figure"] == r.figure and m["paper"]["substituted"] is True
    if r.protocol == "si":   # like for like: the paper's single fold (test = session 5 female)
        assert m["paper"]["run"] == m["paper_fold"]["mean"][r.metric] and "Ses05-F" in m["paper"]["run_of"]
    else:
        assert m["paper"]["run"] == m["mean"][r.metric]
    tuned = train_recipes.finetuned(r)
    assert sorted(cfg.get("finetune") or {}) == tuned
    for f in tuned:   # the substitute is the encoder fine-tuned, with the recipe's encoder settings
        used = subs[f]["used"]
        rec = cfg["finetune"][f]
        assert subs[f]["fine_tuned"] and rec["model"] == used["model"] == r.substitute[f]["config"]["model"]
        assert str(rec["layer"]) == str(used.get("layer", "last")) and cfg["train"]["encoder_lr"] == r.train["encoder_lr"]
        if "max_tokens" in used:
            assert rec["max_tokens"] == used["max_tokens"]
        assert (run / rec["assets"] / "config.json").is_file()
    if name == "cm-roberta":   # fine-tuned inside the dialogue model: the encoder's weights moved
        import torch
        from safetensors.torch import load_file

        from mer.extract.text import packaged_minilm_dir

        [wfile] = list((run / "weights").glob("*.safetensors"))
        init = load_file(str(packaged_minilm_dir() / "model.safetensors"))
        key = next(k for k in init if k.endswith("encoder.layer.5.attention.self.key.weight"))
        tuned_w = load_file(str(wfile))[f"encoder.bert.model.{key.removeprefix('bert.')}"]
        assert not torch.allclose(tuned_w, init[key])
        # and `mer predict` on whole dialogues gives the run's own test outputs back
        from mer.train.predict import Item, predict_items

        df = pd.read_parquet(cache / "meld" / "manifest.parquet").set_index("id")
        pred = pd.read_csv(run / "predictions.csv")
        items = [Item(u, audio=df.loc[u, "audio"], text=df.loc[u, "text"], dialog=str(df.loc[u, "dialog"]))
                 for u in pred["id"]]
        classes, proba, _ = predict_items(run, items, device="cpu")
        np.testing.assert_allclose(proba, pred[[f"p_{c}" for c in classes]].to_numpy(float), atol=2e-4)
    if r.context == "dialog":   # batches count utterances: whole dialogues, about batch_size of them
        h = json.loads((run / "history.json").read_text())[0]["epochs"][0]
        assert h["effective_batch"] > 1


def test_no_recipe_clips_gradients_and_differs_notes_hold():
    """None of the five papers clips gradients (the trainer's default clips at 5), none of
    000/002/004 has video, and 001/004 say their papers fine-tune the text encoder."""
    for n in recipes.names():
        r = recipes.load(n)
        assert r.train.get("grad_clip") == 0, n
        if r.seed in ("000", "002", "004"):
            assert "no video" not in r.differs, n
    for n in ("cross-bert-interaction", "cm-roberta"):   # their papers fine-tune the text encoder: so do they
        assert train_recipes.finetuned(recipes.load(n)) == ["bert"], n
    # seed 003 trains on frame sequences in batches of 64 utterances: the frame budget
    # (--batch-frames 4096) would cut them to about 10 rows at 4 s per utterance
    assert recipes.load("hierarchical-ser").train["batch_frames"] == 0
    # each recipe compares with the figure of the system it runs: hierarchical-ser runs
    # LSTM-ST-I, whose figure the seed text lacks (Table II); W2v-ST-I's 68.3 is w2v-st-i's
    lstm, w2v = recipes.load("hierarchical-ser"), recipes.load("w2v-st-i")
    assert lstm.figure is None and "LSTM-ST-I" in lstm.figure_text and "68.3" not in lstm.paper_record()["figure_text"][:20]
    assert w2v.figure == 0.683 and "W2v-ST-I" in w2v.figure_text and train_recipes.finetuned(w2v) == ["wav2vec"]
    for r in (lstm, w2v):   # both train three models jointly with one early-stopping epoch: said
        assert "jointly" in r.differs and "separately" in r.differs
    assert "batches of 32 dialogues" not in recipes.load("bert-cnn-attention").differs + recipes.load("cm-roberta").differs


def _defaults():
    """`mer train`'s option values as the CLI fills them when nothing is typed."""
    import click

    from mer.train.cli import train

    ctx = click.Context(train)
    vals = {p.name: p.get_default(ctx) for p in train.params if p.name}
    vals = {k: (None if type(v).__name__ == "Sentinel" else v) for k, v in vals.items()}
    return {**vals, "features": ("bert",), "options": {}}


def test_recipes_001_and_004_fine_tune_the_feature_encoder():
    """Seeds 001 and 004 fine-tune their text encoders: `mer train --recipe` fills --finetune,
    the encoder lr and the encoder (model, layer, token cap) from the recipe's bert feature;
    a typed option overrides and is recorded."""
    vals = _defaults()
    out, rec, _ = train_recipes.train_setup("cm-roberta", "meld", vals, {"features"})
    assert (out["finetune"], out["encoder_model"], out["encoder_layer"], out["encoder_lr"]) == \
        ("bert", "roberta-large", "last4", 1e-4)
    assert out["context"] == "dialog" and out["batch_size"] == 32
    out, rec, _ = train_recipes.train_setup("cross-bert-interaction", "meld", vals, {"features"})
    assert (out["finetune"], out["encoder_model"], out["max_tokens"], out["encoder_lr"], out["lr"]) == \
        ("bert", "bert-base-uncased", 50, 2e-6, 2e-6)
    assert out["protocol"] == "pooled-80-20"
    typed = {**vals, "encoder_model": "/models/bert-base-uncased"}
    out, rec, _ = train_recipes.train_setup("cross-bert-interaction", "meld", typed, {"features", "encoder_model"})
    assert out["encoder_model"] == "/models/bert-base-uncased"
    assert rec["overrides"]["encoder_model"] == {"recipe": "bert-base-uncased", "command line": "/models/bert-base-uncased"}


def test_fine_tuned_recipe_without_its_encoder_names_it_and_substitute(tmp_path):
    with pytest.raises(MerError, match=r"fine-tuning bert: .*roberta-large.*--encoder-model.*--substitute"):
        train_recipes.train_setup("cm-roberta", "meld", _defaults(), set(), tmp_path / "cache")


def test_tune_recipe_reads_the_recipe(tmp_path, capsys):
    """`mer tune --recipe` set itself up through the training side's train_setup (it imported
    it from mer.common.recipes, where it is not: an ImportError before any message)."""
    with pytest.raises(SystemExit):
        main(["tune", "--recipe", "atfsc", "-d", "iemocap", "--cache", str(tmp_path / "c"), "--study", "s",
              "--trials", "1"])
    err = capsys.readouterr().err
    assert "ImportError" not in err and "mer extract --recipe atfsc" in err
