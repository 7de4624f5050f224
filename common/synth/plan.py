"""Planning: speakers and utterances, every random decision made up front in one seeded order."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from mer.common.synth.emotions import FILLERS, F_VOICES, M_VOICES, PHRASES, PROSODY, PUNCT, QUESTION_STARTS


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
