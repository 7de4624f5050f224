"""Shared plumbing for the neural extractors (bert, openl3, dvector, wav2vec).

- ``resolve_dtype`` / ``autocast``: fp16/bf16 on CUDA only; CPU always computes in fp32.
- ``OOMBatcher``: runs a function over sub-batches and halves the sub-batch size on CUDA
  out-of-memory, retrying the same items; the smaller size sticks for the rest of the run.
- ``hash_files`` / ``hash_model_dir``: content hashes of weight files for the store key, so two
  encoders (or two versions of one) never share a store.
- ``shared_model``: one loaded model per (key, device) per process, so a Dask worker that runs
  many tasks loads each model once.

The neural extractors' base class is ``mer.extract.neural.NeuralExtractor``; the device is
chosen by ``mer.common.device.choose`` (the one device choice of extract and train).

torch is imported inside functions: importing this module stays cheap.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

import numpy as np

from mer.common.errors import MerError, UsageError

T = TypeVar("T")
R = TypeVar("R")

# --------------------------------------------------------------------------- dtypes


DTYPES = ("auto", "float32", "float16", "bfloat16")


def resolve_dtype(device: str, dtype: str = "auto"):
    """The compute dtype: fp32 on CPU; on CUDA ``auto`` is bf16 where supported, else fp16."""
    import torch

    dtype = (dtype or "auto").lower()
    if dtype not in DTYPES:
        raise UsageError(f"dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if not str(device).startswith("cuda"):
        if dtype in ("float16", "bfloat16"):
            # Half precision on CPU is slow and changes results; refuse rather than surprise.
            raise UsageError(f"dtype {dtype} is for GPUs only; on CPU the neural extractors compute in float32")
        return torch.float32
    if dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]


def autocast(device: str, dtype) -> Any:
    """Mixed precision on CUDA for half dtypes; a no-op context otherwise (CPU stays fp32)."""
    import torch

    if str(device).startswith("cuda") and dtype in (torch.float16, torch.bfloat16):
        return torch.autocast("cuda", dtype=dtype)
    return nullcontext()


def dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


# --------------------------------------------------------------------------- OOM-retry batching


def is_oom(exc: BaseException) -> bool:
    """True for CUDA out-of-memory (torch raises OutOfMemoryError; older paths a RuntimeError)."""
    import torch

    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    msg = str(exc)
    # cuBLAS/cuDNN report a failed workspace allocation in their own words.
    return "CUDA out of memory" in msg or "CUBLAS_STATUS_ALLOC_FAILED" in msg or "CUDNN_STATUS_ALLOC_FAILED" in msg


class OOMBatcher:
    """Apply ``fn`` to consecutive sub-batches of ``items``, halving the size on GPU OOM.

    ``fn(sub_batch) -> list`` must return one result per item. On out-of-memory the cache is
    emptied and the *same* items are retried at half the size; the reduced size is kept for
    later calls (the next batch would fail the same way). At size 1 the error is re-raised as a
    MerError naming the first item (``describe`` turns an item into a name for the message).
    """

    def __init__(self, batch_size: int, describe: Callable[[Any], str] = str, what: str = "batch"):
        if batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.describe = describe
        self.what = what
        self.shrinks: list[tuple[int, int]] = []   # (from, to), for reports

    def __call__(self, fn: Callable[[list[T]], list[R]], items: Sequence[T]) -> list[R]:
        out: list[R] = []
        i = 0
        items = list(items)
        while i < len(items):
            chunk = items[i : i + self.batch_size]
            oom = False
            try:
                res = fn(chunk)
            except BaseException as e:  # noqa: BLE001 - only OOM is handled, the rest re-raised
                if not is_oom(e):
                    raise
                oom = True
            if oom:
                # Outside the except block: the exception's traceback (and the activations its
                # frames hold) is gone, so empty_cache can really return the memory.
                _empty_cache()
                if self.batch_size == 1:
                    raise MerError(
                        f"{self.describe(chunk[0])}: out of GPU memory even with a {self.what} size of 1 "
                        "(use --device cpu or a GPU with more memory)"
                    ) from None
                new = max(1, self.batch_size // 2)
                logging.getLogger("mer.extract").warning(
                    "out of GPU memory at a %s size of %d; retrying with %d", self.what, self.batch_size, new
                )
                self.shrinks.append((self.batch_size, new))
                self.batch_size = new
                continue
            if len(res) != len(chunk):
                raise RuntimeError(f"batch function returned {len(res)} results for {len(chunk)} items")
            out.extend(res)
            i += len(chunk)
        return out


def _empty_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def length_sorted(lengths: Sequence[int]) -> np.ndarray:
    """Indices that sort items by length, longest first (stable), so padding per batch is small
    and an OOM shows up on the first sub-batch rather than late in the run."""
    return np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")


# --------------------------------------------------------------------------- hashing weights

WEIGHT_PATTERNS = (
    "*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack",
    "config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt", "*.model",
    "added_tokens.json",
)
_HASH_CACHE: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def hash_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """blake2b of one file's bytes, memoised per (real path, size, mtime) within the process:
    identity() is called for every store key and a large checkpoint should be read once."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    with _HASH_LOCK:
        if key in _HASH_CACHE:
            return _HASH_CACHE[key]
    from mer.common.audio import file_hash  # the one content hash of the project

    d = file_hash(p, chunk)
    with _HASH_LOCK:
        _HASH_CACHE[key] = d
    return d


def hash_files(paths: Iterable[str | os.PathLike], root: str | os.PathLike | None = None) -> str:
    """One hash over (relative name, content hash) of each file, in name order."""
    items = []
    for p in paths:
        name = os.path.relpath(p, root) if root else os.path.basename(p)
        items.append((name, hash_file(p)))
    h = hashlib.blake2b(digest_size=16)
    for name, d in sorted(items):
        h.update(f"{name}\0{d}\n".encode())
    return h.hexdigest()


def model_files(model_dir: str | os.PathLike) -> list[Path]:
    """The files of a model directory that change its outputs: weights, config, tokenizer."""
    import fnmatch

    d = Path(model_dir)
    out = []
    for p in sorted(d.rglob("*")):
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(d).parts):
            continue
        if any(fnmatch.fnmatch(p.name, pat) for pat in WEIGHT_PATTERNS):
            out.append(p)
    return out


def hash_model_dir(model_dir: str | os.PathLike) -> str:
    files = model_files(model_dir)
    if not files:
        raise MerError(f"{model_dir}: no weight or config files found in this model directory")
    return hash_files(files, root=model_dir)


def resolve_hf_model(model: str, option: str) -> Path:
    """A Hugging Face model id or a local directory -> a local directory, never downloading.

    Ids are looked up in the user's Hugging Face cache only (``local_files_only``), so the
    user does not need HF_HUB_OFFLINE and nothing is fetched at run time.
    """
    p = Path(model).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise MerError(f"{option} {model}: directory has no config.json (not a Hugging Face model directory)")
        return p.resolve()
    if p.exists():
        raise MerError(f"{option} {model}: is a file; pass a model directory or a Hugging Face model id")
    # "org/name" is an id; anything else with a slash, or starting like a path, was meant as one.
    looks_like_path = model.startswith((".", "/", "~")) or model.count("/") > 1
    try:
        from huggingface_hub import snapshot_download

        d = snapshot_download(model, local_files_only=True)
    except Exception:  # noqa: BLE001 - every failure here means "not in the local cache"
        what = "directory does not exist and it is not" if looks_like_path else "it is not"
        raise MerError(
            f"{option} {model}: model not found locally ({what} in the Hugging Face cache); download it with "
            f"`huggingface-cli download {model}` on a machine with internet, or pass a local directory"
        ) from None
    d = Path(d)
    if not (d / "config.json").is_file():
        raise MerError(f"{option} {model}: the cached snapshot {d} has no config.json (incomplete download?)")
    return d


@contextmanager
def quiet_transformers():
    """Hide transformers' per-load progress bar: it would garble mer's own progress bars."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


# --------------------------------------------------------------------------- one model per worker

_MODELS: dict[tuple, Any] = {}
_MODELS_LOCK = threading.Lock()


def shared_model(key: tuple, loader: Callable[[], T]) -> T:
    """Load once per process and reuse: Dask runs many tasks per worker process, and loading a
    model per task would cost more than the inference. ``key`` must include the device."""
    with _MODELS_LOCK:
        if key in _MODELS:
            return _MODELS[key]
        obj = loader()
        _MODELS[key] = obj
        return obj


@contextmanager
def inference(device: str, dtype):
    """inference_mode plus autocast on CUDA half dtypes."""
    import torch

    with torch.inference_mode(), autocast(device, dtype):
        yield


def pooled_stats(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) standard deviation over frames, float32."""
    f = frames.astype(np.float64)
    return f.mean(axis=0).astype(np.float32), f.std(axis=0).astype(np.float32)
