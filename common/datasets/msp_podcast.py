"""MSP-Podcast (``MSP-Podcast/``, release 1.11 and later; older releases read too).

Layout (folders searched for below ``--root``)::

    Audios/MSP-PODCAST_0002_0033.wav
    Labels/labels_consensus.csv      (older releases: labels_concensus.csv, and Partitions.txt)
    Transcripts/MSP-PODCAST_0002_0033.txt

``labels_consensus.csv``: ``FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set``
(columns read by name). Mapping to manifest columns:

- ``EmoClass`` (A S H U F D C N O X) -> ``emotion`` (raw letter; the schemes in
  ``manifests/msp-podcast.yaml`` name the classes);
- ``EmoAct``/``EmoVal``/``EmoDom`` (1..7) -> ``activation``/``valence``/``dominance``; a value
  outside 1..7 raises ``CorpusError`` naming the file and line;
- ``SpkrID`` -> ``speaker`` (``Unknown`` becomes null, counted in one note);
  ``Gender`` Female/Male -> F/M;
- ``Split_Set`` -> ``split`` as the release spells it (Train, Development, Test1, Test2,
  Test3). A release without that column gives the split in ``Partitions.txt``, one
  ``<Split>; <FileName>`` per line.

Test sets can ship without labels (empty EmoClass and attributes). Those rows are kept
(``unlabelled_splits`` in the yaml tells prepare so) for prediction; every scheme leaves them
out of training and evaluation. Unlabelled rows of other splits are dropped as "no label".
"""
from __future__ import annotations

import math
import re
from pathlib import Path

from mer.common.datasets import find_one, note_unnamed, read_csv_rows, register
from mer.common.errors import CorpusError, MerError
from mer.common.report import Report

LABEL_FILES = ("labels_consensus.csv", "labels_concensus.csv")  # the second: older releases' spelling
ATTRIBUTES = {"EmoAct": "activation", "EmoVal": "valence", "EmoDom": "dominance"}
ATTRIBUTE_RANGE = (1.0, 7.0)
GENDERS = {"female": "F", "male": "M", "f": "F", "m": "M"}
UNKNOWN_SPEAKERS = {"", "unknown"}
REQUIRED = ("FileName", "EmoClass", *ATTRIBUTES)


def _attribute(v: str, col: str, uid: str, src: str) -> float:
    v = (v or "").strip()
    if not v:
        return float("nan")
    try:
        x = float(v)
    except ValueError:
        raise CorpusError(f"{uid} ({src}): {col} {v!r} is not a number") from None
    lo, hi = ATTRIBUTE_RANGE
    if math.isnan(x):
        return x
    if not lo <= x <= hi:
        raise CorpusError(f"{uid} ({src}): {col} {x} is outside the {lo:g}..{hi:g} scale")
    return x


def read_partitions(path: Path) -> dict[str, str]:
    """``Partitions.txt`` of older releases: file name -> split, lines ``<Split>; <FileName>``."""
    out: dict[str, str] = {}
    for i, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        parts = [p.strip() for p in re.split(r"[;,\t]", line) if p.strip()]
        if len(parts) != 2:
            raise CorpusError(f"{path}:{i}: expected '<Split>; <FileName>', got {line!r}")
        split, name = parts if not parts[0].lower().endswith(".wav") else parts[::-1]
        out[name] = split
    return out


@register("msp-podcast", "MSP-Podcast: Labels/labels_consensus.csv + Audios/*.wav + Transcripts/*.txt")
def scan(root: Path, report: Report, **_) -> list[dict]:
    labels = next((p for p in (find_one(root, n, "file") for n in LABEL_FILES) if p is not None), None)
    if labels is None:
        raise MerError(f"no MSP-Podcast label file ({' or '.join(LABEL_FILES)}) under {root}")
    reader = read_csv_rows(labels, REQUIRED, "column")
    header = reader.fieldnames
    partitions: dict[str, str] | None = None
    if "Split_Set" not in header:
        part = find_one(labels.parent.parent, "Partitions.txt", "file") or find_one(root, "Partitions.txt", "file")
        if part is None:
            report.note("msp-podcast", labels, "no Split_Set column and no Partitions.txt", "every row has no split")
        else:
            partitions = read_partitions(part)
    # The release's folders sit next to Labels/; searched below the root when unpacked elsewhere.
    base = labels.parent.parent
    adir = (base / "Audios") if (base / "Audios").is_dir() else find_one(root, "Audios", "dir")
    if adir is None:
        adir = base / "Audios"
        report.note("msp-podcast", adir, "audio folder not found", "every row will lack audio")
    tdir = (base / "Transcripts") if (base / "Transcripts").is_dir() else find_one(root, "Transcripts", "dir")
    if tdir is None:
        report.note("msp-podcast", base / "Transcripts", "transcript folder not found", "text features will be absent")

    rows: list[dict] = []
    seen: set[str] = set()
    named: set[str] = set()
    unknown_spk = 0
    no_transcript = 0
    for rec in reader:
        src = f"{labels}:{reader.line_num}"
        fname = (rec.get("FileName") or "").strip()
        if not fname:
            raise CorpusError(f"{src}: empty FileName")
        uid = Path(fname).stem
        if uid in seen:
            raise CorpusError(f"{uid} ({src}): listed twice")
        seen.add(uid)
        named.add(Path(fname).name)
        vals = {col: _attribute(rec.get(c, ""), c, uid, src) for c, col in ATTRIBUTES.items()}
        emo = (rec.get("EmoClass") or "").strip() or None
        spk = (rec.get("SpkrID") or "").strip()
        if spk.lower() in UNKNOWN_SPEAKERS:
            unknown_spk += 1
            spk = None
        if partitions is None:
            split = (rec.get("Split_Set") or "").strip() or None
        else:
            split = partitions.get(Path(fname).name)
        txt = None
        if tdir is not None:
            tp = tdir / f"{uid}.txt"
            if tp.is_file():
                txt = tp.read_text(encoding="utf-8", errors="replace").strip() or None
            if txt is None:
                no_transcript += 1
        rows.append(
            {
                "id": uid,
                "audio": str(adir / Path(fname).name),
                "text": txt,
                "emotion": emo,
                **vals,
                "speaker": spk,
                "gender": GENDERS.get((rec.get("Gender") or "").strip().lower()),
                "split": split,
                "_source": src,
            }
        )
    if unknown_spk:
        report.note("msp-podcast", labels, "speaker Unknown (kept, no speaker id)", f"{unknown_spk} rows")
    if no_transcript:
        report.note("msp-podcast", tdir, "rows without a transcript file", f"{no_transcript} rows (dropped as empty transcript)")
    if adir.is_dir():
        note_unnamed(report, adir.glob("*.wav"), named, "wav not named by the label file: ignored", detail=labels.name)
    return rows
