"""Builders of tiny corpora in the exact on-disk layouts of the real releases.

Each ``make_<corpus>(tmp_path, ...)`` writes a few utterances of short synthetic audio
(sines with a little noise, 16 kHz WAV/FLAC via soundfile, 48 kHz stereo AAC-in-mp4 with a
tiny video track via PyAV, as MELD and MMSA ship them) plus the label/transcript files with
the literal header lines of docs/datasets.md, and returns the corpus root as users unpack it.

Breakage is asked for per utterance with ``overrides={id: {...}}`` so tests can build a broken
corpus in one call; the keys each builder understands are listed in its docstring. What a
clean build holds is in the module-level tables (``IEMOCAP_UTTS``, ``MELD_ROWS``, ...), so
tests compare against data, not against numbers copied by hand.

Import with ``from corpus_fixtures import make_iemocap`` (pytest puts tests/ on sys.path).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

SR = 16000


# --- audio writers ----------------------------------------------------------------------


def tone(seconds: float, sr: int = SR, freq: float = 440.0, seed: int = 0, channels: int = 1) -> np.ndarray:
    """A sine at ``freq`` plus faint noise: (frames,) or (frames, channels), float32."""
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(n)
    x = x.astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def write_wav(path: Path, seconds: float, sr: int = SR, freq: float = 440.0, channels: int = 1, fmt: str = "WAV") -> Path:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(seconds, sr, freq, channels=channels), sr, format=fmt, subtype="PCM_16")
    return path


def write_flac(path: Path, seconds: float, sr: int = SR, freq: float = 440.0) -> Path:
    return write_wav(path, seconds, sr, freq, fmt="FLAC")


def write_mp4(path: Path, seconds: float, sr: int = 48000, freq: float = 440.0, video: bool = True,
              faststart: bool = False) -> Path:
    """A tone as AAC stereo audio (and a small H.264 video track, as MELD's clips have) in an
    mp4 container, written by the library's own mp4 writer (the synthetic MELD's)."""
    from mer.common.synth.writers import write_mp4 as write

    return write(path, tone(seconds, sr, freq).astype(np.float32), sr, video=video, faststart=faststart)


def truncate(path: Path) -> Path:
    """Cut a valid file's bytes in half (a broken download)."""
    b = path.read_bytes()
    path.write_bytes(b[: len(b) // 2])
    return path


def _audio(path: Path, how: str | None, write) -> None:
    """Write the audio unless ``how`` is 'missing'; 'truncated' cuts it; 'empty' leaves 0 bytes."""
    if how == "missing":
        return
    if how == "empty":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        return
    write(path)
    if how == "truncated":
        truncate(path)


# --- IEMOCAP ----------------------------------------------------------------------------

# id, start, end, emotion, (V, A, D), transcript. The audio of utterance i lasts 0.30 + 0.05 i s.
IEMOCAP_UTTS = [
    ("Ses01F_impro01_F000", 6.2901, 8.2357, "neu", (2.5, 2.5, 2.5), "Excuse me."),
    ("Ses01F_impro01_M000", 7.5712, 10.4750, "fru", (2.0, 3.5, 3.5), "Do you have your forms?"),
    ("Ses01F_impro01_F001", 10.01, 11.3925, "ang", (1.5, 4.0, 4.0), "Yeah. [BREATHING]"),
    ("Ses01F_impro01_M001", 11.2, 12.5, "hap", (4.0, 3.0, 3.0), "Okay, [LAUGHTER] sure."),
    ("Ses02M_script01_1_F000", 1.0, 2.5, "sad", (1.5, 2.0, 2.0), "I miss him."),
    ("Ses02M_script01_1_M011", 3.0, 4.2, "exc", (4.5, 4.5, 3.5), "We did it!"),
    ("Ses02M_script01_1_F001", 5.0, 6.0, "xxx", (3.0, 3.0, 3.0), "What do you mean?"),
]
# Transcript lines with no EmoEvaluation entry (overlap segments): ignored, but counted.
IEMOCAP_UNLABELLED = ["Ses01F_impro01_MXX0"]
# The id a per-annotator file in EmoEvaluation/Categorical/ mentions: must never be read.
IEMOCAP_STRAY_ID = "Ses01F_impro01_F099"


def iemocap_duration(uid: str) -> float:
    i = [u[0] for u in IEMOCAP_UTTS].index(uid)
    return round(0.30 + 0.05 * i, 2)


def make_iemocap(tmp: Path, overrides: dict | None = None) -> Path:
    """IEMOCAP_full_release/ with sessions 1 and 2.

    overrides per id: ``emotion``, ``vad`` (3-tuple), ``start``, ``end``, ``text``,
    ``wav`` ('missing' | 'truncated' | 'empty').
    """
    overrides = overrides or {}
    root = Path(tmp) / "IEMOCAP_full_release"
    by_dialog: dict[str, list] = {}
    for i, (uid, s, e, emo, vad, text) in enumerate(IEMOCAP_UTTS):
        o = overrides.get(uid, {})
        dialog = uid.rsplit("_", 1)[0]
        by_dialog.setdefault(dialog, []).append(
            (uid, o.get("start", s), o.get("end", e), o.get("emotion", emo), o.get("vad", vad), o.get("text", text))
        )
        sess = f"Session{int(uid[3:5])}"
        wav = root / sess / "sentences" / "wav" / dialog / f"{uid}.wav"
        _audio(wav, o.get("wav"), lambda p, i=i, uid=uid: write_wav(p, iemocap_duration(uid), freq=200 + 50 * i))
    for dialog, utts in by_dialog.items():
        sess = f"Session{int(dialog[3:5])}"
        d = root / sess / "dialog"
        ev = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        for uid, s, e, emo, (v, a, dd), _ in utts:
            ev.append(f"[{s:.4f} - {e:.4f}]\t{uid}\t{emo}\t[{v:.4f}, {a:.4f}, {dd:.4f}]")
            ev.append("C-E2:\tNeutral;\t()")
            ev.append("C-E3:\tNeutral;\t()")
            ev.append(f"A-E3:\tval 3; act 2; dom  2;\t()")
            ev.append("")
        (d / "EmoEvaluation").mkdir(parents=True, exist_ok=True)
        (d / "EmoEvaluation" / f"{dialog}.txt").write_text("\n".join(ev) + "\n")
        tr = [f"{uid} [{s:08.4f}-{e:08.4f}]: {text}" for uid, s, e, _, _, text in utts]
        if dialog == "Ses01F_impro01":
            tr.insert(2, f"{IEMOCAP_UNLABELLED[0]} [009.0000-009.5000]: Yeah.")
            # Per-annotator labels live in subfolders; this one is even written in the consensus
            # format, so a recursive glob would wrongly pick up an extra utterance and label.
            cat = d / "EmoEvaluation" / "Categorical"
            cat.mkdir(parents=True, exist_ok=True)
            (cat / f"{dialog}_e1_cat.txt").write_text(
                f"{utts[0][0]} :Anger; ()\n"
                f"[1.0000 - 2.0000]\t{IEMOCAP_STRAY_ID}\tang\t[1.0000, 5.0000, 5.0000]\n"
            )
        (d / "transcriptions").mkdir(parents=True, exist_ok=True)
        (d / "transcriptions" / f"{dialog}.txt").write_text("\n".join(tr) + "\n")
        # The whole dialog (stereo) and a word alignment, as the release has them (unused).
        write_wav(d / "wav" / f"{dialog}.wav", 0.5, channels=2)
        fa = root / sess / "sentences" / "ForcedAlignment" / dialog
        fa.mkdir(parents=True, exist_ok=True)
        (fa / f"{utts[0][0]}.wdseg").write_text(
            "\tSFrm  EFrm    SegAScr Word\n\t0     31      -121860 <s>\n\t32    62      -165366 <sil>\n\t63    79      -91264  EXCUSE(1)\n"
        )
    return root


# --- MELD -------------------------------------------------------------------------------

MELD_HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime"
# split -> rows: (Utterance, Speaker, Emotion, Sentiment, Dialogue_ID, Utterance_ID)
MELD_ROWS = {
    "train": [
        ("also I was the point person on my company’s transition from the KL-5 to GR-6 system.", "Chandler", "neutral", "neutral", 0, 0),
        ("You must’ve had your hands full.", "The Interviewer", "neutral", "neutral", 0, 1),
        ("That I did. That I did.", "Chandler", "joy", "positive", 0, 2),
        ("Oh my God!", "Monica", "surprise", "positive", 1, 0),
    ],
    "dev": [
        ("Oh, what, you don’t like it?", "Joey", "anger", "negative", 0, 0),
        ("No, it’s fine.", "Rachel", "sadness", "negative", 0, 1),
    ],
    "test": [
        ("Ew, gross!", "Phoebe", "disgust", "negative", 0, 0),
        ("Why do all you’re coffee mugs have numbers on the bottom?", "Mark", "fear", "negative", 1, 0),
    ],
}
MELD_FILES = {"train": ("train_sent_emo.csv", "train_splits"), "dev": ("dev_sent_emo.csv", "dev_splits_complete"),
              "test": ("test_sent_emo.csv", "output_repeated_splits_test")}
MELD_SECONDS = 0.4


def make_meld(tmp: Path, overrides: dict | None = None, extra_videos: tuple = ()) -> Path:
    """MELD.Raw/ with the three CSVs and split folders.

    overrides per id (``train_dia0_utt0``): ``text``, ``emotion``, ``sentiment``, ``speaker``,
    ``encoding`` ('cp1252': that CSV line is written in Windows-1252 bytes), ``video``
    ('missing' | 'truncated' | 'empty'). ``extra_videos``: (split, 'dia9_utt9') pairs written
    to the split folder with no CSV row.
    """
    overrides = overrides or {}
    root = Path(tmp) / "MELD.Raw"
    root.mkdir(parents=True, exist_ok=True)
    for split, rows in MELD_ROWS.items():
        csv_name, folder = MELD_FILES[split]
        out = [(MELD_HEADER + "\n").encode("utf-8")]
        for sr_no, (text, spk, emo, sent, d, u) in enumerate(rows, 1):
            uid = f"{split}_dia{d}_utt{u}"
            o = overrides.get(uid, {})
            text = o.get("text", text).replace('"', '""')
            line = (
                f'{sr_no},"{text}",{o.get("speaker", spk)},{o.get("emotion", emo)},{o.get("sentiment", sent)},'
                f'{d},{u},8,21,"00:16:{10 + sr_no:02d},059","00:16:{11 + sr_no:02d},731"\n'
            )
            out.append(line.encode(o.get("encoding", "utf-8")))
            _audio(root / folder / f"dia{d}_utt{u}.mp4", o.get("video"), lambda p, k=sr_no: write_mp4(p, MELD_SECONDS, freq=300 + 40 * k))
        (root / csv_name).write_bytes(b"".join(out))
    for split, name in extra_videos:
        write_mp4(root / MELD_FILES[split][1] / f"{name}.mp4", MELD_SECONDS)
    return root


# --- CMU-MOSI / CMU-MOSEI (MMSA) --------------------------------------------------------

MMSA_HEADER = "video_id,clip_id,text,label,label_T,label_A,label_V,annotation,mode"
# video_id, clip_id, text, label, annotation, mode
MMSA_ROWS = [
    ("03bSnISJMiM", "1", "A LOT OF SAD PARTS", "-2.4", "Negative", "train"),
    ("03bSnISJMiM", "2", "BUT IT WAS GOOD", "1.8", "Positive", "train"),
    ("0h-zjBukYpk", "1", "I THINK IT WAS OKAY", "0.0", "Neutral", "valid"),
    ("0h-zjBukYpk", "3", "REALLY REALLY BAD", "-3.0", "Negative", "test"),
    ("1DmNV9C1hbY", "10", "THE BEST MOVIE, HONESTLY", "3.0", "Positive", "test"),
]
MMSA_SECONDS = 0.4


def make_mmsa(tmp: Path, name: str = "MOSI", overrides: dict | None = None, extra_videos: tuple = ()) -> Path:
    """MOSI/ (or MOSEI/) with label.csv and Raw/<video_id>/<clip_id>.mp4.

    overrides per id (``03bSnISJMiM_1``): ``text``, ``label`` (string as written), ``mode``,
    ``video`` ('missing' | 'truncated' | 'empty'). ``extra_videos``: 'video/clip' names with no row.
    """
    overrides = overrides or {}
    root = Path(tmp) / name
    root.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    buf.write(MMSA_HEADER + "\n")
    for k, (vid, clip, text, label, ann, mode) in enumerate(MMSA_ROWS):
        o = overrides.get(f"{vid}_{clip}", {})
        w.writerow([vid, clip, o.get("text", text), o.get("label", label), "", "", "", ann, o.get("mode", mode)])
        _audio(root / "Raw" / vid / f"{clip}.mp4", o.get("video"), lambda p, k=k: write_mp4(p, MMSA_SECONDS, freq=250 + 60 * k))
    (root / "label.csv").write_text(buf.getvalue(), encoding="utf-8")
    for rel in extra_videos:
        write_mp4(root / "Raw" / f"{rel}.mp4", MMSA_SECONDS)
    return root


# --- SLUE-VoxCeleb ----------------------------------------------------------------------

SLUE_HEADER = "id\tnormalized_text\tspeaker_id\tsplit\tsentiment\tstart_second\tend_second"
SLUE_BLIND_HEADER = "id\tnormalized_text\tspeaker_id\tsplit\tstart_second\tend_second"
# split -> rows: (id, text, speaker, sentiment, start, end); every flac lasts SLUE_SECONDS.
SLUE_ROWS = {
    "fine-tune": [
        ("id10059_229vKIGbxrI_00001", "and i think it's a great \"opportunity\"", "id10059", "Positive", 0.5, 2.0),
        ("id10059_229vKIGbxrI_00002", "we were not sure about it", "id10059", "Neutral", 0.25, 1.75),
        ("id10090_8mbbkCHtwR4_00003", "that was a disaster", "id10090", "Negative", 0.0, 2.5),
        ("id10090_8mbbkCHtwR4_00004", "well it was good and bad", "id10090", "<mixed>", 1.0, 2.0),
    ],
    "dev": [
        ("id10012_0AXjxNXiEzo_00001", "i loved working with him", "id10012", "Positive", 0.2, 1.2),
        ("id10012_0AXjxNXiEzo_00002", "it is what it is", "id10012", "Disagreement", 0.3, 2.1),
    ],
    "test": [
        ("id10270_5r0dWxy17C8_00001", "no labels here", "id10270", None, 0.0, 1.0),
        ("id10270_5r0dWxy17C8_00002", "nor here", "id10270", None, 0.5, 1.5),
        ("id10270_5r0dWxy17C8_00003", "or here", "id10270", None, 0.5, 2.5),
    ],
}
SLUE_FILES = {"fine-tune": ("slue-voxceleb_fine-tune.tsv", "fine-tune_raw"), "dev": ("slue-voxceleb_dev.tsv", "dev_raw"),
              "test": ("slue-voxceleb_test_blind.tsv", "test_raw")}
SLUE_SECONDS = 3.0


def make_slue(tmp: Path, overrides: dict | None = None, old_header: bool = False) -> Path:
    """slue-voxceleb/ with the three tsv files and <split>_raw/<id>.flac.

    overrides per id: ``text``, ``sentiment``, ``start``, ``end``, ``flac``
    ('missing' | 'truncated' | 'empty'). ``old_header``: an older release's column set
    (``id, sentiment, normalized_text, speaker_id``: other order, no span columns).
    """
    overrides = overrides or {}
    root = Path(tmp) / "slue-voxceleb"
    root.mkdir(parents=True, exist_ok=True)
    for split, rows in SLUE_ROWS.items():
        tsv, folder = SLUE_FILES[split]
        if old_header:
            lines = ["id\tsentiment\tnormalized_text\tspeaker_id"] if split != "test" else ["id\tnormalized_text\tspeaker_id"]
        else:
            lines = [SLUE_HEADER if split != "test" else SLUE_BLIND_HEADER]
        for k, (uid, text, spk, sent, s, e) in enumerate(rows):
            o = overrides.get(uid, {})
            text, sent, s, e = o.get("text", text), o.get("sentiment", sent), o.get("start", s), o.get("end", e)
            if old_header:
                lines.append("\t".join([uid, sent, text, spk]) if split != "test" else "\t".join([uid, text, spk]))
            elif split == "test":
                lines.append("\t".join([uid, text, spk, split, f"{s}", f"{e}"]))
            else:
                lines.append("\t".join([uid, text, spk, split, sent, f"{s}", f"{e}"]))
            _audio(root / folder / f"{uid}.flac", o.get("flac"), lambda p, k=k: write_flac(p, SLUE_SECONDS, freq=220 + 70 * k))
        (root / tsv).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


# --- a lab's own CSV / JSONL ------------------------------------------------------------

# path (relative to the CSV unless it starts with '/'), text, label, speaker, start, end, split, id
CSV_ROWS = [
    ("audio/spk1/a.wav", "hello there", "happy", "spk1", None, None, "train", None),
    ("audio/spk1/b.wav", "go away", "angry", "spk1", None, None, "train", None),
    ("audio/spk2/a.wav", "i am fine", "neutral", "spk2", None, None, "dev", None),
    ("audio/long.wav", "first half", "sad", "spk2", 0.0, 0.5, "test", "long_1st"),
    ("audio/long.wav", "second half", "happy", "spk2", 0.5, 1.25, "test", "long_2nd"),
]
CSV_SECONDS = 0.6
CSV_LONG_SECONDS = 1.5


def make_csv_corpus(tmp: Path, fmt: str = "csv", name: str | None = None, overrides: dict | None = None,
                    absolute: tuple = ()) -> Path:
    """my_corpus/ with ``metadata.<fmt>`` (or ``name``) and audio/ below it.

    overrides per row index: any column name, or ``wav`` ('missing' | 'truncated' | 'empty').
    ``absolute``: row indexes whose path is written as an absolute path.
    """
    import json

    overrides = overrides or {}
    root = Path(tmp) / "my_corpus"
    root.mkdir(parents=True, exist_ok=True)
    cols = ["path", "text", "label", "speaker", "start", "end", "split", "id"]
    recs = []
    written = set()
    for i, row in enumerate(CSV_ROWS):
        rec = dict(zip(cols, row))
        rec.update({k: v for k, v in overrides.get(i, {}).items() if k != "wav"})
        p = root / rec["path"]
        if i in absolute:
            rec["path"] = str(p)
        if p not in written:
            secs = CSV_LONG_SECONDS if p.name == "long.wav" else CSV_SECONDS
            _audio(p, overrides.get(i, {}).get("wav"), lambda q, secs=secs, i=i: write_wav(q, secs, freq=300 + 40 * i))
            written.add(p)
        recs.append(rec)
    fname = name or f"metadata.{fmt}"
    if fmt == "jsonl":
        (root / fname).write_text("".join(json.dumps({k: v for k, v in r.items() if v is not None}) + "\n" for r in recs))
    else:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in recs:
            w.writerow({k: "" if v is None else v for k, v in r.items()})
        (root / fname).write_text(buf.getvalue(), encoding="utf-8")
    return root


# --- single-modality CSV corpora (issue 13) ----------------------------------------------

MODALITY_CLASSES = ("angry", "happy", "sad", "neutral")
# Each class has its own pitch (audio) and its own words (text), so either modality alone is
# learnable: a unimodal model on such a corpus must reach well above chance.
MODALITY_FREQS = {"angry": 220.0, "happy": 440.0, "sad": 880.0, "neutral": 1760.0}
MODALITY_WORDS = {
    "angry": ("furious", "outraged", "livid", "enraged"),
    "happy": ("delighted", "cheerful", "glad", "joyful"),
    "sad": ("miserable", "gloomy", "heartbroken", "tearful"),
    "neutral": ("ordinary", "usual", "plain", "regular"),
}


def make_modality_csv(tmp: Path, columns: tuple = ("path", "label"), per_class: int = 10, seconds: float = 0.4) -> Path:
    """corpus/metadata.csv with only ``columns`` (of path, text, label, speaker): an
    audio-only corpus is ``("path", "label")``, a text-only one ``("text", "label")``. Audio is a
    class-specific sine with a per-row detune; text a class word in a varying sentence."""
    root = Path(tmp) / "corpus"
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    w.writeheader()
    k = 0
    for label in MODALITY_CLASSES:
        for i in range(per_class):
            rec = {"label": label, "speaker": f"spk{i % 5}"}
            if "path" in columns:
                p = root / "audio" / f"{label}_{i:02d}.wav"
                f = MODALITY_FREQS[label] * float(rng.uniform(0.95, 1.05))
                write_wav(p, seconds, freq=f)
                rec["path"] = f"audio/{p.name}"
            if "text" in columns:
                word = MODALITY_WORDS[label][i % 4]
                rec["text"] = ("I feel {} today", "that was {}", "they were so {}", "honestly {} news")[k % 4].format(word)
            w.writerow({c: rec[c] for c in columns})
            k += 1
    (root / "metadata.csv").write_text(buf.getvalue(), encoding="utf-8")
    return root
