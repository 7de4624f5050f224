"""SLUE-VoxCeleb (``slue-voxceleb/``) in its official layout.

Reads ``slue-voxceleb_fine-tune.tsv`` and ``slue-voxceleb_dev.tsv`` (tab separated, with a
header; columns are found by name because older releases order and name them differently)
and the audio ``<split>_raw/<id>.flac`` (files and folders searched for below ``--root``).

- split = ``fine-tune`` / ``dev`` (the file the row came from);
- the utterance is the span [start_second, end_second] of the flac where the release has
  those columns, else the whole file; a span with end <= start or a negative start raises
  ``CorpusError``;
- sentiment is kept raw (Negative, Neutral, Positive, ``<mixed>``, Disagreement); the
  default scheme leaves ``<mixed>`` and Disagreement out, as papers do;
- ``slue-voxceleb_test_blind.tsv`` has no sentiment column (the labels are blind): it is
  skipped with a note that counts its rows. Should a release ship test labels, the file is
  read like the others with split ``test``.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from mer.common.datasets import find_one, media_row, note_media, register
from mer.common.errors import CorpusError, MerError
from mer.common.report import Report

FILES = {
    # split: (tsv file, audio folder)
    "fine-tune": ("slue-voxceleb_fine-tune.tsv", "fine-tune_raw"),
    "dev": ("slue-voxceleb_dev.tsv", "dev_raw"),
    "test": ("slue-voxceleb_test_blind.tsv", "test_raw"),
}
# Column names across releases, first match wins.
ALIASES = {
    "id": ("id", "utt_id"),
    "text": ("normalized_text", "text", "transcript"),
    "speaker": ("speaker_id", "speaker"),
    "sentiment": ("sentiment", "label"),
    "start": ("start_second", "start"),
    "end": ("end_second", "end"),
}


def _float(v: str | None, what: str, uid: str, src: str) -> float | None:
    if v is None or not v.strip():
        return None
    try:
        x = float(v)
    except ValueError:
        raise CorpusError(f"{uid} ({src}): {what} {v!r} is not a number") from None
    if math.isnan(x):
        return None
    return x


def read_tsv(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path}: not UTF-8 (byte {e.start}): {e.reason}") from None
    # QUOTE_NONE: transcripts contain quote characters that are text, not CSV quoting.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise CorpusError(f"{path}: empty file") from None
    rows = []
    for rec in reader:
        if not any(f.strip() for f in rec):
            continue
        if len(rec) != len(header):
            raise CorpusError(f"{path}:{reader.line_num}: {len(rec)} fields, the header has {len(header)}")
        rows.append((reader.line_num, dict(zip(header, rec))))
    return header, rows


@register("slue-voxceleb", "SLUE-VoxCeleb sentiment: slue-voxceleb_{fine-tune,dev}.tsv + <split>_raw/*.flac")
def scan(root: Path, report: Report, **_) -> list[dict]:
    rows: list[dict] = []
    found_any = False
    seen: set[str] = set()
    for split, (tsv_name, folder) in FILES.items():
        tsv = find_one(root, tsv_name, "file")
        if tsv is None:
            if split != "test":
                report.note(split, root, "split file not found: split skipped", tsv_name)
            continue
        header, records = read_tsv(tsv)
        col = {k: next((a for a in names if a in header), None) for k, names in ALIASES.items()}
        if col["sentiment"] is None:
            report.note(split, tsv, "no sentiment column (blind test set): file skipped", f"{len(records)} rows")
            continue
        missing = [k for k in ("id", "text") if col[k] is None]
        if missing:
            raise CorpusError(
                f"{tsv}: no column for {', '.join(missing)} (looked for "
                f"{'; '.join('/'.join(ALIASES[k]) for k in missing)}; header: {', '.join(header)})"
            )
        found_any = True
        adir = find_one(root, folder, "dir")
        if adir is None:
            adir = tsv.parent / folder
            report.note(split, adir, "audio folder not found", f"{folder} (every {split} row will lack audio)")
        named: set[str] = set()
        n_missing = 0
        for lineno, rec in records:
            uid = rec[col["id"]].strip()
            src = f"{tsv}:{lineno}"
            if not uid:
                raise CorpusError(f"{src}: empty id")
            if uid in seen:
                raise CorpusError(f"{uid} ({src}): id listed twice")
            seen.add(uid)
            start = _float(rec.get(col["start"]) if col["start"] else None, "start_second", uid, src)
            end = _float(rec.get(col["end"]) if col["end"] else None, "end_second", uid, src)
            if (start is None) != (end is None):
                raise CorpusError(f"{uid} ({src}): only one of start_second/end_second is given")
            if start is not None and not (0 <= start < end):
                raise CorpusError(f"{uid} ({src}): impossible span [{start} - {end}]")
            audio = adir / f"{uid}.flac"
            named.add(audio.name)
            if not audio.exists():
                n_missing += 1
            sent = rec[col["sentiment"]].strip() or None
            speaker = rec[col["speaker"]].strip() if col["speaker"] else ""
            rows.append(media_row(uid, audio, src, start, end, text=rec[col["text"]], sentiment=sent,
                                  speaker=speaker or None, split=split))
        note_media(report, split, tsv, n_missing, len(records), "tsv rows whose flac", adir, "*.flac", named,
                   "flac not named by any tsv row: ignored", detail=tsv_name)
    if not found_any:
        raise MerError(f"no labelled SLUE-VoxCeleb tsv ({FILES['fine-tune'][0]}, {FILES['dev'][0]}) under {root}")
    return rows
