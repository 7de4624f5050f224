"""Synthetic feature stores for tests and benchmarks (no audio, no extractor).

``synthetic()`` builds a learnable corpus directly as in-memory feature sets;
``synthetic_dialogues()`` one whose emotion depends on the dialogue (for ``--context dialog``);
``write_stores()`` writes them as real, verifiable stores (the key is the one
``mer.extract.cache.store_key`` computes from the stores' own attributes, so
``verify_store`` accepts them) for code that goes through the cache, as `mer train` does.
Not part of the training code path: nothing in mer.train imports this module.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mer.train.data import FeatureSet


def synthetic(n: int = 400, seed: int = 0, text_dim: int = 16, audio_dim: int = 12, noise: float = 1.0,
              ragged: bool = True, sessions: int = 5, mode: str = "complementary"):
    """A learnable synthetic corpus in IEMOCAP's shape, for tests and benchmarks.

    Four classes ``ang hap sad neu`` = two bits: text carries one bit (ang/hap vs sad/neu),
    audio the other (ang/sad vs hap/neu). Each modality alone can reach about 50%
    accuracy; both together far more, so fusion has something real to find. Returns
    ``(Manifest, {"bert": FeatureSet, "mfcc": FeatureSet})`` with fixed outputs
    (bert "mean", mfcc "pooled") and, if ``ragged``, sequences (bert "tokens", mfcc
    "frames") whose frame mean carries the same signal.

    ``mode="redundant"``: instead, each modality carries the whole label (one centroid per
    class, plus noise), for models that read one modality's content only (e.g. masked
    attention re-weights text tokens; audio only steers the weights).
    """
    from mer.common.manifest import Manifest, content_hashes, to_frame

    rng = np.random.default_rng(seed)
    classes = ["ang", "hap", "sad", "neu"]
    y = rng.integers(0, 4, n)
    text_bit, audio_bit = (y < 2).astype(float), np.isin(y, [0, 2]).astype(float)
    sess = rng.integers(1, sessions + 1, n)
    gender = np.where(rng.random(n) < 0.5, "F", "M")
    ids = np.array([f"Ses{s:02d}{g}_synth_{g}{i:05d}" for i, (s, g) in enumerate(zip(sess, gender))])
    rows = [
        {"id": i, "dataset": "iemocap", "audio": f"/synthetic/{i}.wav", "duration": 1.0, "text": "synthetic",
         "emotion": classes[c], "speaker": f"Ses{s:02d}_{g}", "gender": g, "session": f"Ses{s:02d}",
         "dialog": f"{i}_dialog", "audio_hash": i}  # one utterance per dialogue: splits stay utterance-level
        for i, c, s, g in zip(ids, y, sess, gender)
    ]
    df = to_frame(rows)
    man = Manifest(df, {"dataset": "iemocap", **content_hashes(df)}, None)

    def modality(bit, dim, name_fixed, name_seq, feat, modality_name, offset):
        g = np.random.default_rng(seed + offset)
        if mode == "redundant":
            cents = g.normal(size=(4, dim))
            cents *= 2.0 / np.linalg.norm(cents, axis=1, keepdims=True)
            centre = cents[y]
        else:
            direction = g.normal(size=dim)
            direction /= np.linalg.norm(direction)
            centre = (2 * bit - 1)[:, None] * 2.0 * direction[None, :]
        pooled = (centre + noise * rng.normal(size=(n, dim))).astype(np.float32) * 3.0 + 5.0
        outputs = {name_fixed: {"kind": "fixed", "dim": dim}}
        ragged_out = {}
        if ragged:
            lengths = rng.integers(3, 13, n)
            offs = np.zeros(n + 1, np.int64)
            np.cumsum(lengths, out=offs[1:])
            vals = (np.repeat(pooled, lengths, axis=0) + noise * rng.normal(size=(offs[-1], dim))).astype(np.float32)
            outputs[name_seq] = {"kind": "ragged", "dim": dim}
            ragged_out[name_seq] = (vals, offs)
        return FeatureSet(feat, modality_name, ids, outputs, {name_fixed: pooled}, ragged_out, key=f"synthetic{seed}")

    sets = {
        "bert": modality(text_bit, text_dim, "mean", "tokens", "bert", "text", 1),
        "mfcc": modality(audio_bit, audio_dim, "pooled", "frames", "mfcc", "audio", 2),
    }
    return man, sets


def write_stores(man, sets: dict[str, FeatureSet], cache, fmt: str = "zarr") -> dict[str, Path]:
    """Write a manifest and feature sets as real stores in ``cache`` (with the store writer
    of mer.extract.store), so `mer train` finds them exactly as it finds extracted ones.
    Used by the CLI tests and bench/bench_train.py; returns {feature: store path}."""
    from mer.common import manifest as mf
    from mer.common import paths

    m = mf.write(man.df, paths.manifest_path(man.dataset, cache), man.dataset, root=None)
    out = {}
    for feat, fs in sets.items():
        pos = {u: i for i, u in enumerate(fs.ids)}
        rows = np.array([pos[u] for u in m.df["id"].astype(str)])  # stores hold rows in manifest order
        totals = {n: int(np.diff(fs.ragged[n][1])[rows][fs.valid[rows]].sum()) for n in fs.ragged}

        def chunks(fs=fs, rows=rows, step=4096):
            for a in range(0, len(rows), step):
                r = rows[a : a + step]
                ok = fs.valid[r]
                # Skipped rows hold zeros and no frames, as in an extracted store.
                data = {n: np.where(ok[:, None], fs.fixed[n][r], 0) for n in fs.fixed}
                for n, (vals, offs) in fs.ragged.items():
                    segs = [vals[offs[i] : offs[i + 1]] if fs.valid[i] else vals[:0] for i in r]
                    data[n] = (np.concatenate(segs), np.array([len(x) for x in segs], np.int64))
                yield ok, data

        out[feat] = write_store(m, feat, fs.modality, fs.outputs, totals, chunks(), cache, fs.key, fs.config, fmt,
                                skipped=np.asarray(fs.ids)[~fs.valid])
    return out


def write_store(m, feat: str, modality: str, outputs: dict, totals: dict, chunks, cache, synthetic_key: str,
                config: dict | None = None, fmt: str = "zarr", skipped=()) -> Path:
    """One verifiable store for manifest ``m`` (already in the cache), written from
    ``chunks``: (valid [k], {output: [k, D] or (frames, lengths)}) in manifest order, so a
    store bigger than memory (bench/bench_scale.py) is never held whole. ``totals``: frames
    per ragged output; ``skipped``: ids listed in the store's report."""
    import time

    from mer.common.report import Report
    from mer.extract.cache import report_stem, store_key, store_path
    from mer.extract.store import STORE_VERSION, StoreWriter

    config = dict(config or {})
    mh = m.modality_hash(modality)
    identity = {"synthetic": synthetic_key}
    # The key the cache computes from these attributes, so verify_store accepts the store.
    key = store_key(mh, feat, config, identity, "float32")
    outs = {n: {"kind": o["kind"], "dim": int(o["dim"]), "frame_rate": o.get("frame_rate"), "dtype": "float32"}
            for n, o in outputs.items()}
    path = store_path(m.dataset, feat, key, fmt, cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    w = StoreWriter(path, fmt, list(m.df["id"].astype(str)), outs, "float32", totals)
    for ok, data in chunks:
        w.add(ok, data)
    w.finish({"mer_store_version": STORE_VERSION, "dataset": m.dataset, "feature": feat, "key": key,
              "config": config, "identity": identity, "versions": {}, "manifest_hash": mh,
              "modality": modality, "complete": True, "outputs": outs,
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    # Every skipped row is listed in the store's report, as the engine does.
    rep = Report(f"{feat}: synthetic store")
    for u in skipped:
        rep.drop(str(u), None, "synthetic skip", "marked invalid by the test data")
    rep.write(report_stem(path))
    return path


# ----------------------------------------------------------------------------- dialogues
# Synthetic feature-level dialogues whose emotion depends on context (tests, benchmarks, README).
# 
# ``synthetic_dialogues`` makes an IEMOCAP-shaped corpus (sessions, two speakers, dialogues
# of ``turns`` utterances) already as feature sets, like ``synthetic``:
# - the emotion persists over stretches of a dialogue: each utterance keeps the previous
#   one's emotion with probability ``stay``, else a new one is drawn;
# - each modality carries the whole label (one centroid per class plus noise);
# - a share ``context`` of the emotional utterances is neutral in both voice and words
#   (both feature vectors drawn around the neutral centroid) but keeps its stretch's label:
#   only the neighbouring utterances tell what it is.
# An utterance-level model can only call those neutral; a conversation-level model
# (``--context dialog``) can read them from the dialogue. The manifest rows are shuffled and
# carry ``start`` times in the dialogue's timeline, so the temporal order has to be read
# from the manifest, not from row order.
DIALOG_CLASSES = ["ang", "hap", "sad", "neu"]


def dialogue_labels(rng: np.random.Generator, n: int, stay: float, k: int = 4) -> np.ndarray:
    """A Markov chain of class indices: keep the previous label with probability ``stay``."""
    y = np.empty(n, np.int64)
    y[0] = rng.integers(k)
    for i in range(1, n):
        y[i] = y[i - 1] if rng.random() < stay else rng.integers(k)
    return y


def synthetic_dialogues(dialogs_per_session: int = 12, sessions: int = 5, turns: tuple[int, int] = (8, 16),
                        seed: int = 0, text_dim: int = 12, audio_dim: int = 10, noise: float = 0.8,
                        stay: float = 0.85, context: float = 0.4):
    """``(Manifest, {"bert": FeatureSet, "mfcc": FeatureSet})``; fixed outputs ``bert.mean``
    and ``mfcc.pooled``, ragged ``bert.tokens`` and ``mfcc.frames`` around the same values.
    ``context``: share of emotional utterances rendered neutral in both modalities."""
    from mer.common.manifest import Manifest, content_hashes, to_frame

    rng = np.random.default_rng(seed)
    neu = DIALOG_CLASSES.index("neu")
    rows, ys, looks = [], [], []
    for s in range(1, sessions + 1):
        for d in range(dialogs_per_session):
            n = int(rng.integers(turns[0], turns[1] + 1))
            y = dialogue_labels(rng, n, stay)
            t = 0.0
            name = f"Ses{s:02d}{'FM'[d % 2]}_synth{d:03d}"
            for j in range(n):
                g = "FM"[(j + d) % 2]
                hidden = y[j] != neu and rng.random() < context
                dur = float(rng.uniform(1.0, 4.0))
                rows.append({"id": f"{name}_{g}{j:03d}", "dataset": "iemocap", "audio": f"/synthetic/{name}.wav",
                             "start": t, "end": t + dur, "duration": dur, "text": "synthetic",
                             "emotion": DIALOG_CLASSES[y[j]], "speaker": f"Ses{s:02d}_{g}", "gender": g,
                             "session": f"Ses{s:02d}", "dialog": name, "audio_hash": f"{name}_{j}"})
                ys.append(y[j])
                looks.append(neu if hidden else y[j])
                t += dur + float(rng.uniform(0.1, 1.0))
    order = rng.permutation(len(rows))        # manifest order says nothing about time
    rows = [rows[i] for i in order]
    looks = np.asarray(looks)[order]
    df = to_frame(rows)
    man = Manifest(df, {"dataset": "iemocap", **content_hashes(df)}, None)
    ids = df["id"].astype(str).to_numpy()
    n = len(ids)

    def modality(feat, mod, dim, fixed_name, seq_name, offset):
        g = np.random.default_rng(seed + offset)
        cents = g.normal(size=(len(DIALOG_CLASSES), dim))
        cents *= 2.0 / np.linalg.norm(cents, axis=1, keepdims=True)
        pooled = (cents[looks] + noise * rng.normal(size=(n, dim))).astype(np.float32)
        lengths = rng.integers(3, 9, n)
        offs = np.zeros(n + 1, np.int64)
        np.cumsum(lengths, out=offs[1:])
        vals = (np.repeat(pooled, lengths, axis=0) + noise * rng.normal(size=(offs[-1], dim))).astype(np.float32)
        outputs = {fixed_name: {"kind": "fixed", "dim": dim}, seq_name: {"kind": "ragged", "dim": dim}}
        return FeatureSet(feat, mod, ids, outputs, {fixed_name: pooled}, {seq_name: (vals, offs)},
                          key=f"synthetic-dialogues{seed}")

    return man, {"bert": modality("bert", "text", text_dim, "mean", "tokens", 1),
                 "mfcc": modality("mfcc", "audio", audio_dim, "pooled", "frames", 2)}
