"""Corpus adapters: one module per corpus, registered by name.

An adapter is a function ``scan(root: Path, report: Report, **options) -> list[dict]`` that
reads a corpus in its official on-disk layout and returns one dict per utterance with the
manifest columns it knows (see ``mer.common.manifest``). It records what it skips in the
report. Everything shared (label checks, audio checks, hashing, writing, the summary table)
is done once by ``mer.common.datasets.prepare.prepare``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from mer.common.registry import Registry


@dataclass
class Adapter:
    name: str
    scan: Callable
    description: str
    # Whether a missing/unreadable audio file drops the utterance. True for every corpus:
    # a multimodal manifest row needs both modalities.
    needs_audio: bool = True
    # Label schemes and protocols, the contents ``manifests/<name>.yaml`` has for the
    # packaged corpora (see mer.common.schemes): a corpus added as one plugin file carries
    # them here instead.
    spec: dict | None = None


DATASETS: Registry[Adapter] = Registry("dataset", package="mer.common.datasets", marker="@register(")


def register(name: str, description: str, spec: dict | None = None):
    """Decorator for an adapter's scan function; ``spec``: its label schemes and protocols
    when there is no ``manifests/<name>.yaml`` (a plugin corpus, one file)."""

    def deco(fn):
        DATASETS.register(name)(Adapter(name, fn, description, spec=spec))
        return fn

    return deco


def note_unnamed(report, files, named: set, reason: str, key=lambda p: p.name, uid=lambda p: p.stem, detail: str = "") -> None:
    """Count and list media files in a corpus folder that no label row names (the releases
    ship some); they are ignored, never silently."""
    for p in sorted(files):
        if key(p) not in named:
            report.note(uid(p), p, reason, detail)


def media_row(uid: str, audio, src: str, start: float | None = None, end: float | None = None, **columns) -> dict:
    """One manifest row of an utterance whose audio is ``audio`` (the whole file when
    ``start``/``end`` are None, as in MELD's, SLUE's and MMSA's one-clip-per-utterance
    releases); ``columns`` are the label columns, ``src`` where the row was read."""
    nan = float("nan")
    return {"id": uid, "audio": str(audio), "start": nan if start is None else start,
            "end": nan if end is None else end, **columns, "_source": src}


def note_media(report, item: str, label_file, n_missing: int, n_rows: int, rows_are: str, folder, pattern: str,
               named: set, unnamed_reason: str, recursive: bool = False, **unnamed) -> None:
    """After a label file is read: note how many of its rows name a missing media file (the
    audio check drops each of them), and list the media files in ``folder`` that no row
    named (``recursive``: in its subfolders too). ``rows_are`` names both, e.g. "CSV rows
    whose mp4"."""
    if n_missing:
        report.note(item, label_file, f"{rows_are} is missing", f"{n_missing} of {n_rows} rows (dropped by the audio check)")
    if folder.is_dir():
        files = folder.rglob(pattern) if recursive else folder.glob(pattern)
        note_unnamed(report, files, named, unnamed_reason, **unnamed)


def find_one(root, name: str, kind: str = "file"):
    """``root/name`` if it exists, else the first ``name`` below ``root`` (users unpack corpora
    at different depths), or None; ``kind`` "dir" or "file" says which to accept below root.
    The adapter decides what a missing one means (a skipped split, a noted folder)."""
    from pathlib import Path

    root = Path(root)
    direct = root / name
    if direct.exists():
        return direct
    hits = sorted(p for p in root.rglob(name) if (p.is_dir() if kind == "dir" else p.is_file()))
    return hits[0] if hits else None
