"""Shared pieces of the acted corpora (CREMA-D, RAVDESS, EmoDB): every label sits in the
file name, and the texts are the corpus's fixed sentences, looked up from a sentence code
(so text features exist, but they carry no emotion: the adapters register with
``text_kind="scripted"``, written into the manifest's meta)."""
from __future__ import annotations

from pathlib import Path


def note_scripted(report, dataset: str, root: Path, n_sentences: int) -> None:
    report.note(dataset, root, "texts are the corpus's scripted sentences (from the sentence code)",
                f"{n_sentences} distinct sentences; text carries no emotion")
