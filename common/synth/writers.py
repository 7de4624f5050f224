"""Post-processing and file writers: padding and noise, wav, MELD-style mp4, word alignments."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mer.common.errors import require
from mer.common.synth.espeak import SYNTH_RATE
from mer.common.synth.plan import Utt


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


def write_mp4(path: Path, x: np.ndarray, sr: int = 48000, video: bool = True, shade: int = 90,
              faststart: bool = False) -> Path:
    """MELD-style mp4: AAC stereo audio (+ a tiny H.264 video stream, as in the release).

    ``fflags=+bitexact`` and single-threaded x264 keep the bytes identical from run to run.
    ``faststart`` puts the index (moov) before the media data, as web-ready files have it
    (the test fixtures write both kinds: a truncated file of each fails differently).
    """
    av = require("av", "audio")
    path.parent.mkdir(parents=True, exist_ok=True)
    st = np.ascontiguousarray(np.stack([x, x * 0.97]).astype(np.float32))  # (2, n), planar
    n = st.shape[1]
    opts = {"fflags": "+bitexact", **({"movflags": "faststart"} if faststart else {})}
    with av.open(str(path), "w", format="mp4", options=opts) as c:
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
    return path


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
