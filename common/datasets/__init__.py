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
    # Where ``text`` comes from: "transcript" (what was said), or "scripted" (the acted
    # corpora's fixed sentences, looked up from a code in the file name: the same text under
    # every emotion). Written into the manifest's meta as ``text_kind``.
    text_kind: str = "transcript"


DATASETS: Registry[Adapter] = Registry("dataset", package="mer.common.datasets", marker="@register(")


def register(name: str, description: str, spec: dict | None = None, text_kind: str = "transcript"):
    """Decorator for an adapter's scan function; ``spec``: its label schemes and protocols
    when there is no ``manifests/<name>.yaml`` (a plugin corpus, one file); ``text_kind``:
    see ``Adapter.text_kind``."""

    def deco(fn):
        DATASETS.register(name)(Adapter(name, fn, description, spec=spec, text_kind=text_kind))
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
    if direct.is_dir() if kind == "dir" else direct.is_file():
        return direct
    hits = sorted(p for p in root.rglob(name) if (p.is_dir() if kind == "dir" else p.is_file()))
    return hits[0] if hits else None


def read_csv_rows(path, required=(), what: str = "column(s)"):
    """A corpus CSV with a header as a ``csv.DictReader`` (header names stripped), after
    checking it is UTF-8 and has the ``required`` columns: both fail with ``CorpusError``
    naming the file. ``reader.line_num`` gives each row's line for reports."""
    import csv
    import io
    from pathlib import Path

    from mer.common.errors import CorpusError

    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path}: not UTF-8 (byte {e.start}): {e.reason}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    missing = [c for c in required if c not in header]
    if missing:
        raise CorpusError(f"{path}: missing {what} {', '.join(missing)} (header: {', '.join(header)})")
    return reader

