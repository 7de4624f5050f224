"""Frame and token sequences read from a feature store's chunks as batches need them.

A corpus's frame sequences outgrow memory long before they outgrow disk (MOSEI's 22,856
utterances as 100 Hz mel frames are about 4 GB in float32), so training never loads them
whole. Two views, both row-sliceable like the numpy arrays they stand in for:

- ``ChunkedFrames``: one stored ragged ``values`` array, read through the store's checked
  view (``mer.extract.store.CheckedArray``: every chunk checksum-checked) one whole chunk at a time, the decoded chunks kept in a
  least-recently-used cache bounded in bytes (``MER_STREAM_CACHE_MB``, default 128 per array).
- ``StreamedRows``: the rows of a ``ChunkedFrames`` that a training set uses, in its own
  order, seen as if they were packed contiguously (what ``mer.train.data.Arrays`` holds:
  ``values[offsets[r]:offsets[r + 1]]`` is row r), so everything downstream slices it as
  before. ``take(rows, n)`` gathers a batch's frames.

What stays in memory is what must: ids, labels, offsets and pooled vectors. The batcher
orders shuffled rows so a pool of batches touches a bounded set of chunks
(``Batcher.order``), and builds the next batch in a background thread while the model
computes on the current one (``mer.train.data.Prefetcher``). A forked training worker
reopens the store in its own process (``os.getpid`` check): handles are not shared.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict

import numpy as np

CACHE_BYTES = int(float(os.environ.get("MER_STREAM_CACHE_MB", 128)) * 2**20)


class ChunkedFrames:
    """Rows ``[a, b)`` of one stored 2-D array, decoded chunk by chunk, LRU-cached."""

    ndim = 2

    def __init__(self, store_path, array: str, cache_bytes: int = CACHE_BYTES):
        self.store_path, self.array = str(store_path), array
        self._view, self._pid = self._open(), os.getpid()
        self.shape = self._view.shape
        self.dtype = self._view.dtype
        self.chunk = self._view.chunks[0]
        chunk_bytes = self.chunk * int(np.prod(self.shape[1:])) * self.dtype.itemsize
        self.chunk_bytes = max(1, chunk_bytes)
        self.capacity = max(2, int(cache_bytes) // self.chunk_bytes)   # chunks kept decoded
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.decoded = 0   # chunks read and checked so far (tests and benchmarks look at it)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def cache_bytes(self) -> int:
        return self.capacity * self.chunk_bytes

    def _open(self):
        """The store's one checked view of the array (every read checksum-checked)."""
        from mer.extract.store import CheckedArray, StoreReader

        return CheckedArray(StoreReader(self.store_path), self.array)

    def view(self):
        if self._pid != os.getpid():   # a forked worker: its own handle, its own cache
            self._view, self._pid = self._open(), os.getpid()
            self._cache, self._lock, self.decoded = OrderedDict(), threading.Lock(), 0
        return self._view

    def _chunk(self, k: int) -> np.ndarray:
        view = self.view()
        with self._lock:
            x = self._cache.get(k)
            if x is not None:
                self._cache.move_to_end(k)
                return x
        x = view[k * self.chunk : (k + 1) * self.chunk]
        with self._lock:
            self._cache[k] = x
            self.decoded += 1
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return x

    def range(self, a: int, b: int) -> np.ndarray:
        if b <= a:
            return np.zeros((0, *self.shape[1:]), self.dtype)
        k0, k1 = a // self.chunk, (b - 1) // self.chunk
        parts = [self._chunk(k) for k in range(k0, k1 + 1)]
        x = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return x[a - k0 * self.chunk : b - k0 * self.chunk]

    def __getitem__(self, key):
        if isinstance(key, slice) and key.step in (None, 1):
            a, b, _ = key.indices(len(self))
            return self.range(a, b)
        raise TypeError(f"{self.store_path}:{self.array}: slice rows with [a:b], not {key!r}")

    def __array__(self, dtype=None, copy=None):
        x = self.range(0, len(self))
        return x.astype(dtype) if dtype is not None else x


class StreamedRows:
    """The rows ``(starts[i], lengths[i])`` of a ``ChunkedFrames``, in this order, as one
    virtual packed array of ``sum(lengths)`` frames."""

    ndim = 2

    def __init__(self, frames: ChunkedFrames, starts: np.ndarray, lengths: np.ndarray):
        self.frames = frames
        self.starts = np.asarray(starts, np.int64)
        self.lengths = np.asarray(lengths, np.int64)
        self.offsets = np.zeros(len(self.starts) + 1, np.int64)
        np.cumsum(self.lengths, out=self.offsets[1:])
        self.shape = (int(self.offsets[-1]), *frames.shape[1:])
        self.dtype = frames.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        if not (isinstance(key, slice) and key.step in (None, 1)):
            raise TypeError(f"{self.frames.store_path}: slice streamed frames with [a:b], not {key!r}")
        a, b, _ = key.indices(len(self))
        if b <= a:
            return np.zeros((0, *self.shape[1:]), self.dtype)
        r0 = int(np.searchsorted(self.offsets, a, side="right")) - 1
        r1 = int(np.searchsorted(self.offsets, b - 1, side="right")) - 1
        parts = []
        for r in range(r0, r1 + 1):
            lo, hi = max(a, self.offsets[r]), min(b, self.offsets[r + 1])
            s = self.starts[r] + (lo - self.offsets[r])
            parts.append(self.frames.range(int(s), int(s + hi - lo)))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def take(self, rows: np.ndarray, n: np.ndarray) -> np.ndarray:
        """The first ``n[i]`` frames of each row ``rows[i]``, concatenated in that order."""
        parts = [self.frames.range(int(self.starts[r]), int(self.starts[r] + k)) for r, k in zip(rows, n)]
        return np.concatenate(parts) if parts else np.zeros((0, *self.shape[1:]), self.dtype)

    def __array__(self, dtype=None, copy=None):
        x = self.take(np.arange(len(self.starts)), self.lengths)
        return x.astype(dtype) if dtype is not None else x

    def store_order(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` sorted by where they lie in the store (for chunk-local batch pools)."""
        rows = np.asarray(rows, np.int64)
        return rows[np.argsort(self.starts[rows], kind="stable")]
