"""--normalize speaker: each speaker's audio standardised with that speaker's own utterances
(labels unused), which removes speaker offsets a leave-one-session-out model cannot learn."""
from __future__ import annotations

import json

import numpy as np

from mer.common.manifest import Manifest, content_hashes, to_frame
from mer.train.data import FeatureSet, FeatureCache, build_data, parse_features, resolve_inputs
from mer.train.speakernorm import speaker_normalized
from mer.train.trainer import TrainConfig, run_train


def offset_corpus(n=400, seed=0):
    """Audio: a class direction (weak) plus a large per-speaker offset; 10 speakers, 5 sessions."""
    rng = np.random.default_rng(seed)
    classes = ["ang", "hap", "sad", "neu"]
    y = rng.integers(0, 4, n)
    spk = rng.integers(0, 10, n)
    ids = [f"Ses{1 + s // 2:02d}{'FM'[s % 2]}_x_{'FM'[s % 2]}{i:04d}" for i, s in enumerate(spk)]
    df = to_frame([{"id": u, "dataset": "iemocap", "audio": f"/x/{u}.wav", "duration": 1.0, "text": "x",
                    "emotion": classes[c], "speaker": f"Ses{1 + s // 2:02d}_{'FM'[s % 2]}", "session": f"Ses{1 + s // 2:02d}",
                    "gender": "FM"[s % 2], "dialog": f"d{i % 16}", "audio_hash": u}
                   for i, (u, c, s) in enumerate(zip(ids, y, spk))])
    man = Manifest(df, {"dataset": "iemocap", **content_hashes(df)}, None)
    cents = rng.normal(size=(4, 6))
    offsets = rng.normal(size=(10, 6)) * 4.0
    scales = rng.uniform(0.5, 3.0, size=(10, 1))
    x = (cents[y] + 0.5 * rng.normal(size=(n, 6))) * scales[spk] + offsets[spk]
    lengths = rng.integers(3, 8, n)
    offs = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offs[1:])
    frames = np.repeat(x, lengths, axis=0) + 0.1 * rng.normal(size=(offs[-1], 6))
    fs = FeatureSet("mfcc", "audio", np.array(ids),
                    {"pooled": {"kind": "fixed", "dim": 6}, "frames": {"kind": "ragged", "dim": 6, "frame_rate": 100}},
                    {"pooled": x.astype(np.float32)}, {"frames": (frames.astype(np.float32), offs)}, key="offsets")
    return man, {"mfcc": fs}


def test_each_speaker_is_standardised_without_labels():
    man, sets = offset_corpus()
    fc = FeatureCache("iemocap", manifest=man, sets=sets)
    src = resolve_inputs(parse_features("mfcc.pooled,mfcc.frames"), fc, "pooled")
    labels = man.df["emotion"]
    data = build_data(man.df, labels, ["ang", "hap", "sad", "neu"], src, fc)
    normed, info = speaker_normalized(data)
    assert info == {"speakers": 10, "without_speaker": 0}
    spk = data.meta["speaker"].to_numpy()
    for s in set(spk):
        rows = np.flatnonzero(spk == s)
        x = normed.arrays["mfcc.pooled"].fixed[rows]
        np.testing.assert_allclose(x.mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(x.std(0), 1, atol=1e-4)
        a = normed.arrays["mfcc.frames"]
        f = np.concatenate([a.values[a.offsets[r]: a.offsets[r + 1]] for r in rows])
        np.testing.assert_allclose(f.mean(0), 0, atol=1e-5)
    # Labels play no part: shuffled labels give the same features.
    shuffled = data.__class__(**{**data.__dict__, "y": np.random.default_rng(1).permutation(data.y)})
    np.testing.assert_array_equal(speaker_normalized(shuffled)[0].arrays["mfcc.pooled"].fixed,
                                  normed.arrays["mfcc.pooled"].fixed)
    assert data.arrays["mfcc.pooled"].fixed is not normed.arrays["mfcc.pooled"].fixed   # the input is not changed


def test_speaker_normalisation_recovers_what_speaker_offsets_hide(tmp_path):
    man, sets = offset_corpus()
    ua = {}
    for mode in ("fold", "speaker"):
        [run] = run_train("iemocap", "mfcc", "concat", protocol="loso", epochs=25, manifest=man, feature_sets=sets,
                          out=tmp_path, run_id=mode, quiet=True, plots=False, config=TrainConfig(normalize=mode))
        ua[mode] = json.loads((run / "metrics.json").read_text())["mean"]["ua"]
    assert ua["speaker"] > 0.8 and ua["speaker"] > ua["fold"] + 0.15, ua
