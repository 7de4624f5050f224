"""Combined inputs: `-f bert,mfcc+egemaps` joins several stores into ONE model input
(pooled vectors side by side; frame sequences aligned by time where the rates allow)."""
import numpy as np
import pandas as pd
import pytest

from mer.common.errors import MerError, UsageError
from mer.train.data import FeatureCache, FeatureSet, build_data, parse_features, resolve_inputs


def _ragged(lengths, dim, rng):
    offs = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offs[1:])
    return rng.normal(size=(offs[-1], dim)).astype(np.float32), offs


def _sets(n=20, seed=0):
    """mfcc (mean [5], frames [T,5] at 100 Hz), egemaps (functionals [3], lld [T',2] at
    100 Hz, a few frames shorter, rows in another order, one utterance skipped), a 50 Hz
    store (wav [T/2, 4]), a 30 Hz one, mel (frames only) and bert (tokens, no rate)."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"u{i:02d}" for i in range(n)])
    T = rng.integers(20, 60, n)
    mf, mo = _ragged(T, 5, rng)
    mfcc = FeatureSet("mfcc", "audio", ids, {"mean": {"kind": "fixed", "dim": 5}, "frames": {"kind": "ragged", "dim": 5, "frame_rate": 100.0}},
                      {"mean": rng.normal(size=(n, 5)).astype(np.float32)}, {"frames": (mf, mo)}, key="kmfcc")
    perm = rng.permutation(n)
    ev, eo = _ragged(T[perm] - 3, 2, rng)
    valid = np.ones(n, bool)
    valid[perm == 4] = False  # u04 skipped by the extractor
    egemaps = FeatureSet("egemaps", "audio", ids[perm], {"functionals": {"kind": "fixed", "dim": 3}, "lld": {"kind": "ragged", "dim": 2, "frame_rate": 100.0}},
                         {"functionals": rng.normal(size=(n, 3)).astype(np.float32)}, {"lld": (ev, eo)}, valid=valid, key="kege")
    wv, wo = _ragged((T + 1) // 2, 4, rng)
    wav = FeatureSet("wav", "audio", ids, {"frames": {"kind": "ragged", "dim": 4, "frame_rate": 50.0}}, ragged={"frames": (wv, wo)})
    ov, oo = _ragged(np.maximum(1, T * 3 // 10), 4, rng)
    odd = FeatureSet("odd", "audio", ids, {"frames": {"kind": "ragged", "dim": 4, "frame_rate": 30.0}}, ragged={"frames": (ov, oo)})
    lv, lo = _ragged(T, 6, rng)
    mel = FeatureSet("mel", "audio", ids, {"frames": {"kind": "ragged", "dim": 6, "frame_rate": 100.0}}, ragged={"frames": (lv, lo)})
    tv, to = _ragged(rng.integers(3, 8, n), 7, rng)
    bert = FeatureSet("bert", "text", ids, {"mean": {"kind": "fixed", "dim": 7}, "tokens": {"kind": "ragged", "dim": 7}},
                      {"mean": rng.normal(size=(n, 7)).astype(np.float32)}, {"tokens": (tv, to)})
    return ids, perm, {"mfcc": mfcc, "egemaps": egemaps, "wav": wav, "odd": odd, "mel": mel, "bert": bert}


def _row(fs, name, i):
    vals, offs = fs.ragged[name]
    return vals[offs[i] : offs[i + 1]]


def test_parse_joins_with_plus():
    a, b = parse_features("bert,mfcc+egemaps.functionals")
    assert a.feature == "bert" and not a.parts
    assert b.feature == "mfcc+egemaps.functionals" and [p.text for p in b.parts] == ["mfcc", "egemaps.functionals"]
    with pytest.raises(UsageError, match="joins the same input twice"):
        parse_features("mfcc+mfcc")


def test_pooled_vectors_are_concatenated_by_id():
    ids, perm, sets = _sets()
    cache = FeatureCache("iemocap", sets=sets)
    (src,) = resolve_inputs(parse_features("mfcc+egemaps"), cache, "pooled")
    assert src.key == "mfcc+egemaps.pooled" and src.kind == "fixed" and src.dim == 8 and src.modality == "audio"
    fs = cache.get("mfcc+egemaps")
    where = {u: i for i, u in enumerate(sets["egemaps"].ids)}
    for i, u in enumerate(ids):
        if u == "u04":
            assert not fs.valid[i]
            continue
        np.testing.assert_array_equal(fs.fixed["pooled"][i], np.r_[sets["mfcc"].fixed["mean"][i], sets["egemaps"].fixed["functionals"][where[u]]])
    # downstream it is one store: the skipped utterance is dropped and reported by id
    df = pd.DataFrame({"id": ids, "emotion": ["neu"] * len(ids)})
    from mer.common.report import Report

    rep = Report("t")
    data = build_data(df, df["emotion"], ["neu"], [src], cache, report=rep)
    assert len(data) == len(ids) - 1 and "u04" in [d.id for d in rep.dropped]
    # a frames-only store joins by its frame mean
    (src2,) = resolve_inputs(parse_features("mel+egemaps.functionals"), cache, "pooled")
    j = cache.get("mel+egemaps.functionals").fixed["pooled"]
    np.testing.assert_allclose(j[0, :6], _row(sets["mel"], "frames", 0).mean(0), rtol=1e-6)


def test_frames_are_aligned_by_time_and_rates_must_divide():
    ids, perm, sets = _sets()
    cache = FeatureCache("iemocap", sets=sets)
    (src,) = resolve_inputs(parse_features("mfcc+egemaps+wav"), cache, "sequence")
    assert src.key == "mfcc+egemaps+wav.frames" and src.kind == "ragged" and src.dim == 5 + 2 + 4
    fs = cache.get("mfcc+egemaps+wav")
    assert fs.outputs["frames"]["frame_rate"] == 100.0
    where = {u: i for i, u in enumerate(sets["egemaps"].ids)}
    i = 7
    a, e, w = _row(sets["mfcc"], "frames", i), _row(sets["egemaps"], "lld", where[ids[i]]), _row(sets["wav"], "frames", i)
    n = min(len(a), len(e), 2 * len(w))
    got = _row(fs, "frames", i)
    assert len(got) == n == len(e)  # egemaps is 3 frames short: the others are cut to it
    np.testing.assert_array_equal(got[:, :5], a[:n])
    np.testing.assert_array_equal(got[:, 5:7], e[:n])
    np.testing.assert_array_equal(got[:, 7:], np.repeat(w, 2, axis=0)[:n])  # 50 Hz frames repeated twice
    assert fs.attrs["combined"]["frames"]["repeats"] == [1, 1, 2]
    # the same join, pooled, for a fusion that wants vectors: both live in one set
    (p,) = resolve_inputs(parse_features("mfcc+egemaps+wav"), cache, "pooled")
    assert p.kind == "fixed" and set(cache.get("mfcc+egemaps+wav").outputs) == {"frames", "pooled"}
    with pytest.raises(UsageError, match=r"frame rates mfcc.frames 100 Hz, odd.frames 30 Hz do not divide 100 Hz"):
        resolve_inputs(parse_features("mfcc+odd"), cache, "sequence")
    with pytest.raises(UsageError, match="no frame rate"):
        resolve_inputs(parse_features("mfcc.frames+bert.tokens"), FeatureCache("iemocap", sets={**sets, "bert": _audio(sets["bert"])}), "sequence")
    with pytest.raises(UsageError, match="joins inputs of one modality; mfcc is audio, bert is text"):
        resolve_inputs(parse_features("mfcc+bert"), cache, "pooled")
    with pytest.raises(UsageError, match="joins a frame sequence with a vector"):
        resolve_inputs(parse_features("mfcc.frames+egemaps.functionals"), cache, "sequence")


def _audio(fs):
    """The bert set relabelled as audio, to reach the frame-rate check."""
    return FeatureSet(fs.feature, "audio", fs.ids, fs.outputs, fs.fixed, fs.ragged)


def test_parts_of_different_lengths_are_refused_by_utterance():
    ids, perm, sets = _sets()
    mf, mo = sets["mfcc"].ragged["frames"]
    lengths = np.diff(mo)
    lengths[3] += 150  # 1.5 s more frames than the other part
    v, o = _ragged(lengths, 5, np.random.default_rng(1))
    sets["mfcc"] = FeatureSet("mfcc", "audio", ids, sets["mfcc"].outputs, sets["mfcc"].fixed, {"frames": (v, o)})
    with pytest.raises(MerError, match=r"utterance u03: the parts cover different lengths"):
        resolve_inputs(parse_features("mfcc+mel"), FeatureCache("iemocap", sets=sets), "sequence")


def test_train_and_predict_on_a_combined_input(tmp_path):
    """A run on `bert,mfcc+egemaps` trains (synthetic stores), and its config records the parts."""
    import yaml

    from mer.train.synthetic_features import synthetic
    from mer.train.trainer import run_train

    man, sets = synthetic(240, seed=2, text_dim=8, audio_dim=6, noise=0.6)
    rng = np.random.default_rng(0)
    m = sets["mfcc"]
    # a second audio store carrying the same audio signal plus noise
    sets["egemaps"] = FeatureSet("egemaps", "audio", m.ids, {"functionals": {"kind": "fixed", "dim": 6}},
                                 {"functionals": (m.fixed["pooled"] + rng.normal(size=m.fixed["pooled"].shape)).astype(np.float32)})
    (run,) = run_train("iemocap", "bert,mfcc+egemaps", "concat", manifest=man, feature_sets=sets, out=tmp_path,
                       epochs=30, device="cpu", quiet=True, plots=False)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert [i["key"] for i in cfg["inputs"]] == ["bert.mean", "mfcc+egemaps.pooled"]
    parts = cfg["stores"]["mfcc+egemaps"]["attrs"]["combined"]["pooled"]["parts"]
    assert [(p["feature"], p["output"]) for p in parts] == [("mfcc", "pooled"), ("egemaps", "functionals")]
    import json

    ua = json.loads((run / "metrics.json").read_text())["mean"]["ua"]
    assert ua > 0.7, ua  # both bits are needed: chance 0.25, one modality ~0.5


def test_paper_features_from_the_cli_on_the_synthetic_corpus(tmp_path, capsys):
    """Synthesized speech -> prepare -> extract mfcc, egemaps, prosody, bert -> train with a
    joined audio input (pooled for concat, frames for masked with the paper's attention,
    prosody+eGeMAPS for hierarchical with threshold=auto on si) -> predict through the join."""
    pytest.importorskip("espeakng_loader")
    import json

    import yaml

    from mer.common.cli import main
    from mer.common.datasets.prepare import prepare
    from mer.common.synth import generate

    def mer(*args):
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            raise AssertionError(f"mer {' '.join(map(str, args))} exited with {e.code}") from None

    corpus, cache, runs = tmp_path / "corpus", tmp_path / "cache", tmp_path / "runs"
    generate(corpus, layout="iemocap", per_class=2, sessions=5, seed=0, quiet=True)
    man, _ = prepare("iemocap", corpus, cache=cache)
    mer("extract", "-d", "iemocap", "--cache", cache, "-f", "mfcc,egemaps,prosody,bert", "--workers", 0, "-q")
    common = ("--cache", cache, "--out", runs, "--epochs", 2, "-q")
    mer("train", "-d", "iemocap", "-f", "bert,mfcc+egemaps", "--fusion", "concat", "--run-id", "pooled", *common)
    mer("train", "-d", "iemocap", "-f", "bert.tokens,mfcc+egemaps", "--fusion", "masked", "--set", "attention=paper",
        "--run-id", "frames", *common)
    mer("train", "-d", "iemocap", "-f", "bert.tokens,prosody+egemaps", "--fusion", "hierarchical", "--protocol", "si",
        "--set", "threshold=auto", "--run-id", "hier", *common)
    pooled = yaml.safe_load((runs / "pooled" / "config.yaml").read_text())
    assert pooled["inputs"][1]["key"] == "mfcc+egemaps.pooled" and pooled["inputs"][1]["dim"] == 40 + 88
    frames = yaml.safe_load((runs / "frames" / "config.yaml").read_text())
    assert frames["inputs"][1]["key"] == "mfcc+egemaps.frames" and frames["inputs"][1]["dim"] == 40 + 25
    assert frames["model"]["attention"] == "paper"
    hier = json.loads((runs / "hier" / "metrics.json").read_text())
    assert all(f["threshold"] in (0.25, 0.30, 0.35, 0.40) for f in hier["folds"]) and hier["paper_fold"]["fold"] == "Ses05-F"
    row = man.df.iloc[0]
    # predict rebuilds the join from the parts' extractors: the same vector/frames as training's
    from mer.extract.cache import find_store
    from mer.train.predict import Item, extract_items

    item = Item(row["id"], row["audio"], row["text"], row["start"], row["end"])
    got = extract_items([item], pooled)[0]["mfcc+egemaps"]["pooled"]
    m, e = FeatureSet.from_store(find_store("iemocap", "mfcc", cache)), FeatureSet.from_store(find_store("iemocap", "egemaps", cache))
    np.testing.assert_allclose(got, np.r_[m.fixed["mean"][0], e.fixed["functionals"][0]], rtol=1e-5, atol=2e-3)
    seq = extract_items([item], frames)[0]["mfcc+egemaps"]["frames"]
    ref = np.concatenate([x[: len(seq)] for x in (_row(m, "frames", 0), _row(e, "lld", 0))], axis=1)
    assert len(seq) == min(len(_row(m, "frames", 0)), len(_row(e, "lld", 0)))
    np.testing.assert_allclose(seq, ref, rtol=1e-5, atol=2e-3)
    for rid in ("pooled", "frames", "hier"):  # hier: the fold models decide with their chosen thresholds
        out = tmp_path / f"{rid}.csv"
        mer("predict", "--run", runs / rid, "--audio", row["audio"], "--text", row["text"], "--out", out)
        p = pd.read_csv(out)
        assert abs(p[[c for c in p.columns if c.startswith("p_")]].to_numpy(float).sum() - 1) < 1e-3
