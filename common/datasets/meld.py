"""MELD (MELD.Raw) in its official layout.

Reads ``{train,dev,test}_sent_emo.csv`` and the videos ``dia{D}_utt{U}.mp4`` in
``train_splits/``, ``dev_splits_complete/`` and ``output_repeated_splits_test/`` (both searched
for below ``--root``). One mp4 is one utterance: start/end stay NaN and the audio track is
decoded by PyAV (``mer.common.audio``).

Ids are ``<split>_dia<D>_utt<U>`` because dialogue numbers restart in every split
(``dia0_utt0`` exists in train, dev and test and they are different scenes); ``dialog`` is
``<split>_dia<D>`` for the same reason.

Text encoding (the CSVs are known to mix encodings):

1. the file is read as bytes and decoded as UTF-8; a run of bytes that is not valid UTF-8
   is decoded as Windows-1252 instead (the five bytes cp1252 leaves undefined map to the
   Latin-1 code points), and every row touched is reported as "text encoding repaired";
2. double-encoded text (UTF-8 bytes that were once read as cp1252, so ``’`` became ``â€™``)
   is repaired by :func:`fix_mojibake`: each run that looks like a UTF-8 lead byte followed
   by its continuation bytes *in cp1252 clothing* is re-encoded to cp1252 and decoded as
   UTF-8; a run is replaced only if that round trip succeeds. Each repair is reported with
   the old and new string;
3. everything else is kept as it is: curly quotes and apostrophes are faithful text.

Rows whose mp4 is missing are left in; ``prepare`` drops each as "missing audio" (and the
adapter notes how many there were per split). mp4 files that no CSV row names are counted
as notes.
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from mer.common.datasets import find_one, media_row, note_media, register
from mer.common.errors import CorpusError, MerError
from mer.common.report import Report

SPLITS = {
    # split: (csv file, video folder)
    "train": ("train_sent_emo.csv", "train_splits"),
    "dev": ("dev_sent_emo.csv", "dev_splits_complete"),
    "test": ("test_sent_emo.csv", "output_repeated_splits_test"),
}
REQUIRED = ("Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID")
VIDEO_NAME = re.compile(r"^dia(?P<d>\d+)_utt(?P<u>\d+)\.mp4$")

# --- text encoding --------------------------------------------------------------------

# Bytes 0x81, 0x8D, 0x8F, 0x90 and 0x9D have no cp1252 character; decoders that fall back to
# Latin-1 (as ours does) turn them into the C1 control characters of the same value.
_CP1252_HOLES = {0x81, 0x8D, 0x8F, 0x90, 0x9D}


def _byte_to_char(b: int) -> str:
    return chr(b) if b in _CP1252_HOLES else bytes([b]).decode("cp1252")


_CHAR_TO_BYTE = {_byte_to_char(b): b for b in range(0x80, 0x100)}
# Characters that cp1252 makes out of UTF-8 lead bytes (2-, 3- and 4-byte sequences) and out
# of continuation bytes (0x80-0xBF).
_LEAD2 = "".join(_byte_to_char(b) for b in range(0xC2, 0xE0))
_LEAD3 = "".join(_byte_to_char(b) for b in range(0xE0, 0xF0))
_LEAD4 = "".join(_byte_to_char(b) for b in range(0xF0, 0xF5))
_CONT = "".join(_byte_to_char(b) for b in range(0x80, 0xC0))
_MOJIBAKE = re.compile(
    f"[{re.escape(_LEAD2)}][{re.escape(_CONT)}]"
    f"|[{re.escape(_LEAD3)}][{re.escape(_CONT)}]{{2}}"
    f"|[{re.escape(_LEAD4)}][{re.escape(_CONT)}]{{3}}"
)


def _undo(m: re.Match) -> str:
    s = m.group(0)
    try:
        return bytes(_CHAR_TO_BYTE[c] for c in s).decode("utf-8")
    except UnicodeDecodeError:  # not a UTF-8 sequence after all: keep the text as it is
        return s


def fix_mojibake(s: str, max_rounds: int = 3) -> str:
    """Undo UTF-8-read-as-cp1252 double encoding (``â€™`` -> ``’``), run by run.

    Only runs shaped like a whole UTF-8 sequence in cp1252 characters are touched, and only
    when they decode; repeated for text that was double-encoded more than once. Text that is
    already correct (including curly quotes) never matches.
    """
    for _ in range(max_rounds):
        new = _MOJIBAKE.sub(_undo, s)
        if new == s:
            break
        s = new
    return s


def decode_bytes(b: bytes) -> tuple[str, int]:
    """UTF-8, with each undecodable byte run read as cp1252. Returns (text, n_fallback_runs)."""
    out: list[str] = []
    n = 0
    pos = 0
    while pos < len(b):
        try:
            out.append(b[pos:].decode("utf-8"))
            break
        except UnicodeDecodeError as e:
            out.append(b[pos : pos + e.start].decode("utf-8"))
            bad = b[pos + e.start : pos + e.end]
            out.append("".join(_byte_to_char(x) for x in bad))
            n += 1
            pos += e.end
    return "".join(out), n


def read_csv_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str], list[str]]]]:
    """(header, rows) of a CSV; each row is (line number, {header: value}, encoding notes).

    The whole file is decoded with ``surrogateescape`` so the csv module can parse it whatever
    its encoding; fields that hold raw non-UTF-8 bytes are then decoded one by one with the
    cp1252 fallback, so each fallback is attributed to its row.
    """
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    text = raw.decode("utf-8", errors="surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise CorpusError(f"{path}: empty CSV file") from None
    header = [h.strip() for h in header]
    rows = []
    for rec in reader:
        if not any(f.strip() for f in rec):
            continue
        lineno = reader.line_num
        if len(rec) != len(header):
            raise CorpusError(f"{path}:{lineno}: {len(rec)} fields, the header has {len(header)}")
        notes = []
        fixed = []
        for h, f in zip(header, rec):
            if any("\udc80" <= c <= "\udcff" for c in f):
                f2, _ = decode_bytes(f.encode("utf-8", errors="surrogateescape"))
                notes.append(f"{h}: bytes not UTF-8, read as Windows-1252: {f2!r}")
                f = f2
            fixed.append(f)
        rows.append((lineno, dict(zip(header, fixed)), notes))
    return header, rows


def _int(v: str, what: str, path: Path, lineno: int) -> int:
    try:
        return int(str(v).strip())
    except ValueError:
        raise CorpusError(f"{path}:{lineno}: {what} {v!r} is not an integer") from None


@register("meld", "MELD.Raw: {train,dev,test}_sent_emo.csv + the split folders of mp4 videos")
def scan(root: Path, report: Report, **_) -> list[dict]:
    rows: list[dict] = []
    found_any = False
    for split, (csv_name, folder) in SPLITS.items():
        csv_path = find_one(root, csv_name, "file")
        if csv_path is None:
            report.note(split, root, "split CSV not found: split skipped", csv_name)
            continue
        found_any = True
        vdir = find_one(root, folder, "dir")
        if vdir is None:
            # Point at where the folder should be: prepare drops every row as "missing audio".
            vdir = csv_path.parent / folder
            report.note(split, vdir, "video folder not found", f"{folder} (every {split} row will lack audio)")
        header, records = read_csv_rows(csv_path)
        missing_cols = [c for c in REQUIRED if c not in header]
        if missing_cols:
            raise CorpusError(f"{csv_path}: missing column(s) {', '.join(missing_cols)} (header: {', '.join(header)})")
        named: set[str] = set()
        seen: set[str] = set()
        n_missing = 0
        for lineno, rec, enc_notes in records:
            d = _int(rec["Dialogue_ID"], "Dialogue_ID", csv_path, lineno)
            u = _int(rec["Utterance_ID"], "Utterance_ID", csv_path, lineno)
            uid = f"{split}_dia{d}_utt{u}"
            src = f"{csv_path}:{lineno}"
            if uid in seen:
                report.drop(uid, src, "duplicate row", f"dia{d}_utt{u} appears more than once in {csv_name}")
                continue
            seen.add(uid)
            for n in enc_notes:
                report.repair(uid, src, "text encoding repaired", n)
            text = rec["Utterance"]
            fixed = fix_mojibake(text)
            if fixed != text:
                report.repair(uid, src, "text encoding repaired", f"{text!r} -> {fixed!r}")
            speaker = rec["Speaker"].strip()
            fixed_spk = fix_mojibake(speaker)
            if fixed_spk != speaker:
                report.repair(uid, src, "speaker encoding repaired", f"{speaker!r} -> {fixed_spk!r}")
            video = vdir / f"dia{d}_utt{u}.mp4"
            named.add(video.name)
            if not video.exists():
                n_missing += 1
            # The mp4 holds exactly this utterance (StartTime/EndTime are times in the episode,
            # not in the file): no start/end.
            rows.append(media_row(uid, video, src, text=fixed, emotion=rec["Emotion"].strip() or None,
                                  sentiment=rec["Sentiment"].strip() or None, speaker=fixed_spk or None,
                                  dialog=f"{split}_dia{d}", split=split))
        note_media(report, split, csv_path, n_missing, len(seen), "CSV rows whose mp4", vdir, "*.mp4", named,
                   "mp4 not named by any CSV row: ignored", detail=csv_name)
    if not found_any:
        raise MerError(f"none of {', '.join(c for c, _ in SPLITS.values())} found under {root}")
    return rows
