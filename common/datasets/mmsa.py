"""CMU-MOSI and CMU-MOSEI in the MMSA release layout (``MOSI/``, ``MOSEI/``).

Reads ``label.csv`` (``video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode``,
columns found by header name) and the clips ``Raw/<video_id>/<clip_id>.mp4``, both searched
for below ``--root``. One mp4 is one utterance (start/end NaN).

- id = ``<video_id>_<clip_id>``; speaker = dialog = video_id (one speaker per video);
- score = ``label``, the sentiment in [-3, 3]; a value outside that range (or not a number)
  is an impossible value and raises ``CorpusError`` naming the id and file; an empty label
  leaves the row unlabelled (prepare drops it as "no label");
- ``annotation`` (Negative/Neutral/Positive, derived from ``label`` by MMSA) is not copied:
  the schemes in manifests/mosi.yaml work from ``score``, and a second label column would
  keep rows whose score is empty;
- split = ``mode`` (train/valid/test).

mp4 files below ``Raw/`` that no row names are counted as notes.
"""
from __future__ import annotations

import math
from pathlib import Path

from mer.common.datasets import find_one, media_row, note_media, read_csv_rows, register
from mer.common.errors import CorpusError, MerError
from mer.common.report import Report

REQUIRED = ("video_id", "clip_id", "text", "label", "mode")
SPLITS = ("train", "valid", "test")
SCORE_RANGE = (-3.0, 3.0)


def find_label_csv(root: Path, corpus: str) -> Path:
    """``label.csv`` below ``root``; with several (MOSI/ and MOSEI/ side by side), the one whose
    path names the corpus (``MOSI``, ``CMU-MOSI``), else an error listing them."""
    if (root / "label.csv").is_file():
        return root / "label.csv"
    hits = sorted(root.rglob("label.csv"))
    if not hits:
        raise MerError(f"label.csv (MMSA release of {corpus}) not found under {root}")
    if len(hits) > 1:
        named = [h for h in hits if any(corpus in part.lower().replace("-", "").replace("_", "") for part in h.relative_to(root).parts[:-1])]
        if len(named) != 1:
            raise MerError(
                f"several label.csv files under {root} ({', '.join(str(h.relative_to(root)) for h in hits)}): "
                f"pass the {corpus.upper()} folder as --root"
            )
        hits = named
    return hits[0]


def scan_mmsa(root: Path, report: Report, corpus: str) -> list[dict]:
    label_csv = find_label_csv(root, corpus)
    raw = label_csv.parent / "Raw"
    if not raw.is_dir():
        raw = find_one(root, "Raw", "dir") or raw
    if not raw.is_dir():
        report.note(corpus, raw, "Raw/ folder not found", "every clip will lack audio")
    reader = read_csv_rows(label_csv, REQUIRED)
    rows: list[dict] = []
    seen: set[str] = set()
    named: set[Path] = set()
    n_missing = 0
    for rec in reader:
        lineno = reader.line_num
        vid = (rec["video_id"] or "").strip()
        clip = (rec["clip_id"] or "").strip()
        if not vid or not clip:
            raise CorpusError(f"{label_csv}:{lineno}: empty video_id or clip_id")
        uid = f"{vid}_{clip}"
        src = f"{label_csv}:{lineno}"
        if uid in seen:
            raise CorpusError(f"{uid} ({src}): clip listed twice in label.csv")
        seen.add(uid)
        lab = (rec["label"] or "").strip()
        score = None
        if lab:
            try:
                score = float(lab)
            except ValueError:
                raise CorpusError(f"{uid} ({src}): label {lab!r} is not a number") from None
            lo, hi = SCORE_RANGE
            if not (lo <= score <= hi) or math.isnan(score):
                raise CorpusError(f"{uid} ({src}): sentiment label {score} outside [{lo:g}, {hi:g}]")
        mode = (rec["mode"] or "").strip()
        if mode not in SPLITS:
            raise CorpusError(f"{uid} ({src}): mode {mode!r} is not one of {', '.join(SPLITS)}")
        video = raw / vid / f"{clip}.mp4"
        named.add(video)
        if not video.exists():
            n_missing += 1
        rows.append(media_row(uid, video, src, text=rec["text"], score=score, speaker=vid, dialog=vid, split=mode))
    note_media(report, corpus, label_csv, n_missing, len(rows), "label.csv rows whose mp4", raw, "*.mp4", named,
               "mp4 not named by label.csv: ignored", recursive=True, key=lambda p: p, uid=lambda p: f"{p.parent.name}_{p.stem}")
    return rows


@register("mosi", "CMU-MOSI, MMSA release: label.csv + Raw/<video_id>/<clip_id>.mp4")
def scan_mosi(root: Path, report: Report, **_) -> list[dict]:
    return scan_mmsa(root, report, "mosi")


@register("mosei", "CMU-MOSEI, MMSA release: label.csv + Raw/<video_id>/<clip_id>.mp4")
def scan_mosei(root: Path, report: Report, **_) -> list[dict]:
    return scan_mmsa(root, report, "mosei")
