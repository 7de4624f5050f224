"""Shared pieces of the acted corpora (CREMA-D, RAVDESS, EmoDB): every label sits in the
file name, and the texts are the corpus's fixed sentences, looked up from a sentence code
(so text features exist, but they carry no emotion: the adapters register with
``text_source="scripted"``, written into the manifest's meta)."""
from __future__ import annotations

from pathlib import Path


def find_dir(root: Path, name: str) -> Path | None:
    """``name`` as a folder directly below ``root``, else the first one found deeper."""
    direct = root / name
    if direct.is_dir():
        return direct
    hits = sorted(p for p in root.rglob(name) if p.is_dir())
    return hits[0] if hits else None


def note_scripted(report, dataset: str, root: Path, n_sentences: int) -> None:
    report.note(dataset, root, "texts are the corpus's scripted sentences (from the sentence code)",
                f"{n_sentences} distinct sentences; text carries no emotion")
