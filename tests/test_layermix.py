"""Learned layer mixing (SUPERB's softmax-weighted sum over an encoder's hidden states) for
stores extracted with ``--bert.layer all`` / ``--wav2vec.layer all``."""
from __future__ import annotations

import json

import numpy as np
import torch

from mer.common.manifest import Manifest, content_hashes, to_frame
from mer.train.data import FeatureSet
from mer.train.fusion import InputSpec
from mer.train.layermix import LayerMix, MixedInputs, weights_from_state
from mer.train.trainer import run_train

LAYERS, H, CARRIER = 5, 8, 3


def stacked_corpus(n=320, seed=0):
    """A text store of LAYERS stacked hidden states of width H: only layer CARRIER depends on
    the label (a class centroid plus noise); every other layer is noise of the same scale."""
    rng = np.random.default_rng(seed)
    classes = ["ang", "hap", "sad", "neu"]
    y = rng.integers(0, 4, n)
    sess = rng.integers(1, 6, n)
    ids = [f"Ses{s:02d}F_x_F{i:04d}" for i, s in enumerate(sess)]
    df = to_frame([{"id": u, "dataset": "iemocap", "audio": f"/x/{u}.wav", "duration": 1.0, "text": "x",
                    "emotion": classes[c], "speaker": f"Ses{s:02d}_F", "gender": "F", "session": f"Ses{s:02d}",
                    "dialog": f"Ses{s:02d}F_x", "audio_hash": u} for u, c, s in zip(ids, y, sess)])
    man = Manifest(df, {"dataset": "iemocap", **content_hashes(df)}, None)
    cents = rng.normal(size=(4, H)) * 1.5
    stack = rng.normal(size=(n, LAYERS, H))
    stack[:, CARRIER] += cents[y]
    fs = FeatureSet("bert", "text", np.array(ids), {"mean": {"kind": "fixed", "dim": LAYERS * H, "layers": LAYERS}},
                    {"mean": stack.reshape(n, LAYERS * H).astype(np.float32)}, key="stacked")
    return man, {"bert": fs}


def test_weights_move_to_the_layer_that_carries_the_label(tmp_path):
    man, sets = stacked_corpus()
    [run] = run_train("iemocap", "bert", "concat", protocol="loso", epochs=30, manifest=man, feature_sets=sets,
                      out=tmp_path, run_id="mix", quiet=True)
    m = json.loads((run / "metrics.json").read_text())
    assert m["mean"]["ua"] > 0.7
    for fold in m["folds"]:
        w = np.array(fold["layer_weights"]["bert.mean"])
        assert w.shape == (LAYERS,) and abs(w.sum() - 1) < 1e-6
        # From uniform (0.2 each) to most of the mass on the carrier layer, in every fold.
        assert w.argmax() == CARRIER and w[CARRIER] > 0.5, (fold["fold"], w.round(3))
    png = run / "layer_weights.png"
    assert png.stat().st_size > 5000
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["inputs"][0]["layers"] == LAYERS


def test_mixing_frames_and_reloading_the_weights():
    torch.manual_seed(0)
    m = LayerMix(3, 4)
    with torch.no_grad():
        m.raw.copy_(torch.tensor([0.0, 0.1, -0.1]))
    x = torch.randn(2, 6, 12)                       # ragged frames [B, T, L * H]
    w = torch.softmax(10 * m.raw.detach(), 0)
    ref = sum(w[i] * x[..., 4 * i: 4 * (i + 1)] for i in range(3))
    torch.testing.assert_close(m(x), ref)

    class Inner(torch.nn.Module):
        def forward(self, batch):
            return batch["bert.tokens"].sum(-1)

        def predict_proba(self, logits):
            return logits

    specs = [InputSpec("bert.tokens", "ragged", 4, "text", 3), InputSpec("mfcc.pooled", "fixed", 5, "audio")]
    wrapped = MixedInputs(Inner(), specs)
    assert wrapped({"bert.tokens": x}).shape == (2, 6) and hasattr(wrapped, "predict_proba")
    got = weights_from_state(wrapped.state_dict(), specs)
    assert list(got) == ["bert.tokens"] and np.allclose(got["bert.tokens"], [1 / 3] * 3)


def test_extract_every_layer_and_train_on_it_by_store_config(tmp_path, capsys):
    """`mer extract --bert.layer all` next to the default store; `mer train --store
    bert.layer=all` picks it (and mixes its layers); a config no store has is refused."""
    import pytest

    from corpus_fixtures import make_modality_csv
    from mer.common.cli import main

    root = make_modality_csv(tmp_path, ("text", "label"), per_class=10)
    cache, runs = tmp_path / "cache", tmp_path / "runs"
    main(["prepare", "-d", "csv", "-r", str(root), "--cache", str(cache)])
    for layer in ("all", "last"):
        main(["extract", "-d", "csv", "--cache", str(cache), "--features", "bert", "--bert.layer", layer,
              "--workers", "0", "-q"])
    main(["train", "-d", "csv", "--cache", str(cache), "-f", "bert", "--store", "bert.layer=all", "--protocol", "random",
          "--epochs", "5", "--out", str(runs), "--run-id", "all", "-q", "--no-plots"])
    m = json.loads((runs / "all" / "metrics.json").read_text())
    assert len(m["folds"][0]["layer_weights"]["bert.mean"]) == 7   # MiniLM: embeddings + 6 layers
    assert (runs / "all" / "layer_weights.png").exists()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["train", "-d", "csv", "--cache", str(cache), "-f", "bert", "--store", "bert.layer=last4", "--out", str(runs), "-q"])
    assert "no 'bert' store for 'csv' has bert.layer=last4" in capsys.readouterr().err
