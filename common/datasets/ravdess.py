"""RAVDESS (``RAVDESS/``), speech audio: 24 actors, 1,440 files.

``Actor_NN/03-01-EE-II-SS-RR-NN.wav``: modality (03 audio-only), vocal channel (01 speech,
02 song), emotion, intensity (01 normal, 02 strong), statement (01/02), repetition, actor.
Mapping: ``emotion`` = the emotion's name (table below; an unknown code is kept as the code
and dropped by prepare as an unknown label), ``speaker`` = ``Actor_NN``, ``gender`` M for odd
actors and F for even, ``text`` = the statement's sentence (scripted). Songs, non-audio
modalities and names outside the pattern are noted and ignored. An actor field that
disagrees with its folder, or neutral at strong intensity (the corpus has none), raises
``CorpusError`` naming the file.
"""
from __future__ import annotations

import re
from pathlib import Path

from mer.common.datasets import register
from mer.common.datasets.acted import note_scripted
from mer.common.errors import CorpusError, MerError
from mer.common.report import Report

EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful",
            "07": "disgust", "08": "surprised"}
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
NAME = re.compile(r"^(?P<mod>\d{2})-(?P<chan>\d{2})-(?P<emo>\d{2})-(?P<int>\d{2})-(?P<stmt>\d{2})-(?P<rep>\d{2})-(?P<actor>\d{2})$")
ACTOR_DIR = re.compile(r"^Actor_(\d{2})$")


@register("ravdess", "RAVDESS speech: Actor_NN/03-01-EE-II-SS-RR-NN.wav", text_kind="scripted")
def scan(root: Path, report: Report, **_) -> list[dict]:
    dirs = sorted((p for p in [root, *root.rglob("Actor_*")] if p.is_dir() and ACTOR_DIR.match(p.name)), key=lambda p: p.name)
    if not dirs:
        raise MerError(f"no RAVDESS Actor_NN/ folders under {root}")
    rows = []
    seen: set[str] = set()
    for d in dirs:
        folder_actor = ACTOR_DIR.match(d.name).group(1)
        for p in sorted(d.glob("*.wav")):
            m = NAME.match(p.stem)
            if m is None:
                report.note(p.stem, p, "file name not MM-VV-EE-II-SS-RR-AA.wav: ignored")
                continue
            if m["mod"] != "03":
                report.note(p.stem, p, "not audio-only (modality != 03): ignored", m["mod"])
                continue
            if m["chan"] != "01":
                report.note(p.stem, p, "song, not speech (vocal channel != 01): ignored", m["chan"])
                continue
            if m["actor"] != folder_actor:
                raise CorpusError(f"{p.stem} ({p}): actor field {m['actor']} disagrees with its folder {d.name}")
            if m["emo"] == "01" and m["int"] == "02":
                raise CorpusError(f"{p.stem} ({p}): neutral at strong intensity (02) does not exist in RAVDESS")
            if m["stmt"] not in STATEMENTS:
                report.note(p.stem, p, "unknown statement code: ignored", m["stmt"])
                continue
            if p.stem in seen:
                # The same name in two Actor_NN folders (two unpacked copies): the first is read.
                report.note(p.stem, p, "file name seen in another folder: ignored")
                continue
            seen.add(p.stem)
            rows.append(
                {
                    "id": p.stem,
                    "audio": str(p),
                    "text": STATEMENTS[m["stmt"]],
                    "emotion": EMOTIONS.get(m["emo"], m["emo"]),
                    "speaker": d.name,
                    "gender": "M" if int(m["actor"]) % 2 else "F",
                    "_source": str(p),
                }
            )
    note_scripted(report, "ravdess", root, len({r["text"] for r in rows}))
    return rows
