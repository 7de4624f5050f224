"""IEMOCAP (IEMOCAP_full_release) in its official layout.

Reads ``Session{1..5}/dialog/EmoEvaluation/*.txt`` (consensus labels; the per-annotator
subfolders are ignored), ``dialog/transcriptions/*.txt`` and
``sentences/wav/<dialog>/<utt>.wav``, and the word-level forced alignments
``sentences/ForcedAlignment/<dialog>/<utt>.wdseg`` where present (see ``read_wdseg``) into the
manifest's ``words`` column. Speaker = session + the gender letter before the
utterance number (``Ses01F_impro01_M003`` -> ``Ses01_M``); the dialog's own F/M letter only
says who wore the markers.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from mer.common.datasets import register
from mer.common.errors import CorpusError, MerError
from mer.common.report import Report

# "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]"
EVAL_LINE = re.compile(
    r"^\[\s*(?P<start>[-\d.]+)\s*-\s*(?P<end>[-\d.]+)\s*\]\s+(?P<id>Ses\S+)\s+(?P<emo>\S+)\s+"
    r"\[\s*(?P<v>[-\d.]+)\s*,\s*(?P<a>[-\d.]+)\s*,\s*(?P<d>[-\d.]+)\s*\]"
)
# "Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me."
TRANS_LINE = re.compile(r"^(?P<id>Ses\S+)\s+\[[^\]]*\]:\s?(?P<text>.*)$")
# "\t63    79      -91264  EXCUSE(1)" (start frame, end frame, score, word); 10 ms frames
WDSEG_LINE = re.compile(r"^\s*(?P<s>\d+)\s+(?P<e>\d+)\s+(?P<score>-?\d+)\s+(?P<word>\S+)\s*$")
# Segments that are not words of the transcript: sentence start/end and silence.
WDSEG_MARKERS = {"<s>", "</s>", "<sil>"}
WDSEG_FRAME = 0.01
UTT_ID = re.compile(r"^(?P<dialog>Ses(?P<sess>\d\d)[FM]_.+)_(?P<gender>[FM])[A-Z]?\d+$")


def _sessions(root: Path) -> list[Path]:
    sess = sorted({p.parent.parent for p in root.rglob("EmoEvaluation") if p.is_dir() and p.parent.name == "dialog"})
    if not sess:
        raise MerError(f"no IEMOCAP Session*/dialog/EmoEvaluation folders under {root}")
    return sess


@register("iemocap", "IEMOCAP full release (Session1..5)")
def scan(root: Path, report: Report, **_) -> list[dict]:
    rows: list[dict] = []
    for sdir in _sessions(root):
        dialog = sdir / "dialog"
        trans_dir = dialog / "transcriptions"
        transcripts: dict[str, str] = {}
        for f in sorted(trans_dir.glob("*.txt")):
            try:
                transcripts.update(read_transcripts_file(f))
            except UnicodeDecodeError as e:
                report.note(f.stem, f, "transcript file not UTF-8: read as latin-1", str(e)[:120])
                transcripts.update(read_transcripts_file(f, encoding="latin-1"))
        labelled: set[str] = set()
        # Only the top-level files: EmoEvaluation/Categorical etc. hold per-annotator labels.
        for f in sorted((dialog / "EmoEvaluation").glob("*.txt")):
            try:
                text = f.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                raise CorpusError(f"{f}: label file is not valid UTF-8 ({e.reason} at byte {e.start})") from None
            file_rows: list[tuple[float, dict]] = []
            for lineno, line in enumerate(text.splitlines(), 1):
                if not line.startswith("["):
                    continue
                m = EVAL_LINE.match(line.strip())
                if not m:
                    raise CorpusError(f"{f}:{lineno}: cannot parse EmoEvaluation line {line.strip()!r}")
                uid = m["id"]
                start, end = float(m["start"]), float(m["end"])
                v, a, d = float(m["v"]), float(m["a"]), float(m["d"])
                if not (0 <= start < end):
                    raise CorpusError(f"{uid} ({f}:{lineno}): impossible span [{start} - {end}]")
                for name, val in (("valence", v), ("activation", a), ("dominance", d)):
                    if not (1.0 <= val <= 5.0):
                        raise CorpusError(f"{uid} ({f}:{lineno}): {name} {val} outside IEMOCAP's 1..5 scale")
                um = UTT_ID.match(uid)
                if not um:
                    raise CorpusError(f"{f}:{lineno}: utterance id {uid!r} does not follow IEMOCAP's naming")
                sess = f"Ses{um['sess']}"
                labelled.add(uid)
                wd = sdir / "sentences" / "ForcedAlignment" / um["dialog"] / f"{uid}.wdseg"
                words = read_wdseg(wd) if wd.is_file() else None
                file_rows.append((start,
                    {
                        "id": uid,
                        "audio": str(sdir / "sentences" / "wav" / um["dialog"] / f"{uid}.wav"),
                        # The wav holds exactly this utterance: the span is kept for reference
                        # in the dialog's timeline, the whole file is the utterance.
                        "text": transcripts.get(uid),
                        "emotion": m["emo"],
                        "valence": v,
                        "activation": a,
                        "dominance": d,
                        "speaker": f"{sess}_{um['gender']}",
                        "gender": um["gender"],
                        "session": sess,
                        "dialog": um["dialog"],
                        "words": json.dumps(words) if words else None,
                        "_source": str(f),
                    }
                ))
            # A dialogue's rows in the order of its timeline (the manifest keeps no dialogue
            # time; conversation-level training, --context dialog, reads the order from here).
            rows.extend(r for _, r in sorted(file_rows, key=lambda sr: sr[0]))
        for uid in sorted(set(transcripts) - labelled):
            report.note(uid, trans_dir, "transcript line without a label (e.g. overlap segment): ignored")
    return rows


def read_transcripts_file(f: Path, encoding: str = "utf-8") -> dict[str, str]:
    out: dict[str, str] = {}
    for line in f.read_text(encoding=encoding).splitlines():
        m = TRANS_LINE.match(line.strip())
        if m:
            out[m["id"]] = m["text"].strip()
    return out


def read_wdseg(path: Path) -> list[list]:
    """Word spans of one utterance from its ``.wdseg`` file: ``[[word, start_s, end_s], ...]``
    in seconds from the start of the utterance's wav. Frames are 10 ms, a segment covers frames
    SFrm..EFrm inclusive, so it spans [SFrm * 0.01, (EFrm + 1) * 0.01). ``<s>``, ``</s>`` and
    ``<sil>`` are dropped; words keep their spelling, pronunciation variants included
    (``EXCUSE(1)``; matched to the transcript without the suffix). The header line and the
    closing ``Total Score`` line are skipped; any other line that does not parse stops prepare
    with the file and line."""
    out = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        t = line.strip()
        if not t or t.startswith("SFrm") or t.lower().startswith("total score"):
            continue
        m = WDSEG_LINE.match(line)
        if not m:
            raise CorpusError(f"{path}:{lineno}: cannot parse word alignment line {t!r}")
        s, e = int(m["s"]), int(m["e"])
        if e < s:
            raise CorpusError(f"{path}:{lineno}: segment ends (frame {e}) before it starts (frame {s})")
        if m["word"] in WDSEG_MARKERS:
            continue
        out.append([m["word"], round(s * WDSEG_FRAME, 4), round((e + 1) * WDSEG_FRAME, 4)])
    return out
