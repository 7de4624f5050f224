"""The training data layer: feature stores -> aligned in-memory arrays -> padded batches.

Flow:
1. ``parse_features("bert,mfcc.frames")`` -> requests ``(feature, output or None)``.
2. Each named store is read once into a ``FeatureSet`` (ids, validity, fixed arrays,
   ragged values + offsets); a ``FeatureCache`` keeps them so training several fusions or
   feature sets in one ``mer train`` never reads a store twice.
3. ``resolve_inputs`` picks the outputs a fusion wants (pooled vectors or sequences) from
   what each store declares in its metadata: dimensions are never hard-coded.
4. ``build_data`` aligns every input to the labelled utterances of the manifest by id;
   utterances missing from a store (or marked invalid by the extractor) are dropped and
   counted in a ``Report``.
5. Per fold, ``Normalizer.fit`` sees training rows only; ``TrainData.batch`` pads ragged
   inputs per batch and builds their masks (True on real frames).
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mer.common.errors import MerError, UsageError
from mer.common.report import Report
from mer.train.streaming import ChunkedFrames, StreamedRows

# Which fixed output stands for "the pooled vector" of a store when the user names only the
# feature (first match wins); anything else falls back to the store's first fixed output.
PREFERRED_POOLED = ("pooled", "functionals", "utterance", "mean", "cls")
# Likewise for sequences.
PREFERRED_SEQUENCE = ("tokens", "frames", "lld")
# Fixed (pooled) arrays larger than this are spilled to a temporary .npy and memory-mapped.
MMAP_BYTES = int(os.environ.get("MER_MMAP_BYTES", 1 << 30))
# Suffix of an input derived by mean-pooling a ragged output (a store with no fixed output).
MEAN_SUFFIX = "@mean"
# Joins several stores into one input in --features: "bert,mfcc+egemaps".
JOIN = "+"
# Frame sequences joined by time may differ in length by window edges (a few frames); more
# than this means the stores do not describe the same audio.
MAX_SKEW_SECONDS = 1.0


# ----------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class FeatureRequest:
    feature: str
    output: str | None = None   # None = the store's default for what the fusion wants
    # A combined input (``mfcc+egemaps``): the stores joined into one input; ``feature`` is
    # then the joined text, the name of the in-memory set that holds the join.
    parts: tuple["FeatureRequest", ...] = ()

    @property
    def text(self) -> str:
        return self.feature if self.output is None else f"{self.feature}.{self.output}"


def _parse_one(p: str, spec) -> FeatureRequest:
    feat, _, output = p.strip().partition(".")
    if not feat:
        raise UsageError(f"--features: empty feature name in {spec!r}")
    return FeatureRequest(feat, output or None)


def parse_features(spec: str | list[str] | tuple[str, ...]) -> list[FeatureRequest]:
    """``"bert,mfcc.frames"`` -> [FeatureRequest("bert"), FeatureRequest("mfcc", "frames")];
    ``"bert,mfcc+egemaps"`` -> bert and ONE input joining mfcc and egemaps (see
    ``combined_set``)."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[FeatureRequest] = []
    for p in parts:
        p = p.strip()
        if not p:
            continue
        if JOIN in p:
            members = tuple(_parse_one(x, spec) for x in p.split(JOIN))
            if len(set(members)) != len(members):
                raise UsageError(f"--features: {p!r} joins the same input twice")
            r = FeatureRequest(JOIN.join(m.text for m in members), None, members)
        else:
            r = _parse_one(p, spec)
        if r in out:
            raise UsageError(f"--features: {r.text!r} is named twice in {spec!r}")
        out.append(r)
    if not out:
        raise UsageError("--features: no feature named")
    return out


# ----------------------------------------------------------------------------- feature sets
@dataclass
class FeatureSet:
    """One store's content in memory: what the store reader fills, and what tests build.

    ``outputs`` is the store's metadata {name: {"kind", "dim", ...}}; ``fixed[name]`` is
    ``[N, D]``; ``ragged[name]`` is ``(values [sum T, D], offsets [N+1])``.
    """

    feature: str
    modality: str
    ids: np.ndarray
    outputs: dict[str, dict]
    fixed: dict[str, np.ndarray] = field(default_factory=dict)
    ragged: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    valid: np.ndarray | None = None
    key: str = ""
    config: dict = field(default_factory=dict)
    path: str | None = None
    attrs: dict = field(default_factory=dict)

    def __post_init__(self):
        self.ids = np.asarray(self.ids).astype(str)
        if self.valid is None:
            self.valid = np.ones(len(self.ids), bool)
        self.valid = np.asarray(self.valid, bool)
        if len(self.valid) != len(self.ids):
            raise MerError(f"store {self.where}: {len(self.valid)} validity flags for {len(self.ids)} ids")
        for name, arr in self.fixed.items():
            self._check(name, "fixed", arr.shape)
        for name, (vals, offs) in self.ragged.items():
            self._check(name, "ragged", vals.shape)
            if len(offs) != len(self.ids) + 1 or int(offs[-1]) != len(vals):
                raise MerError(
                    f"store {self.where}: output {name!r} has {len(offs)} offsets ending at {int(offs[-1])} "
                    f"for {len(self.ids)} ids and {len(vals)} rows"
                )

    @property
    def where(self) -> str:
        return self.path or self.feature

    def _check(self, name: str, kind: str, shape) -> None:
        meta = self.outputs.get(name)
        if meta is None:
            raise MerError(f"store {self.where}: output {name!r} is not declared in its metadata")
        if meta["kind"] != kind:
            raise MerError(f"store {self.where}: output {name!r} is declared {meta['kind']}, holds {kind} data")
        if len(shape) != 2 or shape[1] != int(meta["dim"]):
            raise MerError(f"store {self.where}: output {name!r} must have dimension {meta['dim']}, not {tuple(shape)}")
        if kind == "fixed" and shape[0] != len(self.ids):
            raise MerError(f"store {self.where}: output {name!r} has {shape[0]} rows for {len(self.ids)} ids")

    # What a store holds, in the reader's terms -------------------------------------
    def has(self, name: str) -> bool:
        return name in self.fixed or name in self.ragged

    @classmethod
    def from_store(cls, path, outputs: list[str] | None = None) -> "FeatureSet":
        """Read a store written by mer.extract (only the named outputs, or all of them)."""
        from mer.extract.store import open_store

        reader = open_store(path)
        attrs = dict(reader.attrs)
        decl = dict(attrs.get("outputs") or {})
        names = list(decl) if outputs is None else outputs
        fixed, ragged = {}, {}
        for name in names:
            if name not in decl:
                raise MerError(f"store {path}: no output {name!r} (it has: {', '.join(decl)})")
            if decl[name]["kind"] == "fixed":
                fixed[name] = _materialize(reader.read_fixed(name), f"{Path(path).name}.{name}")
            else:   # frame/token sequences stay in the store, read by chunks as batches need them
                ragged[name] = (ChunkedFrames(path, f"{name}/values"), np.asarray(reader.read_offsets(name), np.int64))
        return cls(
            feature=attrs.get("feature", Path(path).name.split("-")[0]),
            modality=attrs.get("modality", "audio"),
            ids=np.asarray(reader.ids),
            outputs=decl,
            fixed=fixed,
            ragged=ragged,
            valid=np.asarray(reader.valid, bool),
            key=str(attrs.get("key", "")),
            config=dict(attrs.get("config") or {}),
            path=str(path),
            attrs=attrs,
        )


def _materialize(arr, label: str) -> np.ndarray:
    """(Fixed outputs: pooled vectors, which training keeps in memory.)
    numpy arrays pass through; lazy (zarr/h5) arrays above MMAP_BYTES are copied in
    chunks to a temporary .npy and memory-mapped, smaller ones are read into memory."""
    if isinstance(arr, np.ndarray):
        return arr
    shape = tuple(arr.shape)
    dtype = np.dtype(arr.dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if nbytes <= MMAP_BYTES:
        return np.asarray(arr[...])
    fd, tmp = tempfile.mkstemp(prefix=f"mer-{label}-", suffix=".npy")
    os.close(fd)
    mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
    step = max(1, (64 << 20) // max(1, dtype.itemsize * int(np.prod(shape[1:]))))
    for a in range(0, shape[0], step):
        mm[a : a + step] = arr[a : a + step]
    mm.flush()
    del mm
    out = np.load(tmp, mmap_mode="r")
    os.unlink(tmp)  # the mapping keeps the data alive on POSIX; nothing is left behind
    return out


class FeatureCache:
    """Feature sets loaded once per ``mer train`` and shared by every fusion/feature set.

    ``sets`` can be pre-filled with in-memory FeatureSets (tests, benchmarks); otherwise
    stores are found with ``mer.extract.cache.find_store`` for the current manifest.
    """

    def __init__(self, dataset: str, cache=None, manifest=None, sets: dict[str, FeatureSet] | None = None,
                 where: dict[str, dict] | None = None):
        self.dataset = dataset
        self.cache = cache
        self.manifest = manifest
        self.sets: dict[str, FeatureSet] = dict(sets or {})
        self.where = dict(where or {})   # feature -> {config field: value} its store must have
        self.load_seconds = 0.0

    def get(self, feature: str) -> FeatureSet:
        if feature not in self.sets:
            import time

            t0 = time.perf_counter()
            try:
                from mer.extract.cache import find_store
            except ImportError as e:
                raise MerError(f"feature stores cannot be read: mer.extract.cache is missing ({e})") from None
            path = find_store(self.dataset, feature, cache=self.cache, manifest=self.manifest,
                              where=self.where.get(feature))
            self.sets[feature] = FeatureSet.from_store(path)
            self.load_seconds += time.perf_counter() - t0
        return self.sets[feature]


# ----------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class InputSource:
    """Where one model input comes from: a store output, maybe mean-pooled."""

    key: str            # the batch key, "<feature>.<output>" (+ "@mean" when pooled here)
    feature: str
    output: str
    kind: str           # kind as the model sees it: "fixed" | "ragged"
    dim: int
    modality: str
    pooled_here: bool = False   # a ragged output averaged over frames to make a vector
    layers: int = 1             # hidden states stacked along dim (a --<feature>.layer all store)


def _default_outputs(fs: FeatureSet, wants: str) -> list[tuple[str, bool]]:
    """(output, pool_here) pairs a fusion gets when the user names only the feature."""
    fixed = [n for n, m in fs.outputs.items() if m["kind"] == "fixed"]
    ragged = [n for n, m in fs.outputs.items() if m["kind"] == "ragged"]

    def pick(names, preferred):
        for p in preferred:
            if p in names:
                return p
        return names[0] if names else None

    pooled, seq = pick(fixed, PREFERRED_POOLED), pick(ragged, PREFERRED_SEQUENCE)
    out: list[tuple[str, bool]] = []
    if wants in ("pooled", "both"):
        if pooled is not None:
            out.append((pooled, False))
        elif seq is not None:  # e.g. mel: frames only -> averaged over frames (recorded in config)
            out.append((seq, True))
    if wants in ("sequence", "both"):
        if seq is not None:
            if (seq, False) not in out:
                out.append((seq, False))
        elif pooled is not None and (pooled, False) not in out:
            out.append((pooled, False))
    if not out:
        raise MerError(f"store {fs.where} declares no outputs")
    return out


def resolve_inputs(requests: list[FeatureRequest], cache: FeatureCache, wants: str = "pooled") -> list[InputSource]:
    """Turn ``--features`` requests into model inputs, dimensions from store metadata."""
    if wants not in ("pooled", "sequence", "both"):
        raise MerError(f"fusion declares wants={wants!r}; expected pooled, sequence or both")
    out: list[InputSource] = []
    for r in requests:
        fs = combined_set(r, cache, wants) if r.parts else cache.get(r.feature)
        if r.output is not None:
            name = r.output
            pool = False
            if name.endswith(MEAN_SUFFIX):
                name, pool = name[: -len(MEAN_SUFFIX)], True
            if name not in fs.outputs:
                raise UsageError(
                    f"--features {r.text}: store {fs.where} has no output {name!r} (it has: {', '.join(fs.outputs)})"
                )
            pairs = [(name, pool)]
        else:
            pairs = _default_outputs(fs, wants)
        for name, pool in pairs:
            meta = fs.outputs[name]
            kind = "fixed" if pool else meta["kind"]
            key = f"{fs.feature}.{name}" + (MEAN_SUFFIX if pool else "")
            if pool and meta["kind"] != "ragged":
                raise UsageError(f"--features {r.text}: {name!r} is already a fixed vector; drop {MEAN_SUFFIX}")
            out.append(InputSource(key, fs.feature, name, kind, int(meta["dim"]), fs.modality, pool,
                                   int(meta.get("layers") or 1)))
    keys = [s.key for s in out]
    if len(set(keys)) != len(keys):
        raise UsageError(f"--features names the same input twice: {', '.join(keys)}")
    return out


# ----------------------------------------------------------------------------- combined inputs
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
                             f"join pooled vectors instead (name them, e.g. {p.feature}.{_default_outputs(fs, 'pooled')[0][0]})")
        return seq, False, "ragged"
    name, pool = _default_outputs(fs, "pooled")[0]
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


def row_means(values, offsets: np.ndarray) -> np.ndarray:
    """Mean frame of every packed row (float64 sums; an empty row gives zeros) -> [N, D]
    float32. Streamed values are read row by row (in store order: chunk after chunk)."""
    n = np.diff(offsets)
    out = np.zeros((len(n), values.shape[1]), np.float64)
    full = n > 0
    if isinstance(values, np.ndarray):
        if full.any():  # reduceat over the non-empty rows' starts: each runs to the next one
            out[full] = np.add.reduceat(np.asarray(values, np.float64), offsets[:-1][full], axis=0)
    else:
        for r in np.flatnonzero(full):
            out[r] = np.asarray(values[offsets[r] : offsets[r + 1]], np.float64).sum(0)
    out[full] /= n[full][:, None]
    return out.astype(np.float32)


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
            cols.append(row_means(*_gather_ragged(vals, offs, rows)))
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


def input_specs(sources: list[InputSource]):
    from mer.train.fusion import InputSpec

    # A stack of hidden states reaches the model as their learned mix: one layer's width.
    return [InputSpec(s.key, s.kind, s.dim // s.layers, s.modality, s.layers) for s in sources]


# ----------------------------------------------------------------------------- aligned data
@dataclass
class Arrays:
    """One input aligned to the dataset rows: fixed [N, D] or ragged values + offsets."""

    kind: str
    fixed: np.ndarray | None = None
    values: np.ndarray | None = None
    offsets: np.ndarray | None = None    # [N+1] into values
    lengths: np.ndarray | None = None


@dataclass
class TrainData:
    """Labelled utterances with every input aligned by id (rows = utterances)."""

    ids: np.ndarray
    y: np.ndarray                      # int class index, or float target for regression
    classes: list[str]
    sources: list[InputSource]
    arrays: dict[str, Arrays]
    meta: "object"                      # pandas DataFrame of the manifest rows (same order)
    regression: bool = False
    # How audio was cut to text tokens for models that align them (mer.train.wordalign):
    # written to the run's config.yaml as audio_to_tokens; None for other models.
    alignment: dict | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def specs(self):
        return input_specs(self.sources)


def _gather_ragged(values, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-pack the ragged rows ``rows`` (in that order) contiguously; returns (values, offsets).
    Values streamed from a store (``ChunkedFrames``) are not copied: the result is a
    ``StreamedRows`` view that reads them by chunks when sliced."""
    starts, ends = offsets[rows], offsets[rows + 1]
    lengths = (ends - starts).astype(np.int64)
    new_off = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lengths, out=new_off[1:])
    if isinstance(values, ChunkedFrames):
        return StreamedRows(values, starts, lengths), new_off
    if len(rows) and np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows))):
        return values[starts[0] : ends[-1]], new_off  # already contiguous: a view (keeps memmaps mapped)
    idx = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)]) if len(rows) else np.zeros(0, np.int64)
    return np.asarray(values[idx]), new_off


def build_data(manifest_df, labels, classes: list[str], sources: list[InputSource], cache: FeatureCache,
               regression: bool = False, report: Report | None = None) -> TrainData:
    """Align every input to the manifest rows that have a label; drop (and report) the rest."""
    import pandas as pd

    df = manifest_df.reset_index(drop=True)
    # Multi-target regression: a DataFrame of targets; a row is labelled when all are there.
    multi = isinstance(labels, pd.DataFrame)
    labels = labels.reset_index(drop=True) if multi else pd.Series(labels).reset_index(drop=True)
    report = report if report is not None else Report("training data")
    has_label = labels.notna().all(axis=1).to_numpy() if multi else labels.notna().to_numpy()
    report.counts["manifest utterances"] = int(len(df))
    report.counts["without a label under the scheme"] = int((~has_label).sum())
    keep = has_label.copy()
    ids = df["id"].astype(str).to_numpy()
    rows_of: dict[str, np.ndarray] = {}
    for feat in dict.fromkeys(s.feature for s in sources):
        fs = cache.get(feat)
        pos = pd.Index(fs.ids).get_indexer(ids)
        ok = pos >= 0
        ok_valid = ok.copy()
        ok_valid[ok] = fs.valid[pos[ok]]
        for i in np.flatnonzero(keep & ~ok):
            report.drop(ids[i], fs.where, "missing from feature store", feat)
        for i in np.flatnonzero(keep & ok & ~ok_valid):
            report.drop(ids[i], fs.where, "skipped by extractor", feat)
        keep &= ok_valid
        rows_of[feat] = pos
    sel = np.flatnonzero(keep)
    if len(sel) == 0:
        raise MerError("no labelled utterance has every requested feature; see the run's data report")
    if regression:
        y = labels.iloc[sel].astype(float).to_numpy(np.float32, copy=True)   # [n] or [n, targets]; writable for torch
    else:
        cidx = {c: i for i, c in enumerate(classes)}
        lab = labels.iloc[sel].astype(str).to_numpy()
        unknown = sorted(set(lab) - set(cidx))
        if unknown:
            raise MerError(f"labels {unknown} are not among the scheme's classes {classes}")
        y = np.array([cidx[v] for v in lab], np.int64)
    arrays: dict[str, Arrays] = {}
    for s in sources:
        fs = cache.get(s.feature)
        rows = rows_of[s.feature][sel]
        if s.kind == "fixed" and not s.pooled_here:
            arrays[s.key] = Arrays("fixed", fixed=np.ascontiguousarray(fs.fixed[s.output][rows], dtype=np.float32))
            continue
        vals, offs = fs.ragged[s.output]
        v, o = _gather_ragged(vals, offs, rows)
        lengths = np.diff(o)
        empty = np.flatnonzero(lengths == 0)
        if len(empty):
            # An empty sequence has nothing to attend to; say so instead of producing NaNs.
            raise MerError(f"store {fs.where}: output {s.output!r} is empty for utterance {ids[sel][empty[0]]} "
                           f"({len(empty)} such); re-extract or drop them")
        if s.pooled_here:
            arrays[s.key] = Arrays("fixed", fixed=row_means(v, o))
        else:
            arrays[s.key] = Arrays("ragged", values=v, offsets=o, lengths=lengths)
    report.counts["used for training"] = int(len(sel))
    return TrainData(ids[sel], y, list(classes), list(sources), arrays, df.iloc[sel].reset_index(drop=True), regression)


# ----------------------------------------------------------------------------- normalisation
@dataclass
class Normalizer:
    """Per-input z-scoring; statistics fitted on training rows only (per fold)."""

    stats: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    eps: float = 1e-6

    @classmethod
    def fit(cls, data: TrainData, rows: np.ndarray) -> "Normalizer":
        stats = {}
        for key, a in data.arrays.items():
            if a.kind == "fixed":
                x = np.asarray(a.fixed[rows], np.float64)
                mean, var = x.mean(0), x.var(0)
            else:  # every frame of every training utterance, accumulated in one pass
                d = a.values.shape[1]
                s1, s2, n = np.zeros(d), np.zeros(d), 0
                for r in rows:
                    seg = np.asarray(a.values[a.offsets[r] : a.offsets[r + 1]], np.float64)
                    s1 += seg.sum(0)
                    s2 += (seg * seg).sum(0)
                    n += len(seg)
                mean = s1 / max(n, 1)
                var = np.maximum(s2 / max(n, 1) - mean * mean, 0.0)
            std = np.sqrt(var)
            # Constant dimensions stay constant (0) instead of being blown up by 1/eps.
            std = np.where(std < 1e-8, 1.0, std)
            stats[key] = (mean.astype(np.float32), std.astype(np.float32))
        return cls(stats)

    def apply_np(self, key: str, x: np.ndarray) -> np.ndarray:
        mean, std = self.stats[key]
        return ((np.asarray(x, np.float32) - mean) / std).astype(np.float32)

    def tensors(self) -> dict[str, np.ndarray]:
        out = {}
        for k, (m, s) in self.stats.items():
            out[f"norm/{k}/mean"] = m
            out[f"norm/{k}/std"] = s
        return out

    @classmethod
    def from_tensors(cls, t: dict[str, np.ndarray]) -> "Normalizer":
        stats: dict[str, list] = {}
        for name, v in t.items():
            if name.startswith("norm/"):
                key, which = name[5:].rsplit("/", 1)
                stats.setdefault(key, [None, None])[0 if which == "mean" else 1] = np.asarray(v, np.float32)
        return cls({k: (m, s) for k, (m, s) in stats.items()})


# ----------------------------------------------------------------------------- batching
def pad_ragged(segments: list[np.ndarray], dim: int, max_len: int | None = None):
    """Zero-pad a list of [T_i, D] arrays to [B, T, D] plus a [B, T] bool mask (numpy)."""
    lengths = np.array([len(s) for s in segments], np.int64)
    if max_len is not None:
        lengths = np.minimum(lengths, max_len)
    T = int(lengths.max()) if len(lengths) else 0
    x = np.zeros((len(segments), max(T, 1), dim), np.float32)
    mask = np.zeros((len(segments), max(T, 1)), bool)
    for i, (s, n) in enumerate(zip(segments, lengths)):
        x[i, :n] = s[:n]
        mask[i, :n] = True
    return x, mask


# Batches drawn from a pool of this many batches are grouped by length (see Batcher.order).
BUCKET_POOL = 32
# Streamed inputs: shuffled in runs of this many rows that lie together in the store.
STORE_RUN = 16
# Batches built ahead, in a background thread, while the model computes (Prefetcher).
PREFETCH = 2
# Default cap on a batch's padded frames (rows x longest sequence). The mel CNN's 32-channel
# full-resolution maps cost about 100 KB of saved activations per frame in training; at 4,096
# frames a step is also faster than at 8,192 (its maps stay closer to the caches): one LOSO
# fold of attention with mel frames took 10.1 s and 1.41 GB peak against 13.9 s and 1.66 GB,
# weighted with MFCC frames 2.3 s against 3.6 s (bench/RESULTS.md). Batches of short
# utterances still get batch_size rows.
BATCH_FRAMES = 4096


class Batcher:
    """Builds torch batches for one fold: normalised fixed inputs are prepared once as
    tensors; ragged inputs are normalised, padded and masked per batch (a vectorised copy:
    about 1% of a mel-CNN step).

    ``bucket=True`` (the default) groups rows of similar length into the same batch, so a
    batch pads little: with IEMOCAP's 1-15 s utterances a random batch of 64 pads to about
    2.5x its real frames, and the convolutions and masked statistics pay for every padded
    frame (bench/RESULTS.md). The models are mask-aware, so a given batch's outputs do not
    depend on its padding; what bucketing changes is which rows share a batch, as shuffling
    does. ``--no-bucket`` restores plain shuffled batches.
    """

    def __init__(self, data: TrainData, norm: Normalizer, device="cpu", max_len: int | None = None,
                 bucket: bool = True, batch_frames: int | None = BATCH_FRAMES):
        import torch

        self.data, self.norm, self.device, self.max_len, self.bucket = data, norm, device, max_len, bucket
        self.batch_frames = batch_frames or None
        self._fixed = {
            k: torch.from_numpy(norm.apply_np(k, a.fixed)).to(device)
            for k, a in data.arrays.items() if a.kind == "fixed"
        }
        self._y = torch.from_numpy(data.y).to(device)
        # A row's length: its longest ragged input (capped); what padding and the frame budget count.
        length = np.zeros(len(data), np.int64)
        for a in data.arrays.values():
            if a.kind == "ragged":
                n = np.diff(a.offsets)
                length = np.maximum(length, np.minimum(n, max_len) if max_len else n)
        self.length = length if length.any() else None
        # Inputs read from the store by chunks: shuffled pools are cut from runs of rows that
        # lie together in the store, and a pool holds no more frames than their chunk caches.
        self.streamed = [a.values for a in data.arrays.values() if a.kind == "ragged" and isinstance(a.values, StreamedRows)]
        self.pool_rows = None
        for v in self.streamed:
            row_bytes = max(1, int(v.shape[0] * v.shape[1] * v.dtype.itemsize) // max(1, len(v.starts)))
            fit = max(2, v.frames.cache_bytes // row_bytes // 2)   # half the cache: room for the next pool's first chunks
            self.pool_rows = fit if self.pool_rows is None else min(self.pool_rows, fit)

    def batch(self, rows: np.ndarray) -> tuple[dict, "object"]:
        import torch

        rows = np.ascontiguousarray(rows, np.int64)   # torch refuses views with negative strides
        t_rows = torch.from_numpy(rows).to(self.device)
        out = {k: v.index_select(0, t_rows) for k, v in self._fixed.items()}
        for k, a in self.data.arrays.items():
            if a.kind != "ragged":
                continue
            x, m = self._pad(a, k, rows)
            out[k] = self._to_device(torch.from_numpy(x))
            out[k + ".mask"] = self._to_device(torch.from_numpy(m))
        return out, self._y.index_select(0, t_rows)

    def _to_device(self, t):
        """To the training device; on a GPU through pinned memory, copied asynchronously (the
        prefetching thread pins the next batch while the GPU computes)."""
        if str(self.device).startswith("cuda"):
            return t.pin_memory().to(self.device, non_blocking=True)
        return t

    def _pad(self, a: Arrays, key: str, rows: np.ndarray):
        """Normalised, zero-padded ``[B, T, D]`` and mask of ``rows`` (same as pad_ragged of
        the normalised segments, in one normalisation and one scatter)."""
        mean, std = self.norm.stats[key]
        starts = a.offsets[rows]
        n = a.offsets[rows + 1] - starts
        if self.max_len is not None:
            n = np.minimum(n, self.max_len)
        T = max(int(n.max()) if len(n) else 0, 1)
        mask = np.arange(T)[None, :] < n[:, None]
        x = np.zeros((len(rows), T, a.values.shape[1]), np.float32)
        if n.sum():
            if isinstance(a.values, StreamedRows):   # read from the store by chunks
                block = np.asarray(a.values.take(rows, n), np.float32)
            else:
                src = (starts[:, None] + np.arange(T)[None, :])[mask]        # frame indices, row-major
                lo, hi = int(src.min()), int(src.max()) + 1
                if hi - lo <= 4 * len(src):   # one contiguous read (memmap-friendly), then gather
                    block = np.asarray(a.values[lo:hi], np.float32)[src - lo]
                else:
                    block = np.asarray(a.values[src], np.float32)
            x[mask] = (block - mean) / std
        return x, mask

    def order(self, rows: np.ndarray, batch_size: int, shuffle: bool, rng: np.random.Generator | None):
        """The batches (arrays of rows) of one pass over ``rows``.

        Shuffled + bucketed: shuffle, cut into pools of ``BUCKET_POOL`` batches, sort each
        pool by length (stable), cut into batches, shuffle the batches. Not shuffled
        (evaluation): sorted by length when bucketing; callers restore row order. A batch
        holds at most ``batch_size`` rows and, when bucketing, at most ``batch_frames`` padded
        frames (but at least 2 rows, for batch norm), so memory does not follow the longest
        utterance of the corpus.
        """
        rows = np.asarray(rows, np.int64)
        rng = rng or np.random.default_rng()
        pool = batch_size * BUCKET_POOL
        if shuffle and self.streamed:
            rows, pool = self._store_local(rows, pool, rng)
        elif shuffle:
            rows = rows[rng.permutation(len(rows))]
        if not self.bucket or self.length is None:
            return [rows[a : a + batch_size] for a in range(0, len(rows), batch_size)]
        if not shuffle:
            return self._cut(rows[np.argsort(self.length[rows], kind="stable")], batch_size)
        batches = []
        for p in range(0, len(rows), pool):
            chunk = rows[p : p + pool]
            batches += self._cut(chunk[np.argsort(self.length[chunk], kind="stable")], batch_size)
        if len(batches) > 1 and len(batches[-1]) < 2:   # a batch of one breaks batch norm
            batches[-2] = np.concatenate([batches[-2], batches.pop()])
        return [batches[i] for i in rng.permutation(len(batches))]

    def _store_local(self, rows: np.ndarray, pool: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Shuffled rows for streamed inputs: runs of ``STORE_RUN`` rows that lie together in
        the store, the runs in random order, and a pool size whose frames fit the chunk
        caches: each pool then decodes its chunks about once (a random order would decode a
        chunk once per row in it). Rows within a pool are mixed by the length sort and the
        batch shuffle; the pools still draw from all over the corpus."""
        pool = max(2, min(pool, self.pool_rows or pool))
        ordered = self.streamed[0].store_order(rows)
        runs = [ordered[a : a + STORE_RUN] for a in range(0, len(ordered), STORE_RUN)]
        rows = np.concatenate([runs[i] for i in rng.permutation(len(runs))]) if runs else ordered
        return rows, pool

    def _cut(self, rows: np.ndarray, batch_size: int) -> list[np.ndarray]:
        """Consecutive batches of length-sorted ``rows`` within the row and frame budgets."""
        out, a, n = [], 0, len(rows)
        L = self.length[rows]
        while a < n:
            b = min(a + batch_size, n)
            if self.batch_frames:
                # sorted ascending: rows a..b-1 pad to L[b-1]; shrink until within the budget
                while b - a > 2 and (b - a) * int(L[b - 1]) > self.batch_frames:
                    b -= 1
                b = max(b, min(a + 2, n))
            if n - b == 1:   # never leave a batch of one behind (batch norm)
                b = n
            out.append(rows[a:b])
            a = b
        return out

    def iterate(self, rows: np.ndarray, batch_size: int, shuffle: bool = False, rng: np.random.Generator | None = None):
        """(rows, batch, targets) of one pass; batches are built ``PREFETCH`` ahead in a thread
        (reading and decoding chunks, padding: numpy and the codecs release the GIL)."""
        order = self.order(rows, batch_size, shuffle, rng)
        yield from Prefetcher(lambda r: (r, *self.batch(r)), order, PREFETCH)


class Prefetcher:
    """``make(item)`` for every item, in order, computed up to ``depth`` items ahead by one
    background thread. An exception there is raised here, at the item that failed; leaving
    the loop early stops the thread."""

    def __init__(self, make, items, depth: int = PREFETCH):
        self.make, self.items, self.depth = make, list(items), max(1, int(depth))

    def __iter__(self):
        import queue
        import threading

        q: queue.Queue = queue.Queue(self.depth)
        stop = threading.Event()
        end = object()

        def work():
            try:
                for it in self.items:
                    if stop.is_set():
                        return
                    q.put((True, self.make(it)))
                q.put((True, end))
            except BaseException as e:   # handed to the consumer, raised there
                q.put((False, e))

        th = threading.Thread(target=work, name="mer-prefetch", daemon=True)
        th.start()
        try:
            while True:
                ok, v = q.get()
                if not ok:
                    raise v
                if v is end:
                    return
                yield v
        finally:
            stop.set()
            while th.is_alive():   # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    th.join(0.05)


def single_batch(features: dict[str, np.ndarray], sources: list[InputSource], norm: Normalizer, device="cpu") -> dict:
    """A batch of one utterance from freshly extracted outputs (``mer predict``)."""
    import torch

    out = {}
    for s in sources:
        x = np.asarray(features[s.output], np.float32)
        if s.pooled_here:
            x = x.mean(0)
        if s.kind == "fixed":
            out[s.key] = torch.from_numpy(norm.apply_np(s.key, x.reshape(1, -1))).to(device)
        else:
            x, m = pad_ragged([norm.apply_np(s.key, x)], s.dim)
            out[s.key] = torch.from_numpy(x).to(device)
            out[s.key + ".mask"] = torch.from_numpy(m).to(device)
    return out
