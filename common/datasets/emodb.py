"""EmoDB, the Berlin Database of Emotional Speech (``emodb/``): 535 utterances, 10 actors.

``wav/<speaker><text><emotion letter><version>.wav``, e.g. ``wav/03a01Fa.wav`` = speaker 03,
text a01, emotion F (Freude), version a. ``emotion`` keeps the German letter (W L E A F T N;
the schemes name the classes, an unknown letter is dropped by prepare as an unknown label),
``speaker`` the two digits, ``gender`` from the speaker table below (the corpus
documentation's), ``text`` the German sentence of the text code (scripted). A name outside
the pattern or with an unknown text code is noted and ignored.
"""
from __future__ import annotations

import re
from pathlib import Path

from mer.common.datasets import find_one, register
from mer.common.datasets.acted import note_scripted
from mer.common.errors import MerError
from mer.common.report import Report

TEXTS = {
    "a01": "Der Lappen liegt auf dem Eisschrank.",
    "a02": "Das will sie am Mittwoch abgeben.",
    "a04": "Heute abend könnte ich es ihm sagen.",
    "a05": "Das schwarze Stück Papier befindet sich da oben neben dem Holzstück.",
    "a07": "In sieben Stunden wird es soweit sein.",
    "b01": "Was sind denn das für Tüten, die da unter dem Tisch stehen?",
    "b02": "Sie haben es gerade hochgetragen und jetzt gehen sie wieder runter.",
    "b03": "An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe Agnes besucht.",
    "b09": "Ich will das eben wegbringen und dann mit Karl was trinken gehen.",
    "b10": "Die wird auf dem Platz sein, wo wir sie immer hinlegen.",
}
# Speaker -> gender, from the EmoDB documentation (5 male, 5 female actors).
SPEAKERS = {"03": "M", "08": "F", "09": "F", "10": "M", "11": "M", "12": "M", "13": "F", "14": "F", "15": "M", "16": "F"}
NAME = re.compile(r"^(?P<spk>\d{2})(?P<text>[ab]\d{2})(?P<emo>[A-Z])(?P<ver>[a-z])$")


@register("emodb", "EmoDB (Berlin): wav/<speaker><text><emotion><version>.wav", text_kind="scripted")
def scan(root: Path, report: Report, **_) -> list[dict]:
    wdir = find_one(root, "wav", "dir")
    if wdir is None:
        raise MerError(f"no EmoDB wav/ folder under {root}")
    rows = []
    for p in sorted(wdir.glob("*.wav")):
        m = NAME.match(p.stem)
        if m is None:
            report.note(p.stem, p, "file name not <speaker><text><emotion><version>.wav: ignored")
            continue
        if m["text"] not in TEXTS:
            report.note(p.stem, p, "unknown text code: ignored", m["text"])
            continue
        if m["spk"] not in SPEAKERS:
            report.note(p.stem, p, "speaker not in EmoDB's list (gender unknown)", m["spk"])
        rows.append(
            {
                "id": p.stem,
                "audio": str(p),
                "text": TEXTS[m["text"]],
                "emotion": m["emo"],
                "speaker": m["spk"],
                "gender": SPEAKERS.get(m["spk"]),
                "_source": str(p),
            }
        )
    note_scripted(report, "emodb", wdir, len({r["text"] for r in rows}))
    return rows
