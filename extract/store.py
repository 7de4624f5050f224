"""Feature stores: one small writer/reader interface, formats found through one registry.

Each format is one file that registers a ``StoreFormat`` subclass with the ``STORES`` registry
(``mer.extract.store_zarr``: Zarr v3, ``mer.extract.store_hdf5``: HDF5); a new backend is a new
file, found by the registry, and becomes a ``--format`` choice with no other edit.

Layout (the same names in both formats; readable with plain ``zarr`` or ``h5py``)::

    <feature>-<key16>.zarr/  (or .h5)
      attrs: mer_store_version, dataset, feature, key, config, identity, versions,
             manifest_hash, modality, n, complete, outputs, created, dtype, checksums
      ids                [N]        utterance ids, in manifest order (strings)
      valid              [N]        bool; False = row skipped (reason in <store>.report.json)
      <fixed>            [N, D]     one vector per utterance (e.g. mfcc/mean)
      <ragged>/values    [sum T, D] every utterance's frames, concatenated in row order
      <ragged>/offsets   [N+1]      int64; row i is values[offsets[i]:offsets[i+1]]

Skipped rows hold zeros in fixed arrays and zero frames in ragged ones. Arrays are chunked
by rows (about 1-4 MB per chunk) and compressed: Blosc/Zstd (byte shuffle) in Zarr; gzip +
shuffle in HDF5, because Blosc in HDF5 needs the hdf5plugin filter on every reader's side
and the layout promises plain ``h5py``. In HDF5, dict-valued attributes are JSON strings.

Writes are sequential and chunk-aligned (one writer, the engine's driver): this sidesteps the
zarr sharding trap (unaligned concurrent writes losing rows) entirely; no sharding is used.
"""
from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from mer.common.errors import MerError
from mer.common.registry import Registry

# 2: per-chunk checksums (``chunk_checksums``, ``chunk_rows``) verified wherever data is read,
# and the cache key covers the row limits (``limits``, e.g. --max-seconds).
STORE_VERSION = 2
# Storage dtypes of float outputs (``--dtype``); integer outputs keep their own.
DTYPES = ("float32", "float16")
CHUNK_BYTES = 2 << 20          # target bytes per chunk (uncompressed)
JSON_ATTRS = ("config", "identity", "versions", "outputs", "checksums", "chunk_checksums", "chunk_rows", "limits", "failed")

STORES: Registry[type["StoreFormat"]] = Registry("store format", package="mer.extract", marker="STORES.register",
                                                 name_attr="name")


def chunk_rows(dim: int, itemsize: int, total: int) -> int:
    return int(max(1, min(max(total, 1), CHUNK_BYTES // max(1, dim * itemsize))))


class StoreFormat(ABC):
    """A store format: how to create, write and open one store on disk."""

    name: str
    suffix: str
    # Whether the backend's arrays may be read from several threads at once (dask): h5py's
    # may not, so its dask arrays read under a lock.
    thread_safe: bool = True

    # -- writing -----------------------------------------------------------------------------
    def __init__(self, path: Path, mode: str):
        self.path = Path(path)
        self.mode = mode

    @abstractmethod
    def create_array(self, name: str, shape: tuple, dtype, chunks: tuple) -> None:
        ...

    @abstractmethod
    def write(self, name: str, sl: slice, data: np.ndarray) -> None:
        ...

    @abstractmethod
    def set_attrs(self, attrs: dict) -> None:
        ...

    # -- reading -----------------------------------------------------------------------------
    @abstractmethod
    def get_attrs(self) -> dict:
        ...

    @abstractmethod
    def array(self, name: str):
        """The backend's lazy array object (zarr.Array / h5py.Dataset): supports slicing."""

    @abstractmethod
    def has(self, name: str) -> bool:
        ...

    def close(self) -> None:
        pass

    @staticmethod
    @abstractmethod
    def remove(path: Path) -> None:
        ...

    @staticmethod
    def looks_written(path: Path) -> bool:
        """Whether ``path`` holds this format's own metadata (so mer wrote it, even if it no
        longer opens): a folder that merely has the right name ending does not."""
        return Path(path).is_file()


def jsonable(d: Any):
    if isinstance(d, dict):
        return {str(k): jsonable(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [jsonable(v) for v in d]
    if isinstance(d, np.generic):
        return d.item()
    return d


def format_for(path) -> type[StoreFormat]:
    p = Path(path)
    for name in STORES.names():
        f = STORES.get(name)
        if p.name.endswith(f.suffix):
            return f
    raise MerError(f"{path}: not a feature store (expected a name ending in {suffixes()})")


def suffixes() -> str:
    """``.zarr or .h5``: the registered formats' name endings, for messages."""
    return " or ".join(STORES.get(n).suffix for n in STORES.names())


def remove_store(path) -> None:
    format_for(path).remove(Path(path))


class _Appender:
    """Sequential, chunk-aligned writes of rows into one array (bounded memory)."""

    def __init__(self, write, name: str, chunk: int, dtype):
        self.write, self.name, self.chunk, self.dtype = write, name, chunk, np.dtype(dtype)
        self.pos = 0
        self.buf: list[np.ndarray] = []
        self.nbuf = 0

    def add(self, rows: np.ndarray) -> None:
        if len(rows) == 0:
            return
        self.buf.append(rows)
        self.nbuf += len(rows)
        if self.nbuf >= self.chunk:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if not self.buf:
            return
        data = np.concatenate(self.buf) if len(self.buf) > 1 else self.buf[0]
        n = len(data) if final else (len(data) // self.chunk) * self.chunk
        if n:
            self.write(self.name, slice(self.pos, self.pos + n), data[:n].astype(self.dtype, copy=False))
            self.pos += n
        rest = data[n:]
        self.buf = [rest] if len(rest) else []
        self.nbuf = len(rest)

    def close(self) -> int:
        self._flush(final=True)
        return self.pos


class StoreWriter:
    """Writes one complete store sequentially: create, add rows in order, finish.

    ``outputs``: name -> {"kind", "dim", "frame_rate", "dtype"}; ``totals``: ragged output
    name -> sum of frame counts (known before writing, so arrays get their exact shapes).
    """

    def __init__(self, path, fmt: str, ids: list[str], outputs: dict[str, dict], dtype: str, totals: dict[str, int]):
        clash = sorted(set(outputs) & {"ids", "valid"})
        if clash:
            raise MerError(f"{path}: output name(s) {clash} clash with the store's own arrays")
        self.path = Path(path)
        self.cls = STORES.get(fmt)
        self.cls.remove(self.path)
        self.f = self.cls(self.path, "w")
        self.n = len(ids)
        self.outputs = outputs
        self.dtype = np.dtype(dtype)
        # Checksums of exactly what goes to disk, in write order; finish() compares them with a
        # full read-back, so a lost or mangled row can never be marked complete.
        self.hashers: dict[str, Any] = {}
        self.chunk_rows: dict[str, int] = {}
        self.chunk_sums: dict[str, list[str]] = {}
        self._create("ids", (self.n,), str, (max(1, self.n),))
        self._write("ids", slice(0, self.n), np.asarray(ids, dtype=str))
        self._create("valid", (self.n,), bool, (max(1, self.n),))
        self.app: dict[str, _Appender] = {}
        self.offsets: dict[str, np.ndarray] = {}
        for name, o in outputs.items():
            d = int(o["dim"])
            # Float outputs are stored in the run's dtype; others (token ids) as declared.
            dt = np.dtype(o.get("dtype") or dtype)
            if o["kind"] == "fixed":
                c = chunk_rows(d, dt.itemsize, self.n)
                self._create(name, (self.n, d), dt, (c, d))
                self.app[name] = _Appender(self._write, name, c, dt)
            else:
                t = int(totals[name])
                c = chunk_rows(d, dt.itemsize, t)
                self._create(f"{name}/values", (t, d), dt, (c, d))
                self._create(f"{name}/offsets", (self.n + 1,), np.int64, (max(1, self.n + 1),))
                self.app[name] = _Appender(self._write, f"{name}/values", c, dt)
                self.offsets[name] = np.zeros(self.n + 1, np.int64)
        self.valid = np.zeros(self.n, bool)
        self.row = 0

    def _create(self, name, shape, dtype, chunks) -> None:
        self.f.create_array(name, shape, dtype, chunks)
        h = hashlib.blake2b(digest_size=16)
        h.update(repr(tuple(int(x) for x in shape)).encode())
        self.hashers[name] = h
        self.chunk_rows[name] = int(chunks[0])
        self.chunk_sums[name] = []

    def _write(self, name, sl, data) -> None:
        self.hashers[name].update(_bytes(data))
        # Writes start on a chunk boundary and cover whole chunks (the last may be short):
        # one checksum per chunk, what a reader of that chunk checks.
        c = self.chunk_rows[name]
        assert sl.start % c == 0, (name, sl, c)
        for a in range(0, len(data), c):
            self.chunk_sums[name].append(chunk_sum(data[a : a + c]))
        self.f.write(name, sl, data)

    def checksums(self) -> dict[str, str]:
        """Checksums of what was written (valid after finish())."""
        return {k: h.hexdigest() for k, h in self.hashers.items()}

    def add(self, valid: np.ndarray, data: dict[str, Any]) -> None:
        """Add the next ``len(valid)`` rows. ``data[name]``: [b, D] for fixed outputs,
        (values [sum t, D], lengths [b]) for ragged ones."""
        b = len(valid)
        self.valid[self.row : self.row + b] = valid
        for name, o in self.outputs.items():
            if o["kind"] == "fixed":
                self.app[name].add(np.asarray(data[name]))
            else:
                values, lengths = data[name]
                self.app[name].add(np.asarray(values))
                off = self.offsets[name]
                off[self.row + 1 : self.row + b + 1] = off[self.row] + np.cumsum(lengths)
        self.row += b

    def finish(self, attrs: dict) -> None:
        if self.row != self.n:
            raise MerError(f"{self.path}: {self.row} rows written, expected {self.n}")
        for name, a in self.app.items():
            n = a.close()
            o = self.outputs[name]
            if o["kind"] == "ragged":
                if n != self.offsets[name][-1]:
                    raise MerError(f"{self.path}: {name} has {n} frames written, offsets say {self.offsets[name][-1]}")
                self._write(f"{name}/offsets", slice(0, self.n + 1), self.offsets[name])
            elif n != self.n:
                raise MerError(f"{self.path}: {name} has {n} rows written, expected {self.n}")
        self._write("valid", slice(0, self.n), self.valid)
        self.f.set_attrs({**attrs, "mer_store_version": STORE_VERSION, "n": self.n, "dtype": str(self.dtype),
                          "checksums": self.checksums(), "chunk_rows": self.chunk_rows, "chunk_checksums": self.chunk_sums})
        self.f.close()

    def abort(self) -> None:
        try:
            self.f.close()
        finally:
            self.cls.remove(self.path)


def set_attrs(path, attrs: dict) -> None:
    """Update root attributes of an existing store (used to mark it complete)."""
    cls = format_for(path)
    f = cls(Path(path), "r+")
    try:
        f.set_attrs(attrs)
    finally:
        f.close()


class StoreCorrupt(MerError):
    """Stored bytes differ from what was written (checksum mismatch, undecodable chunk)."""


class StoreReader:
    """Read a store, every byte checked against the checksums written at finalize.

    The stable reading API (training's loaders use only this):
      ``.attrs``, ``.n``, ``.ids``, ``.valid``, ``.outputs`` (name -> kind/dim/...),
      ``arrays()`` (stored array paths), ``chunk_rows(path)`` (rows per chunk),
      ``read(path, start, stop)`` (rows of any array), ``read_fixed(name[, start, stop])``,
      ``read_ragged(name)`` -> (values, offsets), ``read_offsets(name)``,
      ``read_ragged_rows(name, start, stop)`` -> (values of those rows, offsets from 0).
    Every read covers whole chunks and checks each one's checksum; a mismatch (or a chunk
    the backend cannot decode) raises ``StoreCorrupt`` naming the store, the array and the
    chunk, and the command that rebuilds it. ``to_dask``/``to_xarray`` are unchecked views
    for those who prefer them (``mer cache verify`` checks a whole store).
    """

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.exists():
            raise MerError(f"no feature store at {self.path}")
        self.format = format_for(self.path)
        try:
            self._f = self.format(self.path, "r")
            self.attrs = self._f.get_attrs()
        except MerError:
            raise
        except Exception as e:
            raise MerError(f"{self.path}: cannot open feature store ({type(e).__name__}: {e})") from None
        v = self.attrs.get("mer_store_version")
        if v != STORE_VERSION:
            if isinstance(v, int) and v < STORE_VERSION:
                raise MerError(f"{self.path}: written by an older mer (store version {v}, without per-chunk checksums); "
                               f"{self.rebuild_hint()}")
            raise MerError(f"{self.path}: not a mer feature store (mer_store_version {v!r})")
        self.outputs: dict[str, dict] = dict(self.attrs.get("outputs") or {})
        self._sums: dict = self.attrs.get("chunk_checksums") or {}
        self._rows: dict = self.attrs.get("chunk_rows") or {}
        self._ids = None
        self._valid = None

    def rebuild_hint(self) -> str:
        a = getattr(self, "attrs", {}) or {}
        ds, feat = a.get("dataset") or self.path.parent.parent.name, a.get("feature") or self.path.name.rsplit("-", 1)[0]
        return f"rebuild it with `mer cache rm {self.path} -y && mer extract --dataset {ds} --features {feat}`"

    # -- checked reading -------------------------------------------------------------------
    def chunk_rows(self, path: str) -> int:
        return int(self._rows.get(path) or 1)

    def _bad(self, path: str, k: int, why: str) -> StoreCorrupt:
        c = self.chunk_rows(path)
        return StoreCorrupt(f"{self.path}: array {path!r}, chunk {k} (rows {k * c}-{(k + 1) * c - 1}): {why}; "
                            f"the store is corrupt, {self.rebuild_hint()}")

    def read(self, path: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) of the stored array ``path``, after checking every chunk they touch."""
        if path not in self._sums:
            raise MerError(f"{self.path}: no checksums recorded for array {path!r}; {self.rebuild_hint()}")
        try:
            a = self._f.array(path)
            n = int(a.shape[0]) if a.shape else 0
        except Exception as e:
            raise self._bad(path, 0, f"cannot open ({type(e).__name__}: {str(e)[:160]})") from None
        stop = n if stop is None else min(int(stop), n)
        start = max(0, int(start))
        if stop <= start:
            return self._read_block(a, path, 0, 0)[:0]
        c = self.chunk_rows(path)
        sums = self._sums[path]
        if len(sums) != -(-n // c):
            raise self._bad(path, 0, f"{n} rows need {-(-n // c)} chunk checksums, {len(sums)} are recorded")
        k0, k1 = start // c, -(-stop // c)
        blocks = []
        for k in range(k0, k1):
            x = self._read_block(a, path, k * c, min(n, (k + 1) * c))
            if chunk_sum(x) != sums[k]:
                raise self._bad(path, k, "checksum differs from the one recorded when the store was written")
            blocks.append(x)
        x = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
        return x[start - k0 * c : stop - k0 * c]

    def _read_block(self, a, path, s, e) -> np.ndarray:
        try:
            x = np.asarray(a[s:e])
        except Exception as ex:  # e.g. "error during blosc decompression" from a flipped byte
            c = self.chunk_rows(path)
            raise self._bad(path, s // c, f"cannot be decoded ({type(ex).__name__}: {str(ex)[:160]})") from None
        if x.dtype.kind in "OT":  # zarr 3's StringDType / h5py objects -> "<U"
            x = np.array(x.tolist(), dtype=str)
        return x

    @property
    def ids(self) -> np.ndarray:
        if self._ids is None:
            self._ids = np.asarray(self.read("ids"), dtype=str)
        return self._ids

    @property
    def valid(self) -> np.ndarray:
        if self._valid is None:
            self._valid = np.asarray(self.read("valid"), dtype=bool)
        return self._valid

    @property
    def n(self) -> int:
        return int(self.attrs["n"])

    def _spec(self, name: str, kind: str) -> dict:
        o = self.outputs.get(name)
        if o is None:
            raise MerError(f"{self.path}: no output {name!r}; it has: {', '.join(self.outputs)}")
        if o["kind"] != kind:
            raise MerError(f"{self.path}: output {name!r} is {o['kind']}, not {kind}")
        return o

    def read_fixed(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        self._spec(name, "fixed")
        return self.read(name, start, stop)

    def read_ragged(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        self._spec(name, "ragged")
        return self.read(f"{name}/values"), self.read_offsets(name)

    def read_offsets(self, name: str) -> np.ndarray:
        self._spec(name, "ragged")
        return np.asarray(self.read(f"{name}/offsets"), dtype=np.int64)

    def read_ragged_rows(self, name: str, start: int, stop: int, offsets: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Frames of rows [start, stop): (values, offsets starting at 0). Pass ``offsets``
        (from ``read_offsets``) when reading many row ranges, to read them once."""
        off = self.read_offsets(name) if offsets is None else offsets
        a, b = int(off[start]), int(off[stop])
        return self.read(f"{name}/values", a, b), off[start : stop + 1] - a

    def array(self, path: str) -> "CheckedArray":
        """A lazy view of the stored array ``path`` (e.g. "frames/values"): ``.shape``,
        ``.dtype``, and slicing by rows, every read checked like ``read``."""
        return CheckedArray(self, path)

    def raw(self, path: str):
        """The backend's own lazy array (zarr.Array or h5py.Dataset): NOT checked."""
        return self._f.array(path)

    def arrays(self) -> list[str]:
        names = ["ids", "valid"]
        for n, o in self.outputs.items():
            names += [n] if o["kind"] == "fixed" else [f"{n}/values", f"{n}/offsets"]
        return names

    def to_dask(self, path: str):
        """A dask array over one stored array (no data read until computed; not checked)."""
        import dask.array as da

        a = self.raw(path)
        chunks = getattr(a, "chunks", None) or "auto"
        return da.from_array(a, chunks=chunks, lock=not self.format.thread_safe)

    def to_xarray(self):
        """An xarray Dataset backed by dask arrays: fixed outputs as (utt, dim) variables with
        ids as the ``utt`` coordinate; ragged outputs as ``<name>_values`` (frame, dim) and
        ``<name>_offsets`` (utt_edge)."""
        import xarray as xr

        data = {"valid": (("utt",), self.to_dask("valid"))}
        for n, o in self.outputs.items():
            if o["kind"] == "fixed":
                data[n] = (("utt", f"{n}_dim"), self.to_dask(n))
            else:
                data[f"{n}_values"] = ((f"{n}_frame", f"{n}_dim"), self.to_dask(f"{n}/values"))
                data[f"{n}_offsets"] = (("utt_edge",), self.to_dask(f"{n}/offsets"))
        attrs = {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in self.attrs.items()}
        return xr.Dataset(data, coords={"utt": self.ids}, attrs=attrs)

    def checksums(self) -> dict[str, str]:
        return {name: c for name, (c, _) in self.scan().items()}

    def scan(self) -> dict[str, tuple[str, int]]:
        """Array name -> (whole-array checksum, NaN/inf count), from one checked read of
        every array (StoreCorrupt at the first bad chunk)."""
        return {name: self.scan_array(name) for name in self.arrays()}

    def scan_array(self, name: str) -> tuple[str, int]:
        """(checksum, NaN/inf count) of one array, read once in blocks of whole chunks."""
        a = self._f.array(name)
        n = int(a.shape[0]) if a.shape else 0
        h = hashlib.blake2b(digest_size=16)
        h.update(repr(tuple(int(x) for x in a.shape)).encode())
        bad = 0
        c = self.chunk_rows(name)
        step = max(c, block_rows(a) // c * c)
        for s in range(0, n, step):
            x = self.read(name, s, s + step)
            h.update(_bytes(x))
            if x.dtype.kind == "f":
                bad += int(x.size - np.count_nonzero(np.isfinite(x)))
        return h.hexdigest(), bad

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class CheckedArray:
    """Row-sliceable view of one stored array whose reads are checksum-checked
    (``x[a:b]``, ``x[i]``, ``x[a:b, cols]``, ``x[...]``, ``np.asarray(x)``)."""

    def __init__(self, reader: StoreReader, path: str):
        self.reader, self.path = reader, path
        raw = reader.raw(path)
        self.shape = tuple(int(x) for x in raw.shape)
        self.dtype = np.dtype(raw.dtype) if np.dtype(raw.dtype).kind not in "OT" else np.dtype(str)
        self.ndim = len(self.shape)
        self.chunks = (reader.chunk_rows(path), *self.shape[1:])

    def __len__(self) -> int:
        return self.shape[0] if self.shape else 0

    def __getitem__(self, key):
        rest = ()
        if isinstance(key, tuple):
            key, rest = (key[0], key[1:]) if key else (slice(None), ())
        if key is Ellipsis:
            key = slice(None)
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            x = self.reader.read(self.path, i, i + 1)[0]
            return x[rest] if rest else x
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError(f"{self.path}: index rows with a slice or an integer, not {key!r}")
        a, b, _ = key.indices(len(self))
        x = self.reader.read(self.path, a, b)
        return x[(slice(None), *rest)] if rest else x

    def __array__(self, dtype=None, copy=None):
        x = self.reader.read(self.path)
        return x.astype(dtype) if dtype is not None else x


def _bytes(x: np.ndarray) -> bytes:
    """The bytes a checksum covers: the values as stored; strings with one terminator each,
    so the result does not depend on how the array was cut into blocks."""
    x = np.asarray(x)
    if x.dtype.kind in "UOT":
        return "".join(f"{s}\x1f" for s in x.tolist()).encode()
    return np.ascontiguousarray(x).tobytes()


def chunk_sum(x: np.ndarray) -> str:
    """Checksum of one chunk's rows (blake2b, 64 bits: a corruption check, not a signature)."""
    return hashlib.blake2b(_bytes(x), digest_size=8).hexdigest()


def block_rows(a, target: int = 4 << 20) -> int:
    """Rows per read-back block: about ``target`` bytes, a whole number of chunks."""
    row = int(np.prod(a.shape[1:], dtype=np.int64)) * max(1, np.dtype(a.dtype).itemsize if a.dtype.kind not in "OT" else 64)
    chunk = (getattr(a, "chunks", None) or (1,))[0] or 1
    return int(max(chunk, (target // max(1, row)) // chunk * chunk))


def open_store(path) -> StoreReader:
    return StoreReader(path)


def replace_dir_or_file(tmp: Path, final: Path) -> None:
    """Move a finished store into place atomically (rename on the same file system)."""
    if final.exists():
        format_for(final).remove(final)
    os.replace(tmp, final)
