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


def _ragged_data(n=300, seed=0, features="bert,mfcc"):
    man, sets = synthetic(n, seed=seed)
    fc = FeatureCache("iemocap", sets=sets)
    srcs = resolve_inputs(parse_features(features), fc, "sequence")
    d = build_data(man.df, man.df["emotion"].astype("string"), ["ang", "hap", "sad", "neu"], srcs, fc)
    return d, Normalizer.fit(d, np.arange(len(d)))


def test_bucketed_batches_cover_every_row_once_and_pad_little():
    d, norm = _ragged_data(features="bert.mean,mfcc.frames")
    rows = np.arange(5, len(d))
    lengths = np.diff(d.arrays["mfcc.frames"].offsets)
    bucketed = Batcher(d, norm, batch_frames=0).order(rows, 16, True, np.random.default_rng(0))
    plain = Batcher(d, norm, bucket=False).order(rows, 16, True, np.random.default_rng(0))
    for batches in (bucketed, plain):
        assert sorted(np.concatenate(batches).tolist()) == rows.tolist()
        assert min(len(b) for b in batches) >= 2
    pad = lambda bs: sum(len(b) * lengths[b].max() - lengths[b].sum() for b in bs)  # noqa: E731
    assert pad(bucketed) < 0.25 * pad(plain)
    # the same rng gives the same batches (results are reproducible for a fixed seed)
    again = Batcher(d, norm, batch_frames=0).order(rows, 16, True, np.random.default_rng(0))
    assert all(np.array_equal(a, b) for a, b in zip(bucketed, again))


def test_frame_budget_caps_padded_frames_per_batch():
    d, norm = _ragged_data()
    b = Batcher(d, norm, batch_frames=60)
    L = b.length
    for shuffle in (True, False):
        batches = b.order(np.arange(len(d)), 64, shuffle, np.random.default_rng(1))
        assert sorted(np.concatenate(batches).tolist()) == list(range(len(d)))
        assert all(len(x) * L[x].max() <= 60 or len(x) <= 3 for x in batches)


def test_batch_pads_normalised_frames_like_pad_ragged():
    d, norm = _ragged_data(40)
    rows = np.array([7, 3, 11])
    b, _ = Batcher(d, norm).batch(rows)
    a = d.arrays["mfcc.frames"]
    segs = [norm.apply_np("mfcc.frames", a.values[a.offsets[r]:a.offsets[r + 1]]) for r in rows]
    x, m = pad_ragged(segs, 12)
    np.testing.assert_array_equal(b["mfcc.frames"].numpy(), x)
    np.testing.assert_array_equal(b["mfcc.frames.mask"].numpy(), m)


def test_evaluate_batches_a_split_and_keeps_row_order():
    """evaluate used one batch of 512 rows (a whole split's feature maps at once); now batches
    of batch_size grouped by length, with outputs returned in the order of the rows asked."""
    import torch

    from mer.train.trainer import evaluate

    d, norm = _ragged_data(120)
    batcher = Batcher(d, norm)
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, b):
            seen.append(len(b["mfcc.frames"]))
            return b["bert.tokens"].sum(1)[:, :4]   # a per-row function of the row's own data

    rows = np.random.default_rng(0).permutation(len(d))[:100]
    loss = lambda lg, y: torch.nn.functional.cross_entropy(lg, y)  # noqa: E731
    _, out, logits = evaluate(Probe(), batcher, rows, loss, False, batch_size=16)
    assert max(seen) <= 16 and sum(seen) == 100
    ref = torch.cat([Probe()(batcher.batch(np.array([r]))[0]) for r in rows])
    torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out, torch.softmax(ref, -1).numpy(), rtol=1e-5, atol=1e-5)


def test_one_input_vocabulary_and_one_wants_list():
    """Models and the data layer share one spec type: ``dim`` is the width the model sees,
    ``width`` the store's (stacked layers), and a run config records the store's width as
    runs always have."""
    from mer.train.data import InputSource, input_specs
    from mer.train.fusion import DEFAULT_WANTS, WANTS, InputSpec, fusion_wants

    assert InputSource is InputSpec
    s = InputSpec("bert.tokens", "ragged", 4, "text", 3)
    assert (s.feature, s.output, s.width) == ("bert", "tokens", 12)
    rec = s.to_record()
    assert rec["dim"] == 12 and InputSpec.from_record(rec) == s
    assert input_specs([s]) == [s]
    assert InputSpec("mfcc.frames@mean", "fixed", 5, "audio", pooled_here=True).output == "frames"

    class NoWants:
        pass

    class BadWants:
        wants = "either"

    assert DEFAULT_WANTS in WANTS and fusion_wants(NoWants) == DEFAULT_WANTS
    with pytest.raises(UsageError, match="wants='either'"):
        fusion_wants(BadWants)
    fc = FeatureCache("iemocap", sets=_sets()[1])
    with pytest.raises(UsageError, match="wants='either'"):
        resolve_inputs(parse_features("bert"), fc, "either")
