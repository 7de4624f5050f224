"""Feature stores in memory: one ``FeatureSet`` per store (ids, validity, fixed arrays,
ragged values + offsets), read once per ``mer train`` through a ``FeatureCache``; what a
store offers when the user names only the feature (``default_outputs``); and the packed
ragged arrays' two operations (``gather_ragged``, ``row_means``)."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mer.common.errors import MerError
from mer.train.streaming import ChunkedFrames, StreamedRows

# Which fixed output stands for "the pooled vector" of a store when the user names only the
# feature (first match wins); anything else falls back to the store's first fixed output.
PREFERRED_POOLED = ("pooled", "functionals", "utterance", "mean", "cls")
# Likewise for sequences.
PREFERRED_SEQUENCE = ("tokens", "frames", "lld")
# Fixed (pooled) arrays larger than this are spilled to a temporary .npy and memory-mapped.
MMAP_BYTES = int(os.environ.get("MER_MMAP_BYTES", 1 << 30))


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



def default_outputs(fs: FeatureSet, wants: str) -> list[tuple[str, bool]]:
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



def gather_ragged(values, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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

