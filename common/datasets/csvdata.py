"""A lab's own corpus described by one CSV or JSONL file (adapter name ``csv``).

The file: ``manifest_file`` option (relative to ``--root`` or absolute); else
``metadata.csv`` or ``metadata.jsonl`` in ``--root``; else the only ``*.csv``/``*.jsonl``
in ``--root`` (an error lists the candidates when there are several).

One row (CSV) or object (JSONL) per utterance:

=========  =========  ==========================================================
column     required   meaning
=========  =========  ==========================================================
path       (yes)      audio file; relative paths resolve against the file's folder
text       (yes)      transcript
label      yes        class label, stored in the manifest's ``emotion`` column
speaker    no         speaker id
start/end  no         span in seconds inside ``path`` (both or neither)
split      no         train / dev (or valid) / test
id         no         utterance id (default: the audio file's stem, numbered if not unique)
gender, session, dialog  no   copied as they are
=========  =========  ==========================================================

``path`` and ``text`` are each optional, but one of them must be there: a file with
``path,label`` is an audio-only corpus, one with ``text,label`` a text-only corpus (the
manifest records which modalities it has; features of a missing modality are skipped).

Impossible values (a span that ends before it starts, a start that is not a number, two
rows with the same explicit id) raise ``CorpusError`` naming the row; columns the adapter
does not use are noted once in the report. The CSV must be UTF-8.
"""
from __future__ import annotations

import csv
import io
import json
import os
import math
from collections import Counter
from pathlib import Path

from mer.common.datasets import register
from mer.common.errors import CorpusError, MerError
from mer.common.report import Report

REQUIRED = ("label",)
MODALITY_COLUMNS = ("path", "text")   # at least one: audio-only and text-only corpora are fine
OPTIONAL = ("id", "speaker", "start", "end", "split", "gender", "session", "dialog")
DEFAULT_NAMES = ("metadata.csv", "metadata.jsonl")


def find_manifest_file(root: Path, manifest_file: str | Path | None = None) -> Path:
    if manifest_file:
        p = Path(manifest_file).expanduser()
        p = p if p.is_absolute() else root / p
        if not p.is_file():
            raise MerError(f"manifest_file {p} does not exist")
        return p
    if root.is_file():
        return root
    for name in DEFAULT_NAMES:
        if (root / name).is_file():
            return root / name
    cands = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in (".csv", ".jsonl"))
    if len(cands) == 1:
        return cands[0]
    if not cands:
        raise MerError(f"no metadata.csv, metadata.jsonl or other *.csv/*.jsonl file in {root}")
    raise MerError(
        f"several candidate files in {root} ({', '.join(p.name for p in cands)}): "
        "name one metadata.csv/metadata.jsonl or pass manifest_file"
    )


def _read_records(path: Path) -> list[tuple[int, dict]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path}: not UTF-8 (byte {e.start}: {e.reason}); save it as UTF-8") from None
    out: list[tuple[int, dict]] = []
    if path.suffix.lower() == ".jsonl":
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise CorpusError(f"{path}:{lineno}: expected a JSON object per line, got {type(obj).__name__}")
            out.append((lineno, obj))
        return out
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames is None:
        raise CorpusError(f"{path}: empty CSV file")
    reader.fieldnames = [h.strip() for h in reader.fieldnames]
    for rec in reader:
        if None in rec:  # more fields than the header
            raise CorpusError(f"{path}:{reader.line_num}: more fields than the header has")
        if not any((v or "").strip() for v in rec.values()):
            continue
        out.append((reader.line_num, rec))
    return out


def _str(v) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    s = str(v).strip()
    return s or None


def _num(v, what: str, where: str) -> float | None:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise CorpusError(f"{where}: {what} {v!r} is not a number") from None
    return None if math.isnan(x) else x


@register("csv", "a lab's own corpus: one CSV/JSONL row per utterance (path, text, label, ...)")
def scan(root: Path, report: Report, manifest_file: str | Path | None = None, **_) -> list[dict]:
    path = find_manifest_file(root, manifest_file)
    base = path.parent
    records = _read_records(path)
    if not records:   # a header and no row: "missing column(s) label (has: )" said nothing useful
        raise CorpusError(f"{path}: no utterance rows (a header only, or blank lines); add one row per utterance")
    cols = set().union(*(r.keys() for _, r in records))
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        raise CorpusError(f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(sorted(cols))})")
    if not any(c in cols for c in MODALITY_COLUMNS):
        raise CorpusError(f"{path}: needs a path (audio) or a text column, or both (has: {', '.join(sorted(cols))})")
    has_audio = "path" in cols
    unused = sorted(cols - set(REQUIRED) - set(MODALITY_COLUMNS) - set(OPTIONAL))
    if unused:
        report.note("-", path, "columns not used", ", ".join(unused))

    rows: list[dict] = []
    for lineno, rec in records:
        where = f"{path}:{lineno}"
        audio = None
        if has_audio:
            p = _str(rec.get("path"))
            if p is None:
                raise CorpusError(f"{where}: empty path")
            audio = Path(p).expanduser()
            audio = audio if audio.is_absolute() else (base / audio)
        start = _num(rec.get("start"), "start", where)
        end = _num(rec.get("end"), "end", where)
        if (start is None) != (end is None):
            raise CorpusError(f"{where}: give both start and end, or neither")
        if start is not None and not (0 <= start < end):
            raise CorpusError(f"{_str(rec.get('id')) or (audio.stem if audio else where)} ({where}): impossible span [{start} - {end}]")
        if start is not None and audio is None:
            raise CorpusError(f"{where}: start/end given, but there is no path column to cut them from")
        text = rec.get("text")
        rows.append(
            {
                "id": _str(rec.get("id")),
                # absolute but not resolved: a symlink keeps the row's own name (reports, ids)
                "audio": os.path.abspath(audio) if audio is not None else None,
                "start": float("nan") if start is None else start,
                "end": float("nan") if end is None else end,
                "text": None if text is None else str(text),
                "emotion": _str(rec.get("label")),
                **{c: _str(rec.get(c)) for c in ("speaker", "split", "gender", "session", "dialog")},
                "_source": where,
            }
        )

    # Explicit ids must be unique; ids derived from the file stem are numbered when several rows
    # share a stem (two spans of one file, or same-named files in different folders).
    given = Counter(r["id"] for r in rows if r["id"] is not None)
    dup = [i for i, n in given.items() if n > 1]
    if dup:
        first = next(r for r in rows if r["id"] == dup[0])
        raise CorpusError(f"{dup[0]} ({first['_source']}): id given to {given[dup[0]]} rows")
    if not has_audio:  # no file stem to name a row by: its line number does
        for r in rows:
            if r["id"] is None:
                r["id"] = f"line{r['_source'].rsplit(':', 1)[1]}"
                if r["id"] in given:
                    raise CorpusError(f"{r['id']} ({r['_source']}): the derived id is also given to another row")
    stems = Counter(Path(r["audio"]).stem for r in rows if r["id"] is None)
    taken = set(given)
    k: Counter = Counter()
    for r in rows:
        if r["id"] is not None:
            continue
        stem = Path(r["audio"]).stem
        if stems[stem] == 1 and stem not in taken:
            r["id"] = stem
        else:
            while True:
                k[stem] += 1
                cand = f"{stem}_{k[stem]}"
                if cand not in taken and cand not in stems:
                    break
            r["id"] = cand
            report.note(cand, r["_source"], "id from path stem not unique: numbered", stem)
        taken.add(r["id"])
    return rows
