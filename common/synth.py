"""Synthetic corpora with real synthesized speech, in the layouts of real releases.

``generate(out, layout="iemocap" | "meld" | "csv", per_class=20, sessions=5, seed=0)`` writes
a small corpus that the real adapters read exactly as they read the real thing, so the whole
pipeline (prepare -> extract -> train) can be run and tested without any download.

Speech is synthesized by espeak-ng (the library bundled in the ``espeakng-loader`` wheel,
driven through ctypes) at 22,050 Hz and resampled with soxr. Emotion lives in BOTH
modalities, as in acted corpora:

- voice: espeak's rate, pitch, pitch range, volume and word gap depend on the emotion
  (angry: loud, fast, wide range; sad: slow, low, quiet, flat; happy/excited: high, wide;
  neutral: flat), with per-utterance jitter and per-speaker offsets so classes overlap;
- words: per-emotion phrase lists joined with shared fillers ("well", "you know"), with
  occasional phrases from another emotion, so text alone is informative but not perfect.

About 30% of the non-neutral utterances carry their emotion in ONE modality only (neutral
voice + emotional words, or emotional voice + neutral words; the label is the emotion), as
in seed paper 003: a fusion of both modalities can beat either one alone. A small fraction
(``label_noise``, 2%) get a label from another class. White noise is added at 20-30 dB SNR.

``context=0.4`` (iemocap and meld layouts) makes emotion depend on context, for
conversation-level models (``mer train --context dialog``): labels come in stretches of one
emotion (3-6 turns), and that share of the emotional turns that follow a turn of the same
emotion is spoken and worded neutrally but keeps its label (kind ``context`` in
``synth_info.json``): only the neighbouring turns tell what it is.

Determinism: the same arguments give the same bytes. espeak-ng keeps internal state from
one utterance to the next (random seed, pitch flutter phase) that survives even
``espeak_Terminate``/``espeak_Initialize``, so every batch of utterances is synthesized in a
fresh process (spawned, one batch per process) in a fixed order; everything random on the
Python side comes from one seeded numpy Generator. ``synth_info.json`` in the corpus root
records the parameters, counts and the utterances the adapter is expected to drop.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mer.common.errors import MerError, UsageError, require

GENERATOR_VERSION = 1
INFO_FILE = "synth_info.json"
LAYOUTS = ("iemocap", "meld", "csv")
SYNTH_RATE = 22050  # espeak-ng's output rate

# --------------------------------------------------------------------------------------
# Emotions: prosody and wording
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prosody:
    """espeak-ng parameters for one emotion (pitch is added to the speaker's base pitch)."""

    rate: int  # words per minute (espeak default 175)
    pitch: int  # offset on espeak's 0..100 pitch scale
    range: int  # 0..100 (0 = monotone)
    volume: int  # 0..200 (100 = normal)
    wordgap: int = 0  # extra pause between words, units of 10 ms


PROSODY: dict[str, Prosody] = {
    "neu": Prosody(rate=160, pitch=0, range=15, volume=85, wordgap=0),
    # angry: loudest (espeak clips near 200: a harsh, pressed sound), fastest, wide range
    "ang": Prosody(rate=230, pitch=6, range=75, volume=190, wordgap=0),
    "hap": Prosody(rate=170, pitch=18, range=85, volume=110, wordgap=0),
    "exc": Prosody(rate=195, pitch=26, range=95, volume=130, wordgap=0),
    "sad": Prosody(rate=110, pitch=-12, range=8, volume=45, wordgap=5),
    "fru": Prosody(rate=190, pitch=4, range=55, volume=140, wordgap=0),
    "sur": Prosody(rate=170, pitch=28, range=95, volume=120, wordgap=1),
    "fea": Prosody(rate=220, pitch=22, range=60, volume=95, wordgap=0),
    "dis": Prosody(rate=140, pitch=-6, range=40, volume=95, wordgap=2),
}

PHRASES: dict[str, list[str]] = {
    "neu": [
        "the meeting is on tuesday", "I need to fill out these forms", "where is the office",
        "it is on the table", "I will call you later", "the train leaves at nine",
        "can you pass me the paper", "I have an appointment at three", "the line is over there",
        "we need a new license", "it takes about an hour", "what time is it",
        "I parked the car outside", "the report is due on friday", "my number is on the card",
        "the store closes at six", "we moved here last year", "you have to sign here",
    ],
    "ang": [
        "this is ridiculous", "I am sick of this", "how dare you", "get out of my face",
        "you never listen to me", "I hate this place", "that is completely unacceptable",
        "stop lying to me", "what the hell is wrong with you", "I told you a hundred times",
        "this is outrageous", "don't you dare", "I am furious", "shut up",
        "you ruined everything", "leave me alone",
    ],
    "hap": [
        "that is wonderful", "I love it", "this is so nice", "I am so happy for you",
        "what a lovely day", "that sounds great", "I am really glad", "you look beautiful",
        "thank you so much", "this is the best", "I can't stop smiling", "we had so much fun",
        "that is fantastic news", "I feel great",
    ],
    "exc": [
        "oh my god we did it", "this is amazing", "I can't believe it", "we are going to vegas",
        "yes yes yes", "that is incredible", "I got the job", "let's celebrate",
        "this is awesome", "wow look at this", "we won", "best day ever",
    ],
    "sad": [
        "I miss her so much", "I feel so alone", "nothing matters anymore", "he is gone",
        "I am so sorry", "it hurts", "I lost everything", "I can't do this anymore",
        "I just want to cry", "nobody cares", "it's all my fault", "I am so tired",
        "we will never see him again", "everything is falling apart",
    ],
    "fru": [
        "why does this always happen", "I have been waiting for hours", "this line never moves",
        "nobody here can help me", "I already filled that out", "this is a waste of time",
        "you keep saying that", "I don't understand why",
    ],
    "sur": [
        "wait what", "really", "no way", "are you serious", "I didn't expect that",
        "you're kidding", "since when", "how did that happen",
    ],
    "fea": [
        "I am scared", "what was that noise", "please don't hurt me", "I think someone is here",
        "we have to get out", "I am afraid", "something is wrong",
    ],
    "dis": [
        "that is disgusting", "gross", "I can't even look at it", "that smells awful",
        "how could you eat that", "ew", "that is revolting",
    ],
}

# Shared by every emotion: they carry no label information.
FILLERS = ["well", "you know", "I mean", "I think", "so", "okay", "actually", "listen", "look", "um", "right"]

PUNCT = {"neu": ".", "ang": "!", "hap": "!", "exc": "!", "sad": ".", "fru": ".", "sur": "?", "fea": "!", "dis": "."}
QUESTION_STARTS = ("where", "what", "can", "how", "why", "are", "since")

# Dimensional labels (valence, activation, dominance) on IEMOCAP's 1..5 scale: the centre
# each annotator's integer rating is drawn around.
VAD_CENTRE = {
    "neu": (3.0, 2.2, 2.6), "ang": (1.7, 3.9, 3.9), "hap": (4.0, 3.1, 3.1), "exc": (4.1, 3.9, 3.4),
    "sad": (1.9, 2.0, 2.0), "fru": (2.0, 3.2, 3.4), "sur": (3.4, 3.8, 2.9), "fea": (1.9, 3.6, 1.9),
    "dis": (1.8, 3.0, 3.3), "xxx": (2.6, 2.9, 2.9),
}

IEMOCAP_NAMES = {
    "neu": "Neutral", "fru": "Frustration", "ang": "Anger", "sad": "Sadness", "hap": "Happiness",
    "exc": "Excited", "sur": "Surprise", "fea": "Fear", "dis": "Disgust", "oth": "Other",
}

# MELD's seven emotions -> the prosody/wording profile that renders them.
MELD_PROFILE = {
    "neutral": "neu", "joy": "hap", "surprise": "sur", "anger": "ang",
    "sadness": "sad", "disgust": "dis", "fear": "fea",
}
MELD_SENTIMENT = {"neutral": "neutral", "joy": "positive", "anger": "negative", "sadness": "negative",
                  "disgust": "negative", "fear": "negative"}  # surprise: either, drawn per utterance
MELD_HEADER = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
               "Season", "Episode", "StartTime", "EndTime"]
MELD_FOLDERS = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}
MELD_SPEAKERS = [("Chandler", "M"), ("Monica", "F"), ("Ross", "M"), ("Rachel", "F"), ("Joey", "M"), ("Phoebe", "F")]

CSV_LABELS = {"ang": "angry", "hap": "happy", "sad": "sad", "neu": "neutral"}

# espeak voices (accent + variant), one per speaker, plus a base pitch drawn per speaker.
# Variants with a "breath" setting (f2, f3, f5) are left out: their breath noise differs
# from one process to the next (seen here with espeak-ng 1.52), which breaks determinism.
F_VOICES = ["en-us+f1", "en+f4", "en-029+f1", "en-gb-x-rp+f4", "en-us-nyc+f1", "en-gb-scotland+f4"]
M_VOICES = ["en-us+m1", "en+m2", "en-029+m3", "en-gb-x-rp+m4", "en-us-nyc+m5", "en-gb-scotland+m6", "en-us+m7"]


# --------------------------------------------------------------------------------------
# Plan: every random decision, made up front in one seeded order
# --------------------------------------------------------------------------------------


@dataclass
class Speaker:
    key: str
    gender: str
    voice: str  # espeak voice name, e.g. "en-us+f3"
    pitch: int  # base pitch, 0..100
    rate_factor: float
    volume_factor: float


@dataclass
class Utt:
    idx: int
    uid: str
    label: str  # the written label (IEMOCAP code / MELD emotion / csv label)
    voice_emo: str  # profile the voice is rendered with
    text_emo: str  # profile the words come from
    kind: str  # both | text_only | voice_only | mixed (xxx) | label_noise
    speaker: Speaker
    spoken: str  # what espeak says
    text: str  # what the transcript says (may hold [LAUGHTER] etc.)
    rate: int
    pitch: int
    range: int
    volume: int
    wordgap: int
    snr_db: float
    pad: tuple[float, float]
    noise_seed: int
    extra: dict = field(default_factory=dict)


def _speaker(rng: np.random.Generator, key: str, gender: str, n: int) -> Speaker:
    voices = F_VOICES if gender == "F" else M_VOICES
    base = int(rng.integers(56, 66)) if gender == "F" else int(rng.integers(32, 42))
    return Speaker(key, gender, voices[n % len(voices)], base, float(rng.uniform(0.95, 1.05)), float(rng.uniform(0.9, 1.1)))


def _sentence(phrase: str, profile: str) -> str:
    p = PUNCT[profile]
    if profile in ("neu", "fru") and phrase.split()[0] in QUESTION_STARTS:
        p = "?"
    return phrase[0].upper() + phrase[1:] + p


def _words(rng: np.random.Generator, profile: str, confuse: float = 0.12) -> str:
    """1-2 phrases of ``profile`` (sometimes one from another emotion) plus shared fillers."""
    pool = PHRASES[profile]
    k = 1 if rng.random() < 0.45 else 2
    picks = [pool[i] for i in rng.choice(len(pool), size=k, replace=False)]
    if rng.random() < confuse:
        other = [p for p in PHRASES if p != profile]
        o = other[int(rng.integers(len(other)))]
        picks[-1] = PHRASES[o][int(rng.integers(len(PHRASES[o])))]
    sents = [_sentence(p, profile) for p in picks]
    if rng.random() < 0.5:
        f = FILLERS[int(rng.integers(len(FILLERS)))]
        first = sents[0] if re.match(r"I\b", sents[0]) else sents[0][0].lower() + sents[0][1:]
        sents[0] = f[0].upper() + f[1:] + ", " + first
    return " ".join(sents)


def _render(rng, idx, uid, label, voice_emo, text_emo, kind, spk: Speaker, tokens: bool = True) -> Utt:
    pr = PROSODY[voice_emo]
    spoken = _words(rng, text_emo)
    text = spoken
    if tokens:
        # Non-speech tokens the way IEMOCAP transcribes them (tied to the words' emotion).
        if text_emo in ("hap", "exc") and rng.random() < 0.15:
            text = text + " [LAUGHTER]" if rng.random() < 0.5 else "[LAUGHTER] " + text
        elif text_emo == "sad" and rng.random() < 0.12:
            text = "[BREATHING] " + text
    rate = int(round(pr.rate * spk.rate_factor * rng.uniform(0.93, 1.07)))
    pitch = int(np.clip(spk.pitch + pr.pitch + rng.integers(-4, 5), 0, 100))
    rng_ = int(np.clip(pr.range + rng.integers(-8, 9), 0, 100))
    vol = int(np.clip(round(pr.volume * spk.volume_factor * rng.uniform(0.9, 1.1)), 10, 200))
    return Utt(
        idx=idx, uid=uid, label=label, voice_emo=voice_emo, text_emo=text_emo, kind=kind, speaker=spk,
        spoken=spoken, text=text, rate=max(80, min(450, rate)), pitch=pitch, range=rng_, volume=vol,
        wordgap=pr.wordgap, snr_db=float(rng.uniform(20.0, 30.0)),
        pad=(float(rng.uniform(0.05, 0.3)), float(rng.uniform(0.05, 0.3))), noise_seed=int(rng.integers(2**31)),
    )


def _stretches(rng, emos: list[str], lo: int = 3, hi: int = 6) -> list[str]:
    """The same labels re-ordered into stretches of one emotion (``lo``-``hi`` long), so the
    emotion persists over neighbouring turns (``context`` corpora)."""
    pool = {e: emos.count(e) for e in dict.fromkeys(emos)}
    out: list[str] = []
    while pool:
        names = list(pool)
        w = np.array([pool[e] for e in names], float)
        e = names[int(rng.choice(len(names), p=w / w.sum()))]
        k = min(pool[e], int(rng.integers(lo, hi + 1)))
        out += [e] * k
        pool[e] -= k
        if not pool[e]:
            del pool[e]
    return out


def _context_turn(rng, emo: str, prev: str | None, share: float) -> bool:
    """Whether this turn is rendered neutral in voice and words while keeping its label:
    only when the previous turn of the dialogue has the same emotion (the context tells it)."""
    return share > 0 and prev == emo and emo not in ("neu", "xxx") and rng.random() < share


def _modalities(rng, emo: str, one_modality: float, label_noise: float, noise_pool: list[str]):
    """(voice_emo, text_emo, kind, label) for an utterance of emotion ``emo``."""
    if emo == "xxx":  # no annotator agreement: voice and words from different emotions
        v, t = rng.choice(["ang", "fru", "neu", "sad", "hap"], size=2, replace=False)
        return str(v), str(t), "mixed", emo
    label = emo
    kind = "both"
    if emo != "neu" and rng.random() < one_modality:
        if rng.random() < 0.5:
            return "neu", emo, "text_only", label
        return emo, "neu", "voice_only", label
    if label_noise and rng.random() < label_noise:
        others = [e for e in noise_pool if e != emo]
        label = others[int(rng.integers(len(others)))]
        kind = "label_noise"
    return emo, emo, kind, label


# --------------------------------------------------------------------------------------
# espeak-ng through ctypes (runs in fresh worker processes)
# --------------------------------------------------------------------------------------

_ENGINE = None


class Espeak:
    """libespeak-ng in synchronous mode: ``say`` returns int16 samples at 22,050 Hz and the
    word events (character offset, length, sample) that espeak reports."""

    RATE, VOLUME, PITCH, RANGE, WORDGAP = 1, 2, 3, 4, 7

    def __init__(self):
        import ctypes

        el = require("espeakng_loader", "synth")

        class Event(ctypes.Structure):  # espeak_EVENT from speak_lib.h
            _fields_ = [
                ("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8),
            ]

        lib = ctypes.CDLL(el.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        # 2 = AUDIO_OUTPUT_SYNCHRONOUS: espeak_Synth returns after every callback has run.
        sr = lib.espeak_Initialize(2, 0, el.get_data_path().encode(), 0)
        if sr != SYNTH_RATE:
            raise MerError(f"espeak-ng failed to initialise from {el.get_library_path()} (returned {sr})")
        CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(Event))
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int, int]] = []

        def collect(wav, n, ev):
            if n > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            if ev:
                i = 0
                while ev[i].type != 0:  # espeakEVENT_LIST_TERMINATED
                    e = ev[i]
                    self._events.append((e.type, e.text_position, e.length, e.sample))
                    i += 1
            return 0

        self._cb = CB(collect)  # keep a reference: ctypes callbacks die with their object
        lib.espeak_SetSynthCallback(self._cb)
        self.lib = lib
        self.sample_rate = sr

    def say(self, text: str, voice: str, rate: int, pitch: int, range: int, volume: int, wordgap: int = 0):
        lib = self.lib
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise MerError(f"espeak-ng has no voice {voice!r}")
        for p, v in ((self.RATE, rate), (self.VOLUME, volume), (self.PITCH, pitch), (self.RANGE, range), (self.WORDGAP, wordgap)):
            lib.espeak_SetParameter(p, int(v), 0)
        self._chunks.clear()
        self._events.clear()
        b = text.encode("utf-8")
        rc = lib.espeak_Synth(b, len(b) + 1, 0, 0, 0, 1, None, None)  # 1 = espeakCHARS_UTF8
        if rc != 0 or not self._chunks:
            raise MerError(f"espeak-ng could not synthesize {text!r} (error {rc})")
        return np.concatenate(self._chunks), list(self._events)


def _synth_batch(jobs: list[tuple]) -> list[tuple[np.ndarray, list]]:
    """Synthesize ``jobs`` in order in this process (meant to be a fresh one)."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = Espeak()
    return [_ENGINE.say(*j) for j in jobs]


def _worker_main(jobs_path: str, out_path: str) -> None:
    """``python -m mer.common.synth --worker JOBS.json OUT.npz``: one batch, one fresh process."""
    jobs = [tuple(j) for j in json.loads(Path(jobs_path).read_text())]
    res = _synth_batch(jobs)
    arrays = {f"a{i}": x for i, (x, _) in enumerate(res)}
    arrays["events"] = np.frombuffer(json.dumps([ev for _, ev in res]).encode(), dtype=np.uint8)
    np.savez(out_path, **arrays)


def _run_batch(jobs: list[tuple], tmp: Path, k: int) -> list[tuple[np.ndarray, list]]:
    import subprocess
    import sys

    jp, op = tmp / f"batch{k}.json", tmp / f"batch{k}.npz"
    jp.write_text(json.dumps(jobs))
    # A plain subprocess (not multiprocessing): callers need no `if __name__ == "__main__"`
    # guard, and every batch starts from espeak's pristine state.
    r = subprocess.run([sys.executable, "-m", "mer.common.synth", "--worker", str(jp), str(op)],
                       capture_output=True, text=True)
    if r.returncode != 0 or not op.exists():
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        raise MerError(f"speech synthesis worker failed on batch {k} ({jobs[0][0]!r}...): {tail[0]}")
    with np.load(op) as z:
        events = json.loads(z["events"].tobytes().decode())
        return [(z[f"a{i}"], [tuple(e) for e in events[i]]) for i in range(len(jobs))]


def synthesize(batches: list[list[Utt]], workers: int, quiet: bool = True) -> dict[int, tuple[np.ndarray, list]]:
    """Run espeak over ``batches``, each in its own fresh process (see the module docstring)."""
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    from mer.common.progress import progress

    out: dict[int, tuple[np.ndarray, list]] = {}
    with tempfile.TemporaryDirectory(prefix="mer-synth-") as td, ThreadPoolExecutor(max(1, workers)) as ex, progress(
        sum(map(len, batches)), "synthesizing speech", disable=quiet
    ) as bar:
        futs = [
            (b, ex.submit(_run_batch, [(u.spoken, u.speaker.voice, u.rate, u.pitch, u.range, u.volume, u.wordgap) for u in b], Path(td), k))
            for k, b in enumerate(batches)
        ]
        for b, f in futs:
            for u, res in zip(b, f.result()):
                out[u.idx] = res
            bar.update(len(b))
    return out


# --------------------------------------------------------------------------------------
# Post-processing and writers
# --------------------------------------------------------------------------------------


def iemocap_length(u: Utt) -> float:
    """A duration (s) drawn for ``u`` from a log-normal fitted to IEMOCAP's utterances (mean
    about 4.5 s, clipped to 1-15 s), from the utterance's own seed (so the other utterances'
    draws do not move)."""
    r = np.random.default_rng([u.noise_seed, 4])
    return float(np.clip(r.lognormal(mean=1.3, sigma=0.6), 1.0, 15.0))


def finish_audio(u: Utt, samples: np.ndarray, sr: int, min_seconds: float = 0.0) -> np.ndarray:
    """int16 @ 22,050 Hz -> float32 @ ``sr`` with silence padding and white noise at ``u.snr_db``;
    the trailing silence is extended to reach ``min_seconds`` (speech longer is kept whole)."""
    import soxr

    x = samples.astype(np.float32) / 32768.0
    if sr != SYNTH_RATE:
        x = soxr.resample(x, SYNTH_RATE, sr).astype(np.float32)
    a, b = (int(round(p * sr)) for p in u.pad)
    b = max(b, int(round(min_seconds * sr)) - a - len(x))
    p_sig = float(np.mean(x.astype(np.float64) ** 2)) + 1e-12  # power of the speech itself
    x = np.concatenate([np.zeros(a, np.float32), x, np.zeros(b, np.float32)])
    rng = np.random.default_rng(u.noise_seed)
    noise = rng.standard_normal(len(x)) * math.sqrt(p_sig / 10 ** (u.snr_db / 10))
    return (x + noise).astype(np.float32)


def to_int16(x: np.ndarray) -> np.ndarray:
    # Clipping is left in on purpose (shouting at espeak volume 200 clips, like real shouting).
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def write_wav(path: Path, x: np.ndarray, sr: int) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), to_int16(x) if x.dtype != np.int16 else x, sr, subtype="PCM_16", format="WAV")


def write_mp4(path: Path, x: np.ndarray, sr: int = 48000, video: bool = True, shade: int = 90) -> None:
    """MELD-style mp4: AAC stereo audio (+ a tiny H.264 video stream, as in the release).

    ``fflags=+bitexact`` and single-threaded x264 keep the bytes identical from run to run.
    """
    av = require("av", "audio")
    path.parent.mkdir(parents=True, exist_ok=True)
    st = np.ascontiguousarray(np.stack([x, x * 0.97]).astype(np.float32))  # (2, n), planar
    n = st.shape[1]
    with av.open(str(path), "w", format="mp4", options={"fflags": "+bitexact"}) as c:
        if video:
            v = c.add_stream("libx264", rate=10, options={"preset": "ultrafast", "threads": "1"})
            v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = c.add_stream("aac", rate=sr, layout="stereo")
        if video:
            img = np.full((48, 64, 3), shade, np.uint8)
            for i in range(max(1, int(math.ceil(n / sr * 10)))):
                f = av.VideoFrame.from_ndarray(img, format="rgb24")
                f.pts = i
                for p in v.encode(f):
                    c.mux(p)
            for p in v.encode():
                c.mux(p)
        for s in range(0, n, 1024):
            fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(st[:, s : s + 1024]), format="fltp", layout="stereo")
            fr.sample_rate = sr
            fr.pts = s
            for p in a.encode(fr):
                c.mux(p)
        for p in a.encode():
            c.mux(p)


def word_segments(u: Utt, events: list, n_synth: int, sr_out: int = 16000) -> list[tuple[float, float, str]]:
    """Word spans (seconds in the output file) from espeak's word (1) and end (5) events."""
    off = u.pad[0]
    marks = sorted((s, t, pos, ln) for t, pos, ln, s in events if t in (1, 5))
    words = []
    for i, (s, t, pos, ln) in enumerate(marks):
        if t != 1 or ln <= 0:
            continue
        w = u.spoken.encode("utf-8")[pos - 1 : pos - 1 + ln].decode("utf-8", "replace")
        w = "".join(ch for ch in w if ch.isalnum() or ch == "'").upper()
        if not w:
            continue
        nxt = next((m[0] for m in marks[i + 1 :] if m[0] > s), n_synth)
        words.append((off + s / SYNTH_RATE, off + nxt / SYNTH_RATE, w))
    return words


def write_wdseg(path: Path, words: list[tuple[float, float, str]], total: float) -> None:
    """IEMOCAP ForcedAlignment-style word segmentation (10 ms frames).

    Boundaries come from espeak's own word events; SegAScr is written as 0 because there is
    no acoustic model score to report.
    """
    lines = ["\tSFrm  EFrm    SegAScr Word"]
    last = 0
    segs = []
    if words and int(words[0][0] * 100) > 0:
        last = int(words[0][0] * 100) - 1
        segs.append((0, last, "<s>"))
    for s, e, w in words:
        sf_, ef = int(s * 100), max(int(s * 100), int(e * 100) - 1)
        if sf_ > last + 1 and segs:
            segs.append((last + 1, sf_ - 1, "<sil>"))
        segs.append((sf_, ef, w))
        last = ef
    end = int(total * 100) - 1
    if end > last:
        segs.append((last + 1, end, "</s>"))
    for a, b, w in segs:
        lines.append(f"\t{a:<5d} {b:<5d} {0:<7d} {w}")
    lines.append(" Total Score: 0")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _fmt_t(t: float, width: int = 8) -> str:
    return f"{t:0{width}.4f}"


# --------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------


def _iemocap_plan(rng, cfg: "SynthConfig"):
    pc = cfg.per_class
    sessions = []
    idx = 0
    for s in range(1, cfg.sessions + 1):
        spk = {g: _speaker(rng, f"Ses{s:02d}_{g}", g, s - 1) for g in ("F", "M")}
        emos = (["ang"] * pc + ["hap"] * (pc // 2) + ["exc"] * (pc - pc // 2) + ["sad"] * pc + ["neu"] * pc
                + ["fru"] * max(1, pc // 5) + ["sur"] * max(1, pc // 10) + ["xxx"] * max(1, pc // 8))
        emos = [emos[i] for i in rng.permutation(len(emos))]
        if cfg.context > 0:
            emos = _stretches(rng, emos)
        # At least F/M impro and F/M script dialogs in every session, about 14 turns each.
        n_dlg = min(len(emos), max(4, int(round(len(emos) / 14))))
        bounds = np.linspace(0, len(emos), n_dlg + 1).round().astype(int)
        dialogs = []
        for d in range(n_dlg):
            # Each scenario is recorded twice (F, then M wearing the markers), as in the
            # release: Ses01F_impro01, Ses01M_impro01, Ses01F_script01_1, Ses01M_script01_1, ...
            pair, marker = d // 2, "FM"[d % 2]
            k = pair // 2
            name = (f"Ses{s:02d}{marker}_impro{k + 1:02d}" if pair % 2 == 0
                    else f"Ses{s:02d}{marker}_script{k // 3 + 1:02d}_{k % 3 + 1}")
            counters = {"F": 0, "M": 0}
            t = float(rng.uniform(1.5, 6.0))
            utts = []
            prev = None
            for j, emo in enumerate(emos[bounds[d] : bounds[d + 1]]):
                g = "FM"[(j + (d % 2)) % 2] if rng.random() > 0.15 else "FM"[int(rng.integers(2))]
                uid = f"{name}_{g}{counters[g]:03d}"
                counters[g] += 1
                if _context_turn(rng, emo, prev, cfg.context):
                    v, te, kind, label = "neu", "neu", "context", emo
                else:
                    v, te, kind, label = _modalities(rng, emo, cfg.one_modality, cfg.label_noise, ["ang", "hap", "exc", "sad", "neu"])
                prev = emo
                u = _render(rng, idx, uid, label, v, te, kind, spk[g])
                u.extra = {"session": s, "dialog": name, "gender": g, "vad": _vad(rng, label), "gap": float(rng.uniform(0.2, 1.4))}
                utts.append(u)
                idx += 1
            dialogs.append((name, utts, t))
        sessions.append((s, spk, dialogs))
    return sessions


def _vad(rng, label: str):
    c = VAD_CENTRE.get(label, VAD_CENTRE["xxx"])
    n_ann = int(rng.integers(2, 4))
    ann = np.clip(np.round(np.asarray(c)[None, :] + rng.normal(0, 0.6, size=(n_ann, 3))), 1, 5).astype(int)
    return ann  # (annotators, 3) integer ratings


def _categorical(rng, label: str) -> list[str]:
    """Per-evaluator categorical labels whose majority is ``label`` (none for xxx)."""
    names = [k for k in IEMOCAP_NAMES if k != "oth"]
    if label == "xxx":
        picks = rng.choice(names, size=3, replace=False)
        return [IEMOCAP_NAMES[str(p)] for p in picks]
    out = [IEMOCAP_NAMES[label]] * 3
    if rng.random() < 0.35:
        out[int(rng.integers(3))] = IEMOCAP_NAMES[names[int(rng.integers(len(names)))]]
    if rng.random() < 0.15:  # evaluators sometimes tick two boxes
        out[0] = out[0] + "; " + IEMOCAP_NAMES[names[int(rng.integers(len(names)))]]
    return out


def _write_iemocap(out: Path, cfg, rng, workers: int, quiet: bool) -> dict:
    import soundfile as sf

    plan = _iemocap_plan(rng, cfg)
    batches = [[u for _, utts, _ in dialogs for u in utts] for _, _, dialogs in plan]
    audio = synthesize(batches, workers, quiet)
    sr = 16000
    expected_drop: list[dict] = []
    notes = 0
    defect_trunc = defect_empty = None
    if cfg.defects:
        first = [u for _, utts, _ in plan[0][2] for u in utts]  # session 1 has >= 7 utterances
        defect_trunc, defect_empty = first[1].uid, first[2].uid
    counts: dict[str, int] = {}
    kinds: dict[str, int] = {}
    for s, spk, dialogs in plan:
        sdir = out / f"Session{s}"
        for name, utts, t in dialogs:
            eval_lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            trans = []
            cat = {e: [] for e in ("e1", "e2", "e3")}
            atr = {e: [] for e in ("e3", "e4")}
            dialog_track = []
            xx = {"F": 0, "M": 0}
            for u in utts:
                samples, events = audio[u.idx]
                x = finish_audio(u, samples, sr, iemocap_length(u) if cfg.lengths == "iemocap" else 0.0)
                dur = len(x) / sr
                start, end = t, t + dur
                wav = sdir / "sentences" / "wav" / name / f"{u.uid}.wav"
                write_wav(wav, x, sr)
                if cfg.alignments:
                    write_wdseg(sdir / "sentences" / "ForcedAlignment" / name / f"{u.uid}.wdseg",
                                word_segments(u, events, len(samples)), dur)
                dialog_track.append((start, u.extra["gender"], x))
                ann = u.extra["vad"]
                v, a, d = ann.mean(axis=0)
                eval_lines.append(f"[{start:.4f} - {end:.4f}]\t{u.uid}\t{u.label}\t[{v:.4f}, {a:.4f}, {d:.4f}]")
                cats = _categorical(rng, u.label)
                for ev, c in zip(("C-E1", "C-E2", "C-E3"), cats):
                    eval_lines.append(f"{ev}:\t{c};\t()")
                for k, row in enumerate(ann):
                    eval_lines.append(f"A-E{k + 1}:\tval {row[0]}; act {row[1]}; dom  {row[2]};\t()")
                eval_lines.append("")
                for (ek, lst), c in zip(cat.items(), cats):
                    lst.append(f"{u.uid} :{'Neutral state' if c == 'Neutral' else c}; ()")
                for (ek, lst), row in zip(atr.items(), ann):
                    lst.append(f"{u.uid} :val {row[0]}; act {row[1]}; dom  {row[2]}; ()")
                text = u.text
                if u.uid == defect_empty:
                    text = ""
                    expected_drop.append({"id": u.uid, "reason": "empty transcript"})
                trans.append(f"{u.uid} [{_fmt_t(start)}-{_fmt_t(end)}]: {text}".rstrip() if text else f"{u.uid} [{_fmt_t(start)}-{_fmt_t(end)}]:")
                # Overlapping back-channel segments: transcribed, never labelled (MXX0 / FXX0).
                if rng.random() < 0.08:
                    g = "M" if u.extra["gender"] == "F" else "F"
                    os_ = end - float(rng.uniform(0.1, 0.4))
                    word = ["Yeah.", "Mm-hmm.", "Okay.", "Right."][int(rng.integers(4))]
                    trans.append(f"{name}_{g}XX{xx[g]} [{_fmt_t(os_)}-{_fmt_t(os_ + 0.6)}]: {word}")
                    xx[g] += 1
                    notes += 1
                if u.uid == defect_trunc:
                    raw = wav.read_bytes()
                    wav.write_bytes(raw[: 44 + (len(raw) - 44) // 3])  # header still declares the full length
                    expected_drop.append({"id": u.uid, "reason": "unreadable audio"})
                counts[u.label] = counts.get(u.label, 0) + 1
                kinds[u.kind] = kinds.get(u.kind, 0) + 1
                t = end + u.extra["gap"]
            ev_dir = sdir / "dialog" / "EmoEvaluation"
            ev_dir.mkdir(parents=True, exist_ok=True)
            (ev_dir / f"{name}.txt").write_text("\n".join(eval_lines) + "\n")
            for ek, lst in cat.items():
                (ev_dir / "Categorical").mkdir(exist_ok=True)
                (ev_dir / "Categorical" / f"{name}_{ek}_cat.txt").write_text("\n".join(lst) + "\n")
            for ek, lst in atr.items():
                (ev_dir / "Attribute").mkdir(exist_ok=True)
                (ev_dir / "Attribute" / f"{name}_{ek}_atr.txt").write_text("\n".join(lst) + "\n")
            tdir = sdir / "dialog" / "transcriptions"
            tdir.mkdir(parents=True, exist_ok=True)
            (tdir / f"{name}.txt").write_text("\n".join(trans) + "\n")
            if cfg.dialog_wavs:
                # Whole dialog, stereo: each actor's headset on its own channel, the other
                # actor audible at a lower level (cross-talk), as in the release.
                total = int(math.ceil((t + 0.5) * sr))
                st = np.zeros((total, 2), np.float32)
                for start, g, x in dialog_track:
                    a = int(round(start * sr))
                    ch = 0 if g == "F" else 1
                    st[a : a + len(x), ch] += x
                    st[a : a + len(x), 1 - ch] += 0.25 * x
                dw = sdir / "dialog" / "wav" / f"{name}.wav"
                dw.parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(dw), to_int16(st), sr, subtype="PCM_16", format="WAV")
    return {"labels": dict(sorted(counts.items())), "kinds": dict(sorted(kinds.items())),
            "unlabelled_transcript_lines": notes, "expected_drops": expected_drop,
            "n_utterances": sum(counts.values()), "sessions": cfg.sessions, "speakers": 2 * cfg.sessions}


def _meld_time(t: float) -> str:
    ms = int(round(t * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def _meld_text_traps(rng, text: str) -> tuple[str, str | None]:
    """Curly apostrophes/quotes in some texts, and mojibake (UTF-8 read as cp1252) in a few."""
    trap = None
    if "'" in text and rng.random() < 0.5:
        text = text.replace("'", "\u2019")
        trap = "curly"
    elif rng.random() < 0.08:
        text = "\u201c" + text + "\u201d"
        trap = "curly"
    if trap == "curly" and "\u2019" in text and "\u201c" not in text and rng.random() < 0.25:
        text = text.encode("utf-8").decode("cp1252")  # ’ -> â€™, exactly as in the release
        trap = "mojibake"
    return text, trap


def _write_meld(out: Path, cfg, rng, workers: int, quiet: bool) -> dict:
    pc = cfg.per_class
    speakers = [_speaker(rng, name, g, i) for i, (name, g) in enumerate(MELD_SPEAKERS)]
    emos = [e for e in MELD_PROFILE for _ in range(pc)]
    emos = [emos[i] for i in rng.permutation(len(emos))]
    # Split per emotion, 60/20/20 in a cycle that gives every split every emotion as soon as
    # per_class >= 3.
    cycle = ["train", "test", "dev", "train", "train"]
    seen: dict[str, int] = {}
    split_of = []
    if cfg.context > 0:
        # stretches of one emotion, each stretch in one split, so dialogues (cut from each
        # split in order) hold them
        emos = _stretches(rng, emos)
        starts = [i for i in range(len(emos)) if i == 0 or emos[i] != emos[i - 1]]
        for k, a in enumerate(starts):
            b = starts[k + 1] if k + 1 < len(starts) else len(emos)
            split_of += [cycle[k % 5]] * (b - a)
    else:
        for e in emos:
            k = seen.get(e, 0)
            seen[e] = k + 1
            split_of.append(cycle[k % 5])
    utts = []
    last: dict[str, str] = {}
    for i, (e, split) in enumerate(zip(emos, split_of)):
        prof = MELD_PROFILE[e]
        if prof != "neu" and _context_turn(rng, e, last.get(split), cfg.context):
            v, te, kind = "neu", "neu", "context"
        else:
            v, te, kind, _ = _modalities(rng, prof, cfg.one_modality, 0.0, [])
        last[split] = e
        spk = speakers[int(rng.integers(len(speakers)))]
        u = _render(rng, i, "", e, v, te, kind, spk, tokens=False)
        text, trap = _meld_text_traps(rng, u.text)
        sent = MELD_SENTIMENT.get(e) or ("positive" if rng.random() < 0.5 else "negative")
        u.text = text
        u.extra = {"split": split, "sentiment": sent, "trap": trap}
        utts.append(u)
    audio = synthesize([utts[i : i + 40] for i in range(0, len(utts), 40)], workers, quiet)
    sr = 48000
    expected_drop, traps, counts = [], {"curly": 0, "mojibake": 0}, {}
    orphans = []
    for split, folder in MELD_FOLDERS.items():
        rows = [u for u in utts if u.extra["split"] == split]
        dia, uttn = 0, 0
        dlen = int(rng.integers(2, 6))
        t = float(rng.uniform(60, 1200))
        season, episode = int(rng.integers(1, 11)), int(rng.integers(1, 25))
        recs = []
        for sr_no, u in enumerate(rows, 1):
            if uttn >= dlen:
                dia, uttn, dlen = dia + 1, 0, int(rng.integers(2, 6))
                t = float(rng.uniform(60, 1200))
                season, episode = int(rng.integers(1, 11)), int(rng.integers(1, 25))
            samples, _ = audio[u.idx]
            x = finish_audio(u, samples, sr)
            dur = len(x) / sr
            u.uid = f"dia{dia}_utt{uttn}"
            recs.append([sr_no, u.text, u.speaker.key, u.label, u.extra["sentiment"], dia, uttn, season, episode,
                         _meld_time(t), _meld_time(t + dur)])
            missing = cfg.defects and split == "train" and sr_no == 2
            if missing:
                expected_drop.append({"id": f"{split}_{u.uid}", "reason": "missing audio"})  # the adapter's id
            else:
                write_mp4(out / folder / f"{u.uid}.mp4", x, sr, video=cfg.video, shade=40 + 30 * speakers.index(u.speaker))
            if u.extra["trap"]:
                traps[u.extra["trap"]] += 1
            counts[f"{split}/{u.label}"] = counts.get(f"{split}/{u.label}", 0) + 1
            t += dur + float(rng.uniform(0.2, 2.0))
            uttn += 1
        if cfg.defects and split == "train" and rows:
            # A file in the folder that no CSV row names (the release has these too).
            u = rows[0]
            write_mp4(out / folder / f"dia{dia + 7}_utt0.mp4", finish_audio(u, audio[u.idx][0], sr), sr, video=cfg.video)
            orphans.append(f"{folder}/dia{dia + 7}_utt0.mp4")
        out.mkdir(parents=True, exist_ok=True)
        with open(out / f"{split}_sent_emo.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(MELD_HEADER)
            w.writerows(recs)
    return {"labels": dict(sorted(counts.items())), "text_traps": traps, "expected_drops": expected_drop,
            "unlisted_files": orphans, "n_utterances": len(utts)}


def _write_csv(out: Path, cfg, rng, workers: int, quiet: bool) -> dict:
    pc = cfg.per_class
    n_spk = 2 * cfg.sessions
    speakers = [_speaker(rng, f"spk{i + 1:02d}", "FM"[i % 2], i) for i in range(n_spk)]
    # Speaker-disjoint official splits: the last 20% of speakers test, the 20% before dev.
    n_test = max(1, n_spk // 5)
    split_of = {s.key: ("test" if i >= n_spk - n_test else "dev" if i >= n_spk - 2 * n_test else "train")
                for i, s in enumerate(speakers)}
    utts = []
    for i, emo in enumerate(e for e in CSV_LABELS for _ in range(pc * cfg.sessions)):
        v, te, kind, label = _modalities(rng, emo, cfg.one_modality, cfg.label_noise, list(CSV_LABELS))
        spk = speakers[i % n_spk]
        u = _render(rng, i, f"{spk.key}_{i:04d}", CSV_LABELS[label], v, te, kind, spk, tokens=False)
        utts.append(u)
    order = rng.permutation(len(utts))
    utts = [utts[i] for i in order]
    audio = synthesize([utts[i : i + 60] for i in range(0, len(utts), 60)], workers, quiet)
    sr = 16000
    expected_drop, counts = [], {}
    rows = []
    for j, u in enumerate(utts):
        rel = f"wavs/{u.speaker.key}/{u.uid}.wav"
        text = u.text
        if cfg.defects and j == 0:
            expected_drop.append({"id": u.uid, "reason": "missing audio"})
        else:
            write_wav(out / rel, finish_audio(u, audio[u.idx][0], sr), sr)
        if cfg.defects and j == 1:
            text = ""
            expected_drop.append({"id": u.uid, "reason": "empty transcript"})
        rows.append([rel, text, u.label, u.speaker.key, split_of[u.speaker.key]])
        counts[u.label] = counts.get(u.label, 0) + 1
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path", "text", "label", "speaker", "split"])
        w.writerows(rows)
    return {"labels": dict(sorted(counts.items())), "expected_drops": expected_drop, "n_utterances": len(utts),
            "speakers": n_spk}


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


@dataclass
class SynthConfig:
    layout: str = "iemocap"
    per_class: int = 20  # iemocap: per 4-class emotion per session; meld: per emotion; csv: per label per session
    sessions: int = 5  # iemocap sessions (2 speakers each); csv: 2 * sessions speakers
    seed: int = 0
    one_modality: float = 0.3  # fraction of non-neutral utterances with emotion in one modality only
    label_noise: float = 0.02
    defects: bool = False  # add a few broken items the adapters must drop (listed in synth_info.json)
    dialog_wavs: bool = False  # iemocap: also write dialog/wav/<dialog>.wav (stereo; no adapter reads it)
    alignments: bool = True  # iemocap: also write sentences/ForcedAlignment/*.wdseg
    video: bool = True  # meld: tiny H.264 stream beside the AAC audio, as in the release
    # iemocap/meld: emotion persists over stretches of a dialogue, and this share of the
    # emotional turns that follow a turn of the same emotion is neutral in voice and words
    # but keeps its label (only the context tells it); 0 = utterances independent
    context: float = 0.0
    # iemocap: "espeak" (utterances as long as their speech, 1-8.5 s, mean ~3 s) or "iemocap"
    # (trailing silence extends each to a duration drawn like IEMOCAP's: 1-15 s, mean ~4.5 s)
    lengths: str = "espeak"

    def params(self) -> dict:
        return {"generator_version": GENERATOR_VERSION, **asdict(self)}


WRITERS = {"iemocap": _write_iemocap, "meld": _write_meld, "csv": _write_csv}


def read_info(out) -> dict | None:
    p = Path(out) / INFO_FILE
    return json.loads(p.read_text()) if p.exists() else None


def generate(
    out,
    layout: str = "iemocap",
    per_class: int = 20,
    sessions: int = 5,
    seed: int = 0,
    *,
    one_modality: float = 0.3,
    label_noise: float = 0.02,
    defects: bool = False,
    dialog_wavs: bool = False,
    alignments: bool = True,
    video: bool = True,
    context: float = 0.0,
    lengths: str = "espeak",
    workers: int | None = None,
    quiet: bool = True,
) -> Path:
    """Write a synthetic corpus in ``layout`` under ``out`` and return ``out``.

    ``out`` must be empty or absent (a corpus is never written over other files). The same
    arguments give byte-identical files whatever ``workers`` is.
    """
    if layout not in LAYOUTS:
        raise UsageError(f"unknown synthetic layout {layout!r}; choose one of: {', '.join(LAYOUTS)}")
    if per_class < 1 or sessions < 1:
        raise UsageError(f"per_class ({per_class}) and sessions ({sessions}) must be at least 1")
    if layout == "iemocap" and sessions > 99:
        raise UsageError("IEMOCAP ids hold two session digits: at most 99 sessions")
    if not 0 <= one_modality <= 1 or not 0 <= label_noise < 1:
        raise UsageError("one_modality must be in [0, 1] and label_noise in [0, 1)")
    if not 0 <= context <= 1 or (context and layout == "csv"):
        raise UsageError("context must be in [0, 1], and is for the iemocap and meld layouts (they have dialogues)")
    # Fail here, with the pip command, rather than inside a worker process.
    require("espeakng_loader", "synth")
    require("soxr", "audio")
    if layout == "meld":
        require("av", "audio")
    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()):
        raise MerError(f"{out}: not empty; a synthetic corpus is only written into an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    if lengths not in ("espeak", "iemocap") or (lengths == "iemocap" and layout != "iemocap"):
        raise UsageError(f"lengths {lengths!r}: espeak, or iemocap (for the iemocap layout)")
    cfg = SynthConfig(layout, per_class, sessions, seed, one_modality, label_noise, defects, dialog_wavs, alignments, video,
                      context, lengths)
    rng = np.random.default_rng(np.random.SeedSequence([seed, LAYOUTS.index(layout), GENERATOR_VERSION]))
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    summary = WRITERS[layout](out, cfg, rng, workers, quiet)
    info = {"generator": "mer.common.synth", "params": cfg.params(), **summary}
    (out / INFO_FILE).write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n")
    return out


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        _worker_main(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: python -m mer.common.synth --worker JOBS.json OUT.npz (internal; use generate())")
