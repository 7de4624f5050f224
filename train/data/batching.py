"""Padded, masked torch batches: for training (``Batcher``, with bucketing and a
``Prefetcher`` thread); ``outputs_batch`` packs freshly extracted outputs (``mer predict``) and
batches them with the same ``Batcher``."""
from __future__ import annotations

import numpy as np

from mer.common.errors import MerError
from mer.train.data.alignment import Arrays, TrainData
from mer.train.data.normalize import Normalizer
from mer.train.fusion import InputSpec
from mer.train.streaming import StreamedRows

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
                n = np.diff(a.offsets) // max(1, a.step)
                length = np.maximum(length, np.minimum(n, max_len) if max_len and not a.raw else n)
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
        if self.max_len is not None and not a.raw:   # --max-len cuts features, not an encoder's raw input
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


def outputs_batch(feats: list[dict[str, dict]], sources: list[InputSpec], norm: Normalizer, device="cpu",
                  ids: list[str] | None = None) -> dict:
    """A model batch of several utterances from freshly extracted outputs, ``feats[i]`` being
    ``{feature: {output: array}}`` of utterance i (``mer predict``). The outputs are packed
    as the data layer packs a store's and batched by the training ``Batcher``: one batch
    builder, so prediction sees exactly the batches training saw."""
    arrays = {}
    for s in sources:
        xs = []
        for i, f in enumerate(feats):
            if s.output not in f.get(s.feature, {}):
                who = f"{ids[i]}: " if ids else ""
                raise MerError(f"{who}extractor {s.feature!r} gave no output {s.output!r}")
            x = np.asarray(f[s.feature][s.output], np.float32)
            xs.append(x.mean(0) if s.pooled_here else x)
        if s.kind == "fixed":
            arrays[s.key] = Arrays("fixed", fixed=np.stack([x.reshape(-1) for x in xs]))
        else:
            lengths = np.array([len(x) for x in xs], np.int64)
            offsets = np.zeros(len(xs) + 1, np.int64)
            np.cumsum(lengths, out=offsets[1:])
            values = np.concatenate([x.reshape(-1, s.width) for x in xs])
            arrays[s.key] = Arrays("ragged", values=values, offsets=offsets, lengths=lengths)
    n = len(feats)
    names = np.asarray(ids if ids is not None else [str(i) for i in range(n)]).astype(str)
    data = TrainData(names, np.zeros(n, np.int64), [], list(sources), arrays, None)
    batch, _ = Batcher(data, norm, device, bucket=False).batch(np.arange(n))
    return batch


def single_batch(features: dict[str, np.ndarray], sources: list[InputSpec], norm: Normalizer, device="cpu") -> dict:
    """A batch of one utterance from its outputs by output name (``outputs_batch`` of one)."""
    return outputs_batch([{s.feature: features for s in sources}], sources, norm, device)
