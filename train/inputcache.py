"""Content-keyed cache of fine-tuning inputs (``--finetune``): tokenised transcripts and
decoded, resampled audio, so a second fine-tuning run on the same corpus reads them back
instead of tokenising or decoding the corpus again.

An entry is an ordinary mer feature store (``mer.extract.store``: the same writer, the same
per-chunk checksums verified on every read) with one ragged output, under its own folder so
no feature lookup ever takes it for an extracted store::

    <cache>/<dataset>/inputs/<feature>-<key16>.zarr

Its key is ``mer.extract.cache.store_key`` over the manifest's content hash of that modality
(``text_hash``: ids and transcripts; ``audio_hash``: ids, audio content hashes and spans,
not paths), the settings that shape the input (tokenizer max tokens; sample rate, max
seconds, shortest input), and the identity of what produced it (the model folder's hash,
whose tokenizer files are part of it, and library versions), plus ``CACHE_VERSION``. Any
change gives another key: an entry is never reused for other settings. An entry is written
to a temporary name and renamed into place (whole or absent); one that fails its checksums,
or does not match the manifest's rows, is reported, removed and recomputed, never trusted.
Remove them all with ``rm -r <cache>/<dataset>/inputs``.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from mer.common import console, paths
from mer.common.errors import MerError

# Bump when the way inputs are computed changes (tokenisation, decoding, cropping), so no
# entry written by older code is read.
CACHE_VERSION = 1
FORMAT = "zarr"
SUBDIR = "inputs"


@dataclass
class Encoded:
    """One feature's inputs for every manifest row: ragged ``values`` [sum T, 1] float32
    with ``offsets`` [N+1], which rows are usable, and the counts the data report shows
    (JSON-able: cut transcripts, rows without text, undecodable audio...)."""

    ids: np.ndarray
    values: np.ndarray
    offsets: np.ndarray
    valid: np.ndarray
    counts: dict = field(default_factory=dict)
    keep: bool = True   # False: not written to the cache (e.g. some audio failed to decode: retried next run)


def entry_path(dataset: str, feature: str, key: str, cache=None) -> Path:
    from mer.extract.store import STORES

    return paths.dataset_dir(dataset, cache) / SUBDIR / f"{feature}-{key[:16]}{STORES.get(FORMAT).suffix}"


def entry_key(manifest_hash: str, feature: str, settings: dict, identity: dict) -> str:
    from mer.extract.cache import store_key

    return store_key(manifest_hash, f"finetune-input:{feature}", {**settings, "input_cache_version": CACHE_VERSION},
                     identity, "float32")


def cached(build: Callable[[], Encoded], *, dataset: str, cache, feature: str, name: str, manifest_hash: str,
           settings: dict, identity: dict, what: str, ids) -> Encoded:
    """The entry for these keys if a whole, matching one exists; else ``build()``, written
    for the next run. ``name``: the ragged output's name (``token_ids``, ``samples``);
    ``what``: how messages call the inputs; ``ids``: the manifest's row ids, in order."""
    key = entry_key(manifest_hash, feature, settings, identity)
    path = entry_path(dataset, feature, key, cache)
    ids = np.asarray(ids).astype(str)
    if path.exists():
        try:
            enc = _read(path, key, name, ids)
            console.info(f"{feature}: {what} read from the cache ({path})")
            return enc
        except MerError as e:   # StoreCorrupt included: recomputed, never trusted
            console.warn(f"{feature}: cached {what} not used, recomputing: {e}")
            _remove(path)
    enc = build()
    if not enc.keep:
        console.info(f"{feature}: {what} not cached (some rows failed; they are retried next run)")
        return enc
    try:
        _write(path, key, name, enc, feature, settings, identity)
        console.info(f"{feature}: {what} cached for the next run ({path})")
    except (ImportError, OSError, MerError) as e:   # a read-only cache or no store backend: run on, uncached
        console.warn(f"{feature}: {what} not cached ({type(e).__name__}: {e})")
    return enc


def _read(path: Path, key: str, name: str, ids: np.ndarray) -> Encoded:
    from mer.extract.store import open_store

    r = open_store(path)
    a = r.attrs
    if a.get("key") != key or not a.get("complete"):
        raise MerError(f"{path}: not a complete entry for this key")
    stored = r.ids
    if len(stored) != len(ids) or not np.array_equal(stored, ids):
        raise MerError(f"{path}: its {len(stored)} rows are not this manifest's {len(ids)} rows")
    values, offsets = r.read_ragged(name)
    return Encoded(stored, np.asarray(values, np.float32), np.asarray(offsets, np.int64), np.asarray(r.valid, bool),
                   dict(a.get("counts") or {}))


def _write(path: Path, key: str, name: str, enc: Encoded, feature: str, settings: dict, identity: dict) -> None:
    from mer.extract.store import StoreWriter, replace_dir_or_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")   # same folder: the rename is atomic
    outputs = {name: {"kind": "ragged", "dim": 1, "dtype": "float32"}}
    w = StoreWriter(tmp, FORMAT, list(enc.ids), outputs, "float32", {name: len(enc.values)})
    try:
        w.add(enc.valid, {name: (np.asarray(enc.values, np.float32).reshape(-1, 1), np.diff(enc.offsets))})
        w.finish({"key": key, "feature": feature, "complete": True, "outputs": outputs, "counts": enc.counts, "config": settings,
                  "identity": identity, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    except BaseException:
        w.abort()
        raise
    replace_dir_or_file(tmp, path)


def _remove(path: Path) -> None:
    from mer.extract.store import remove_store

    try:
        remove_store(path)
    except OSError as e:
        console.warn(f"{path}: could not remove ({e})")


def versions(*dists: str) -> dict[str, str]:
    """Installed versions of the libraries that shape an input (part of an entry's key)."""
    from importlib import metadata

    out = {}
    for d in dists:
        try:
            out[d] = metadata.version(d)
        except metadata.PackageNotFoundError:
            out[d] = "absent"
    return out
