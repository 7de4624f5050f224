"""Device choice: ``--device auto|cpu|cuda|cuda:N`` -> a concrete torch device string.

The one place extract and train decide where to compute. ``cuda`` asked for and absent is
an error, never a silent CPU fallback (that would turn a 2-minute GPU job into hours);
``auto`` takes a GPU only when torch sees one. torch is imported only when the answer may
be a GPU: on a machine without an NVIDIA device node ``auto`` is ``cpu`` at once.
"""
from __future__ import annotations

import glob
import os
import sys

from mer.common.errors import UsageError

CHOICES = ("auto", "cpu", "cuda", "cuda:N")


def valid(device: str | None) -> bool:
    d = (device or "auto").strip().lower()
    return d in ("auto", "cpu", "cuda") or d.startswith("cuda:")


def check(device: str | None) -> str:
    """The normalised spelling of ``device``, or a UsageError; imports nothing."""
    d = (device or "auto").strip().lower()
    if not valid(d):
        raise UsageError(f"--device {device!r}: choose auto, cpu, cuda or cuda:N")
    return d


def maybe_gpu() -> bool:
    """False only when there is certainly no NVIDIA GPU (Linux without a device node)."""
    return bool(glob.glob("/dev/nvidia[0-9]*")) or bool(os.environ.get("CUDA_VISIBLE_DEVICES")) or sys.platform != "linux"


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def choose(device: str | None = "auto") -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda[:N]`` checked to exist."""
    d = check(device)
    if d == "cpu":
        return "cpu"
    if d == "auto":
        return "cuda" if (maybe_gpu() and cuda_available()) else "cpu"
    if not cuda_available():
        raise UsageError(
            f"--device {device}: no CUDA GPU is visible to torch here "
            "(use --device cpu, or --device auto to pick a GPU only when there is one)"
        )
    if ":" in d:
        import torch

        idx = d.split(":", 1)[1]
        if not idx.isdigit() or int(idx) >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: there are {torch.cuda.device_count()} CUDA device(s)")
    return d
