"""Every registered fusion, through the one trainer: it learns the synthetic corpus, and
padding never changes its output on ragged inputs.

The synthetic corpus (mer.train.synthetic_features.synthetic) hides one bit of the 4-class label in the
text vectors and the other in the audio vectors: chance is 25%, either modality alone tops
out near 50%, and only a model that uses both gets far above that.
"""
import json

import numpy as np
import pytest
import torch

from mer.train.data import FeatureCache, Normalizer, Batcher, build_data, parse_features, resolve_inputs
from mer.train.synthetic_features import synthetic
from mer.train.fusion import FUSIONS
from mer.train.trainer import TrainConfig, build_model, run_train

ALL = FUSIONS.names()
# Small widths keep the sequence models (BiLSTM/attention stacks) fast on 2 CPU cores; each
# override applies only to fusions whose config has that field.
SMALL = {"hidden": "32", "layers": "1", "ff": "64", "fc": "32", "n": "64", "d": "64", "heads": "2"}


def small(fusion: str) -> dict:
    """The SMALL overrides this fusion's config has (an unknown --set key is an error)."""
    from mer.train.trainer import config_fields

    have = set(config_fields(FUSIONS.get(fusion)))
    return {k: v for k, v in SMALL.items() if k in have}


@pytest.fixture(scope="module")
def corpus():
    return synthetic(300, seed=0, text_dim=12, audio_dim=10, noise=0.7)


@pytest.fixture(scope="module")
def redundant():
    return synthetic(300, seed=0, text_dim=12, audio_dim=10, noise=0.8, mode="redundant")


def _ua(run):
    return json.loads((run / "metrics.json").read_text())["mean"]["ua"]


@pytest.mark.parametrize("fusion", ALL)
def test_fusion_learns(fusion, redundant, tmp_path):
    """Each fusion on its default inputs (sequences for sequence models) learns far above chance (0.25)."""
    man, sets = redundant
    tc = TrainConfig(epochs=20, patience=6, batch_size=32, lr=3e-3)
    (run,) = run_train("iemocap", "bert,mfcc", fusion, protocol="sd", manifest=man, feature_sets=sets,
                       out=tmp_path, config=tc, device="cpu", plots=False, quiet=True, options=small(fusion))
    assert _ua(run) > 0.6, f"{fusion}: UA {_ua(run):.3f}"


# Fusions that combine the content of both modalities: on the complementary corpus they must
# beat what either modality allows alone (about 0.5). masked is left out by design: it
# re-weights text tokens, audio only steers the weights, so it cannot add audio content;
# hierarchical routes by speech first and is covered by test_fusion_learns.
CONTENT_FUSIONS = [f for f in ALL if f not in ("masked", "hierarchical")]


@pytest.mark.parametrize("fusion", CONTENT_FUSIONS)
def test_fusion_uses_both_modalities(fusion, corpus, tmp_path):
    man, sets = corpus
    tc = TrainConfig(epochs=40, patience=10, batch_size=32, lr=3e-3)
    (run,) = run_train("iemocap", "bert.mean,mfcc.pooled", fusion, protocol="sd", manifest=man, feature_sets=sets,
                       out=tmp_path, config=tc, device="cpu", plots=False, quiet=True, options=small(fusion))
    assert _ua(run) > 0.7, f"{fusion}: UA {_ua(run):.3f}"


@pytest.mark.parametrize("fusion", ["concat", "late"])
def test_basic_fusions_learn_from_sequences(fusion, corpus, tmp_path):
    man, sets = corpus
    tc = TrainConfig(epochs=20, patience=6, batch_size=32, lr=3e-3)
    (run,) = run_train("iemocap", "bert.tokens,mfcc.frames", fusion, protocol="sd", manifest=man, feature_sets=sets,
                       out=tmp_path, config=tc, device="cpu", plots=False, quiet=True, options=small(fusion))
    assert _ua(run) > 0.7


@pytest.mark.parametrize("fusion", ALL)
def test_padding_changes_nothing(fusion, corpus):
    man, sets = corpus
    cls = FUSIONS.get(fusion)
    fc = FeatureCache("iemocap", sets=sets)
    wants = getattr(cls, "wants", "pooled")
    srcs = resolve_inputs(parse_features("bert.tokens,mfcc.frames"), fc, wants)
    data = build_data(man.df, man.df["emotion"].astype("string"), ["ang", "hap", "sad", "neu"], srcs, fc)
    batcher = Batcher(data, Normalizer.fit(data, np.arange(len(data))))
    rows = np.arange(8)
    batch, _ = batcher.batch(rows)
    for s in srcs:
        assert batch[s.key].shape[:2] == batch[s.key + ".mask"].shape
        assert batch[s.key].shape[2] == s.dim
    assert any((~batch[s.key + ".mask"]).any() for s in srcs), "the test batch must contain padding"
    torch.manual_seed(0)
    model = build_model(cls, data.specs, 4, None, data.classes).eval()
    with torch.no_grad():
        ref = model(batch)
        proba = model.predict_proba(ref) if hasattr(model, "predict_proba") else torch.softmax(ref, -1)
        assert proba.shape == (len(rows), 4)
        noisy = dict(batch)
        for s in srcs:
            x = batch[s.key].clone()
            pad = ~batch[s.key + ".mask"]
            x[pad] = torch.randn(int(pad.sum()), x.shape[-1]) * 100.0
            noisy[s.key] = x
        out = model(noisy)
        # and a batch padded further (longer T) gives the same result again
        longer = dict(batch)
        for s in srcs:
            x, m = batch[s.key], batch[s.key + ".mask"]
            longer[s.key] = torch.cat([x, torch.full((x.shape[0], 5, x.shape[2]), 7.0)], 1)
            longer[s.key + ".mask"] = torch.cat([m, torch.zeros(m.shape[0], 5, dtype=torch.bool)], 1)
        out2 = model(longer)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out2, ref, rtol=1e-4, atol=1e-5)
