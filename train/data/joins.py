"""Combined inputs: ``-f bert,mfcc+egemaps`` joins several stores into one input."""
from __future__ import annotations

import numpy as np

from mer.common.errors import MerError, UsageError
from mer.train.data.requests import JOIN, MEAN_SUFFIX, FeatureRequest
from mer.train.data.stores import (
    PREFERRED_SEQUENCE,
    FeatureCache,
    FeatureSet,
    default_outputs,
    gather_ragged,
    row_means,
)

# Frame sequences joined by time may differ in length by window edges (a few frames); more
# than this means the stores do not describe the same audio.
MAX_SKEW_SECONDS = 1.0


# `-f bert,mfcc+egemaps`: the parts' pooled vectors concatenated into one vector, or their
# frame sequences aligned by time into one sequence (rates must divide the highest one: a
# 50 Hz frame is repeated twice beside 100 Hz frames; from the first frame on, trimmed to
# the shortest part). The join is an in-memory FeatureSet kept in the FeatureCache under the
# joined name, so everything downstream (alignment by id, normalisation, batching, the run's
# config) sees one store; its attrs name the parts, so `mer predict` can rebuild the join.
def _sequence_output(fs: FeatureSet) -> str | None:
    """The store's frame sequence with a frame rate (token sequences have none)."""
    timed = [n for n, m in fs.outputs.items() if m["kind"] == "ragged" and m.get("frame_rate")]
    for p in PREFERRED_SEQUENCE:
        if p in timed:
            return p
    return timed[0] if timed else None


def _part_pick(r: FeatureRequest, p: FeatureRequest, fs: FeatureSet, kind: str | None) -> tuple[str, bool, str]:
    """(output, pool here, kind "fixed"|"ragged") of one part of a combined request."""
    if p.output is not None:
        name, pool = p.output, False
        if name.endswith(MEAN_SUFFIX):
            name, pool = name[: -len(MEAN_SUFFIX)], True
        if name not in fs.outputs:
            raise UsageError(f"--features {r.text}: store {fs.where} has no output {name!r} (it has: {', '.join(fs.outputs)})")
        return name, pool, "fixed" if pool else fs.outputs[name]["kind"]
    if kind == "ragged":
        seq = _sequence_output(fs)
        if seq is None:
            raise UsageError(f"--features {r.text}: {p.feature} has no frame sequence to join by time; "
                             f"join pooled vectors instead (name them, e.g. {p.feature}.{default_outputs(fs, 'pooled')[0][0]})")
        return seq, False, "ragged"
    name, pool = default_outputs(fs, "pooled")[0]
    return name, pool, "fixed"


def _join_kind(r: FeatureRequest, sets: list[FeatureSet], wants: str) -> str:
    """Vectors or sequences: what named outputs say, else sequences when the fusion wants
    them and every part has a timed one, else vectors."""
    named = {_part_pick(r, p, fs, None)[2] for p, fs in zip(r.parts, sets) if p.output is not None}
    if len(named) > 1:
        raise UsageError(f"--features {r.text}: joins a frame sequence with a vector; name outputs of one kind "
                         f"(all pooled, e.g. mfcc.mean+egemaps.functionals, or all frames, e.g. mfcc.frames+egemaps.lld)")
    if named:
        return named.pop()
    if wants != "pooled" and all(_sequence_output(fs) for fs in sets):
        return "ragged"
    return "fixed"


def _part_rows(fs: FeatureSet, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row of each id in the part's store, whether it is there and valid)."""
    import pandas as pd

    pos = pd.Index(fs.ids).get_indexer(ids)
    ok = pos >= 0
    ok[ok] = fs.valid[pos[ok]]
    return np.where(ok, pos, 0), ok



def join_vectors(vectors: list[np.ndarray]) -> np.ndarray:
    """One utterance's (or a batch's) part vectors side by side."""
    return np.concatenate([np.asarray(v, np.float32) for v in vectors], axis=-1)


def join_frames(seqs: list[np.ndarray], repeats: list[int]) -> tuple[np.ndarray, int]:
    """One utterance's part sequences on a common time grid: part i's frames repeated
    ``repeats[i]`` times (its rate times that is the highest rate), all cut to the shortest,
    concatenated per frame. Returns (frames [T, sum D], frames cut off the longest part)."""
    up = [np.repeat(np.asarray(x, np.float32), k, axis=0) if k > 1 else np.asarray(x, np.float32) for x, k in zip(seqs, repeats)]
    n = min(len(x) for x in up)
    return np.concatenate([x[:n] for x in up], axis=1), max(len(x) for x in up) - n


def frame_repeats(r: FeatureRequest, rates: list[float | None], names: list[str]) -> tuple[float, list[int]]:
    """(common rate, repeat factor of each part); refused unless every rate divides the highest."""
    if any(not x for x in rates):
        bad = [n for n, x in zip(names, rates) if not x]
        raise UsageError(f"--features {r.text}: {', '.join(bad)} has no frame rate (tokens?); it cannot be aligned by time")
    top = max(rates)
    reps = [top / x for x in rates]
    bad = [f"{n} {x:g} Hz" for n, x, k in zip(names, rates, reps) if abs(k - round(k)) > 1e-6]
    if bad:
        raise UsageError(f"--features {r.text}: frame rates {', '.join(f'{n} {x:g} Hz' for n, x in zip(names, rates))} "
                         f"do not divide {top:g} Hz ({', '.join(bad)}); join pooled vectors instead")
    return top, [int(round(k)) for k in reps]


def _join_fixed(parts: list[tuple[FeatureSet, str, bool]], ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cols, valid = [], np.ones(len(ids), bool)
    for fs, name, pool in parts:
        rows, ok = _part_rows(fs, ids)
        valid &= ok
        if pool:
            vals, offs = fs.ragged[name]
            n = np.diff(offs)[rows]
            valid &= n > 0
            cols.append(row_means(*gather_ragged(vals, offs, rows)))
        else:
            cols.append(np.asarray(fs.fixed[name][rows], np.float32))
    x = join_vectors(cols)
    x[~valid] = 0.0
    return x, valid


def _join_ragged(r: FeatureRequest, parts: list[tuple[FeatureSet, str, bool]], ids: np.ndarray):
    rates = [fs.outputs[name].get("frame_rate") for fs, name, _ in parts]
    rate, reps = frame_repeats(r, rates, [f"{fs.feature}.{name}" for fs, name, _ in parts])
    located = [_part_rows(fs, ids) for fs, _, _ in parts]
    valid = np.logical_and.reduce([ok for _, ok in located])
    chunks, lengths, cut = [], np.zeros(len(ids), np.int64), []
    for i in np.flatnonzero(valid):
        seqs = []
        for (fs, name, _), (rows, _) in zip(parts, located):
            vals, offs = fs.ragged[name]
            seqs.append(vals[offs[rows[i]] : offs[rows[i] + 1]])
        x, dropped = join_frames(seqs, reps)
        if dropped / rate > MAX_SKEW_SECONDS:
            spans = ", ".join(f"{fs.feature} {len(q) * k / rate:.2f} s" for (fs, _, _), q, k in zip(parts, seqs, reps))
            raise MerError(f"--features {r.text}: utterance {ids[i]}: the parts cover different lengths ({spans}); "
                           "they cannot describe the same audio")
        if len(x) == 0:
            valid[i] = False
            continue
        chunks.append(x)
        lengths[i] = len(x)
        cut.append(dropped)
    dim = sum(fs.outputs[name]["dim"] for fs, name, _ in parts)
    offsets = np.zeros(len(ids) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
    info = {"frame_rate": rate, "repeats": reps, "frames_cut_total": int(sum(cut)), "frames_cut_max": int(max(cut, default=0))}
    return (values, offsets), valid, info


def combined_set(r: FeatureRequest, cache: FeatureCache, wants: str) -> FeatureSet:
    """The in-memory FeatureSet joining ``r.parts`` (output ``pooled`` [sum D] or ``frames``
    [T, sum D]), built once per kind and kept in ``cache`` under the joined name. An
    utterance is valid when every part has it."""
    sets = [cache.get(p.feature) for p in r.parts]
    mods = {fs.modality for fs in sets}
    if len(mods) > 1:
        raise UsageError(f"--features {r.text}: joins inputs of one modality; "
                         + ", ".join(f"{fs.feature} is {fs.modality}" for fs in sets))
    kind = _join_kind(r, sets, wants)
    picks = [_part_pick(r, p, fs, kind) for p, fs in zip(r.parts, sets)]
    parts = [(fs, name, pool) for fs, (name, pool, _) in zip(sets, picks)]
    out_name = "pooled" if kind == "fixed" else "frames"
    ids = sets[0].ids
    fs = cache.sets.get(r.feature)
    if fs is not None and out_name in fs.outputs:
        return fs
    dim = int(sum(s.outputs[name]["dim"] for s, name, _ in parts))
    if kind == "fixed":
        data, valid, info = *_join_fixed(parts, ids), {}
    else:
        data, valid, info = _join_ragged(r, parts, ids)
    meta = {"kind": kind, "dim": dim, "frame_rate": info.get("frame_rate"), "dtype": "float32",
            "description": f"{JOIN.join(f'{s.feature}.{n}' + (MEAN_SUFFIX if pl else '') for s, n, pl in parts)}" }
    record = [{"feature": s.feature, "output": n, "pooled_here": pl, "dim": int(s.outputs[n]["dim"]),
               "frame_rate": s.outputs[n].get("frame_rate"), "key": s.key, "path": s.path, "config": s.config,
               "attrs": {"identity": (s.attrs or {}).get("identity")}} for s, n, pl in parts]
    if fs is None:
        fs = FeatureSet(r.feature, sets[0].modality, ids, {}, valid=valid, key=JOIN.join(s.key for s in sets),
                        config={"combined": [p.text for p in r.parts]}, attrs={"combined": {}})
    else:
        fs.valid = fs.valid & valid
    fs.outputs[out_name] = meta
    fs.attrs["combined"][out_name] = {"parts": record, **{k: v for k, v in info.items() if k != "frame_rate"}}
    if kind == "fixed":
        fs.fixed[out_name] = data
    else:
        fs.ragged[out_name] = data
    cache.sets[r.feature] = fs
    return fs

