"""CREMA-D (``CREMA-D/``): 7,442 acted clips, 91 actors, 12 sentences, 6 emotions.

``AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav`` (e.g. ``1001_DFA_ANG_XX.wav``) and
``VideoDemographics.csv`` (``ActorID,Age,Sex,Race,Ethnicity``). The intended emotion
(ANG DIS FEA HAP NEU SAD) comes from the name and is kept raw in ``emotion``; ``speaker`` is
the actor id, ``gender`` F/M from the demographics' Sex; ``text`` is the sentence code's
scripted sentence. A name outside the pattern, or with a sentence code that is not one of
the 12, is noted and ignored; an emotion code outside the six is dropped by prepare as an
unknown label. The real release holds one empty file (``1076_MTI_SAD_XX.wav``): prepare drops
it as unreadable audio, named in the report.
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from mer.common.datasets import find_one, register
from mer.common.datasets.acted import note_scripted
from mer.common.errors import MerError
from mer.common.report import Report

SENTENCES = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
NAME = re.compile(r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{2})$")
SEX = {"female": "F", "male": "M"}


def read_demographics(path: Path, report: Report) -> dict[str, str]:
    """ActorID -> F/M; an unknown Sex value is noted and left null."""
    out: dict[str, str] = {}
    reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"), newline=""))
    if not reader.fieldnames or "ActorID" not in reader.fieldnames or "Sex" not in reader.fieldnames:
        raise MerError(f"{path}: expected columns ActorID and Sex, header is {reader.fieldnames}")
    for rec in reader:
        actor = (rec["ActorID"] or "").strip()
        sex = SEX.get((rec["Sex"] or "").strip().lower())
        if sex is None:
            report.note(actor, f"{path}:{reader.line_num}", "unknown Sex value", repr(rec["Sex"]))
            continue
        out[actor] = sex
    return out


@register("crema-d", "CREMA-D: AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav + VideoDemographics.csv", text_kind="scripted")
def scan(root: Path, report: Report, **_) -> list[dict]:
    adir = find_one(root, "AudioWAV", "dir")
    if adir is None:
        raise MerError(f"no CREMA-D AudioWAV/ folder under {root}")
    demo_path = adir.parent / "VideoDemographics.csv"
    if not demo_path.is_file():
        hits = sorted(root.rglob("VideoDemographics.csv"))
        demo_path = hits[0] if hits else None
    if demo_path is None:
        report.note("crema-d", root, "VideoDemographics.csv not found", "gender unknown for every actor")
        sex = {}
    else:
        sex = read_demographics(demo_path, report)
    rows = []
    for p in sorted(adir.glob("*.wav")):
        m = NAME.match(p.stem)
        if m is None:
            report.note(p.stem, p, "file name not <actor>_<sentence>_<emotion>_<level>.wav: ignored")
            continue
        if m["sentence"] not in SENTENCES:
            report.note(p.stem, p, "unknown sentence code: ignored", m["sentence"])
            continue
        actor = m["actor"]
        if sex and actor not in sex:
            report.note(p.stem, p, "actor not in VideoDemographics.csv", actor)
        rows.append(
            {
                "id": p.stem,
                "audio": str(p),
                "text": SENTENCES[m["sentence"]],
                "emotion": m["emotion"],
                "speaker": actor,
                "gender": sex.get(actor),
                "_source": str(p),
            }
        )
    note_scripted(report, "crema-d", adir, len({r["text"] for r in rows}))
    return rows
