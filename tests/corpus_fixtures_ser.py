"""Builders of tiny MSP-Podcast, CREMA-D, RAVDESS and EmoDB corpora in the releases' exact
on-disk layouts (docs/datasets.md), with the literal header lines and file-name patterns.

As in ``corpus_fixtures``: what a clean build holds is in module-level tables, breakage is
asked for per utterance with ``overrides={id: {...}}`` (``wav``: 'missing' | 'truncated' |
'empty'), and each builder returns the corpus root as users unpack it. Each emotion gets
its own tone frequency, so a model trained on the fixture's features has something to learn.
"""
from __future__ import annotations

from pathlib import Path

from corpus_fixtures import _audio, write_wav

SECONDS = 0.4

# --- MSP-Podcast --------------------------------------------------------------------------

MSP_HEADER = "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set"
# Arousal/valence/dominance (1..7) per class, so the dimensional scheme is learnable too.
MSP_AVD = {"A": (6.0, 2.0, 5.5), "S": (2.0, 2.2, 2.5), "H": (5.0, 6.0, 4.5), "N": (3.5, 4.0, 4.0),
           "U": (5.5, 4.5, 4.0), "C": (4.0, 2.5, 5.0), "O": (4.0, 4.0, 4.0), "X": (4.2, 3.8, 4.1)}
MSP_FREQ = {"A": 900.0, "S": 200.0, "H": 600.0, "N": 400.0, "U": 750.0, "C": 500.0, "O": 300.0, "X": 450.0}


def _msp_rows() -> list[tuple]:
    """(file name, EmoClass, act, val, dom, SpkrID, Gender, Split_Set); Test2 has no labels."""
    rows = []
    k = 2
    plan = [("Train", ["101", "102", "103"], "AASSHHNN"), ("Development", ["104"], "ASHN"),
            ("Test1", ["105", "Unknown"], "ASHN"), ("Train", ["106"], "UCOX")]
    for split, speakers, classes in plan:
        for i, spk in enumerate(speakers):
            for j, c in enumerate(classes):
                a, v, d = MSP_AVD[c]
                # A small per-row offset: the attributes are averages of several raters.
                off = 0.1 * ((i + j) % 3)
                rows.append((f"MSP-PODCAST_{k:04d}_{j + 1:04d}.wav", c, a + off, v - off, d + off, spk,
                             "Female" if (i + j) % 2 else "Male", split))
            k += 1
    for j in range(3):
        rows.append((f"MSP-PODCAST_{k:04d}_{j + 1:04d}.wav", "", None, None, None, "Unknown", "", "Test2"))
    return rows


MSP_ROWS = _msp_rows()
MSP_TEXTS = {r[0][:-4]: f"this is podcast turn {i}" for i, r in enumerate(MSP_ROWS)}


def msp_classes(split: str | None = None) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in MSP_ROWS:
        if r[1] and (split is None or r[7] == split):
            out[r[1]] = out.get(r[1], 0) + 1
    return out


def make_msp_podcast(tmp: Path, overrides: dict | None = None, old_release: bool = False) -> Path:
    """MSP-Podcast/ with Audios/, Labels/labels_consensus.csv and Transcripts/.

    overrides per id (file stem): ``wav``, ``transcript`` ('missing'), or any of
    ``EmoClass, EmoAct, EmoVal, EmoDom, SpkrID``. ``old_release``: ``labels_concensus.csv``
    without ``Split_Set`` plus ``Partitions.txt`` (``<Split>; <FileName>`` lines).
    """
    overrides = overrides or {}
    root = Path(tmp) / "MSP-Podcast"
    (root / "Labels").mkdir(parents=True, exist_ok=True)
    (root / "Transcripts").mkdir(parents=True, exist_ok=True)
    lines = [MSP_HEADER if not old_release else MSP_HEADER.rsplit(",", 1)[0]]
    parts = []
    fmt = lambda x: "" if x is None else (x if isinstance(x, str) else f"{x:.1f}")  # noqa: E731
    for name, emo, a, v, d, spk, gen, split in MSP_ROWS:
        uid = name[:-4]
        o = overrides.get(uid, {})
        emo, spk = o.get("EmoClass", emo), o.get("SpkrID", spk)
        a, v, d = o.get("EmoAct", a), o.get("EmoVal", v), o.get("EmoDom", d)
        fields = [name, emo, fmt(a), fmt(v), fmt(d), spk, gen]
        lines.append(",".join(fields + ([split] if not old_release else [])))
        parts.append(f"{split}; {name}")
        _audio(root / "Audios" / name, o.get("wav"), lambda p, e=emo: write_wav(p, SECONDS, freq=MSP_FREQ.get(e, 350.0)))
        if o.get("transcript") != "missing":
            (root / "Transcripts" / f"{uid}.txt").write_text(MSP_TEXTS[uid] + "\n", encoding="utf-8")
    label_name = "labels_consensus.csv" if not old_release else "labels_concensus.csv"
    (root / "Labels" / label_name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    if old_release:
        (root / "Partitions.txt").write_text("\n".join(parts) + "\n", encoding="utf-8")
    return root


# --- CREMA-D ------------------------------------------------------------------------------

CREMAD_ACTORS = {"1001": ("51", "Male"), "1002": ("21", "Female"), "1003": ("21", "Female"),
                 "1004": ("42", "Female"), "1005": ("29", "Male"), "1076": ("25", "Female")}
CREMAD_EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
CREMAD_FREQ = {"ANG": 900.0, "DIS": 300.0, "FEA": 750.0, "HAP": 600.0, "NEU": 400.0, "SAD": 200.0}
CREMAD_SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI")


def _cremad_files() -> list[str]:
    out = []
    for a, actor in enumerate(CREMAD_ACTORS):
        for e, emo in enumerate(CREMAD_EMOTIONS):
            sent = CREMAD_SENTENCES[(a + e) % len(CREMAD_SENTENCES)]
            level = "XX" if sent != "IEO" else ("HI", "LO", "MD")[(a + e) % 3]
            out.append(f"{actor}_{sent}_{emo}_{level}")
    return out


CREMAD_FILES = _cremad_files()
# The real release's one empty file: an actual name, dropped by every clean prepare.
CREMAD_EMPTY = "1076_MTI_SAD_XX"


def make_cremad(tmp: Path, overrides: dict | None = None, extra: tuple = ()) -> Path:
    """CREMA-D/ with AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav and
    VideoDemographics.csv; ``CREMAD_EMPTY`` is a 0-byte file as in the release.
    overrides per stem: ``wav``. ``extra``: further wav stems (odd names) to write."""
    overrides = overrides or {}
    root = Path(tmp) / "CREMA-D"
    for stem in [*CREMAD_FILES, CREMAD_EMPTY, *extra]:
        emo = stem.split("_")[2] if stem.count("_") == 3 else "NEU"
        how = overrides.get(stem, {}).get("wav", "empty" if stem == CREMAD_EMPTY else None)
        _audio(root / "AudioWAV" / f"{stem}.wav", how, lambda p, e=emo: write_wav(p, SECONDS, freq=CREMAD_FREQ.get(e, 350.0)))
    demo = ["ActorID,Age,Sex,Race,Ethnicity"] + [f"{a},{age},{sex},Caucasian,Not Hispanic" for a, (age, sex) in CREMAD_ACTORS.items()]
    (root / "VideoDemographics.csv").write_text("\n".join(demo) + "\n", encoding="utf-8")
    return root


# --- RAVDESS ------------------------------------------------------------------------------

RAVDESS_ACTORS = ("01", "02", "03", "04", "05", "06")
RAVDESS_FREQ = {"01": 400.0, "02": 330.0, "03": 600.0, "04": 200.0, "05": 900.0, "06": 750.0, "07": 300.0, "08": 1000.0}


def _ravdess_files() -> list[str]:
    out = []
    for a, actor in enumerate(RAVDESS_ACTORS):
        for e in range(1, 9):
            intensity = "01" if e == 1 or (a + e) % 2 else "02"
            out.append(f"03-01-{e:02d}-{intensity}-{(a + e) % 2 + 1:02d}-01-{actor}")
    return out


RAVDESS_FILES = _ravdess_files()


def make_ravdess(tmp: Path, overrides: dict | None = None, extra: dict | None = None) -> Path:
    """RAVDESS/Actor_NN/03-01-EE-II-SS-RR-NN.wav (speech only).
    overrides per stem: ``wav``. ``extra``: {stem: actor folder} further files (songs, odd names)."""
    overrides = overrides or {}
    root = Path(tmp) / "RAVDESS"
    files = [(s, f"Actor_{s[-2:]}") for s in RAVDESS_FILES] + [(s, f"Actor_{d}") for s, d in (extra or {}).items()]
    for stem, folder in files:
        emo = stem.split("-")[2] if stem.count("-") == 6 else "01"
        _audio(root / folder / f"{stem}.wav", overrides.get(stem, {}).get("wav"),
               lambda p, e=emo: write_wav(p, SECONDS, freq=RAVDESS_FREQ.get(e, 350.0)))
    return root


# --- EmoDB --------------------------------------------------------------------------------

EMODB_SPEAKERS = ("03", "08", "09", "10")
EMODB_LETTERS = "WLEAFTN"
EMODB_TEXTS = ("a01", "a02", "a04", "a05", "a07", "b01", "b02", "b03", "b09", "b10")
EMODB_FREQ = {"W": 900.0, "L": 250.0, "E": 300.0, "A": 750.0, "F": 600.0, "T": 200.0, "N": 400.0}


def _emodb_files() -> list[str]:
    return [f"{spk}{EMODB_TEXTS[(s + e) % len(EMODB_TEXTS)]}{emo}{'ab'[(s + e) % 2]}"
            for s, spk in enumerate(EMODB_SPEAKERS) for e, emo in enumerate(EMODB_LETTERS)]


EMODB_FILES = _emodb_files()


def make_emodb(tmp: Path, overrides: dict | None = None, extra: tuple = ()) -> Path:
    """emodb/wav/<speaker><text><emotion><version>.wav; overrides per stem: ``wav``."""
    overrides = overrides or {}
    root = Path(tmp) / "emodb"
    for stem in [*EMODB_FILES, *extra]:
        emo = stem[5] if len(stem) == 7 else "N"
        _audio(root / "wav" / f"{stem}.wav", overrides.get(stem, {}).get("wav"),
               lambda p, e=emo: write_wav(p, SECONDS, freq=EMODB_FREQ.get(e, 350.0), sr=16000))
    return root
