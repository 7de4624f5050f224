"""Data layer: feature requests, output resolution, alignment by id, normalisation, padding."""
import numpy as np
import pandas as pd
import pytest

from mer.common.errors import MerError, UsageError
from mer.common.report import Report
from mer.train.data import (
    Batcher,
    FeatureCache,
    FeatureSet,
    Normalizer,
    build_data,
    pad_ragged,
    parse_features,
    resolve_inputs,
)
from mer.train.synthetic_features import synthetic


def test_parse_features():
    r = parse_features("bert, mfcc.frames,egemaps.functionals")
    assert [(x.feature, x.output) for x in r] == [("bert", None), ("mfcc", "frames"), ("egemaps", "functionals")]
    with pytest.raises(UsageError):
        parse_features("bert,bert")
    with pytest.raises(UsageError):
        parse_features(" , ")


def _sets():
    man, sets = synthetic(60, seed=3)
    # a store with only a ragged output (like mel) and one with several fixed ones (like bert)
    mel = sets["mfcc"]
    sets["mel"] = FeatureSet("mel", "audio", mel.ids, {"frames": {"kind": "ragged", "dim": mel.outputs["frames"]["dim"]}},
                             ragged={"frames": mel.ragged["frames"]})
    b = sets["bert"]
    b.outputs["cls"] = {"kind": "fixed", "dim": 16}
    b.fixed["cls"] = b.fixed["mean"] * 2
    return man, sets


def test_resolve_defaults_and_explicit():
    man, sets = _sets()
    fc = FeatureCache("iemocap", sets=sets)
    pooled = resolve_inputs(parse_features("bert,mfcc,mel"), fc, "pooled")
    assert [(s.key, s.kind, s.dim) for s in pooled] == [
        ("bert.mean", "fixed", 16), ("mfcc.pooled", "fixed", 12), ("mel.frames@mean", "fixed", 12)]
    seq = resolve_inputs(parse_features("bert,mfcc"), fc, "sequence")
    assert [(s.key, s.kind) for s in seq] == [("bert.tokens", "ragged"), ("mfcc.frames", "ragged")]
    both = resolve_inputs(parse_features("bert"), fc, "both")
    assert [s.key for s in both] == ["bert.mean", "bert.tokens"]
    explicit = resolve_inputs(parse_features("bert.cls,mfcc.frames"), fc, "pooled")
    assert [(s.key, s.kind, s.modality) for s in explicit] == [("bert.cls", "fixed", "text"), ("mfcc.frames", "ragged", "audio")]
    with pytest.raises(UsageError, match="no output 'nope'"):
        resolve_inputs(parse_features("bert.nope"), fc)


def test_featureset_checks_dimensions_against_metadata():
    with pytest.raises(MerError, match="dimension 5"):
        FeatureSet("x", "audio", ["a", "b"], {"v": {"kind": "fixed", "dim": 5}}, fixed={"v": np.zeros((2, 4))})


def test_alignment_by_id_drops_and_reports():
    man, sets = synthetic(50, seed=1)
    # the audio store lists utterances in another order, lacks two, and marks one invalid
    a = sets["mfcc"]
    order = np.random.default_rng(0).permutation(len(a.ids))[:-2]
    vals, offs = a.ragged["frames"]
    segs = [vals[offs[i]:offs[i + 1]] for i in order]
    new_off = np.concatenate([[0], np.cumsum([len(s) for s in segs])])
    valid = np.ones(len(order), bool)
    valid[0] = False
    sets["mfcc"] = FeatureSet("mfcc", "audio", a.ids[order], a.outputs, {"pooled": a.fixed["pooled"][order]},
                              {"frames": (np.concatenate(segs), new_off)}, valid=valid)
    fc = FeatureCache("iemocap", sets=sets)
    labels = pd.Series(man.df["emotion"]).astype("string")
    labels.iloc[5] = pd.NA  # one utterance without a label under the scheme
    srcs = resolve_inputs(parse_features("bert,mfcc"), fc, "both")
    rep = Report("t")
    d = build_data(man.df, labels, ["ang", "hap", "sad", "neu"], srcs, fc, report=rep)
    missing = set(a.ids) - set(a.ids[order])
    dropped = {i.id for i in rep.dropped}
    assert missing | {a.ids[order[0]]} <= dropped | {man.df["id"][5]}
    assert len(d) == 50 - len(missing | {a.ids[order[0]], man.df["id"][5]})
    # every row's audio vector is the one stored for that id (read-back by id equals written)
    pos = {u: i for i, u in enumerate(a.ids)}
    for r, uid in enumerate(d.ids):
        assert np.array_equal(d.arrays["mfcc.pooled"].fixed[r], a.fixed["pooled"][pos[uid]])
        fr = d.arrays["mfcc.frames"]
        assert np.array_equal(fr.values[fr.offsets[r]:fr.offsets[r + 1]], vals[offs[pos[uid]]:offs[pos[uid] + 1]])
        assert d.classes[d.y[r]] == man.df.set_index("id").loc[uid, "emotion"]
    assert rep.reasons()["missing from feature store"] == len(missing)
    assert rep.reasons()["skipped by extractor"] == 1


def test_normalizer_uses_training_rows_only_and_padding_masks():
    man, sets = synthetic(40, seed=2)
    fc = FeatureCache("iemocap", sets=sets)
    srcs = resolve_inputs(parse_features("bert,mfcc"), fc, "both")
    labels = man.df["emotion"].astype("string")
    d = build_data(man.df, labels, ["ang", "hap", "sad", "neu"], srcs, fc)
    train = np.arange(0, 20)
    norm = Normalizer.fit(d, train)
    m, s = norm.stats["bert.mean"]
    np.testing.assert_allclose(m, d.arrays["bert.mean"].fixed[train].mean(0), rtol=1e-5, atol=1e-5)
    fr = d.arrays["mfcc.frames"]
    frames = np.concatenate([fr.values[fr.offsets[r]:fr.offsets[r + 1]] for r in train])
    np.testing.assert_allclose(norm.stats["mfcc.frames"][0], frames.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(norm.stats["mfcc.frames"][1], frames.std(0), rtol=1e-4, atol=1e-4)
    # stats survive the safetensors-style round trip
    back = Normalizer.from_tensors(norm.tensors())
    assert set(back.stats) == set(norm.stats)
    b, y = Batcher(d, norm).batch(np.array([0, 1, 2]))
    lengths = np.diff(fr.offsets)[:3]
    assert b["mfcc.frames"].shape == (3, lengths.max(), 12)
    assert b["mfcc.frames.mask"].sum(1).tolist() == lengths.tolist()
    assert float(b["mfcc.frames"][~b["mfcc.frames.mask"]].abs().sum()) == 0.0
    assert b["bert.mean"].shape == (3, 16)


def test_pad_ragged():
    x, m = pad_ragged([np.ones((2, 3)), np.ones((4, 3))], 3)
    assert x.shape == (2, 4, 3) and m.tolist() == [[True, True, False, False], [True] * 4]
