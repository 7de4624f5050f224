"""Audio decoding: one place that turns (file, span) into mono float32 at a target rate.

WAV/FLAC/OGG go through soundfile (libsndfile), reading only the requested span; anything
else (MELD's and MOSI's mp4) goes through PyAV, which bundles FFmpeg. torchaudio is not
used (it does not import beside the pinned torch here) and neither is librosa's deprecated
audioread fallback.
"""
from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mer.common.errors import MerError

SOUNDFILE_EXTS = {".wav", ".flac", ".ogg", ".aiff", ".aif"}


class AudioError(MerError):
    """Audio that cannot be used; ``reason`` is a short code for reports."""

    def __init__(self, path, reason: str, detail: str = ""):
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


@dataclass
class AudioInfo:
    sample_rate: int
    frames: int
    channels: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def _wav_truncation(path: Path) -> str | None:
    """Return a reason if a RIFF/WAVE file declares more data than it holds.

    libsndfile quietly reads what is there, so a cut-off download would otherwise pass.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return "not a RIFF/WAVE file"
        pos = 12
        while True:
            f.seek(pos)
            ch = f.read(8)
            if len(ch) < 8:
                return "no data chunk"
            cid, csize = ch[:4], struct.unpack("<I", ch[4:])[0]
            if cid == b"data":
                have = size - (pos + 8)
                if csize != 0xFFFFFFFF and have < csize:
                    return f"truncated: header declares {csize} data bytes, file holds {have}"
                return None
            pos += 8 + csize + (csize & 1)


def _tail_unreadable(path: Path, frames: int, n: int = 256) -> str | None:
    """Return a reason if the last frames a header promises cannot be decoded.

    FLAC/OGG headers state the total length, so a cut-off file passes ``sf.info`` with its
    full duration; decoding the final ``n`` frames (one seek) exposes it.
    """
    import soundfile as sf

    n = min(n, frames)
    try:
        with sf.SoundFile(str(path)) as f:
            f.seek(frames - n)
            got = len(f.read(n, dtype="float32"))
    except Exception as e:
        return f"truncated: cannot decode the last {n} of {frames} frames ({str(e).splitlines()[0][:120]})"
    if got < n:
        return f"truncated: header declares {frames} frames, decoding stops {n - got} short"
    return None


def probe(path) -> AudioInfo:
    """Header-level check of an audio file; raises AudioError naming the file and reason."""
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "missing audio")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file")
    ext = path.suffix.lower()
    if ext in SOUNDFILE_EXTS:
        if ext == ".wav":
            why = _wav_truncation(path)
            if why:
                raise AudioError(path, "unreadable audio", why)
        import soundfile as sf

        try:
            i = sf.info(str(path))
        except Exception as e:  # libsndfile's message is the useful part
            raise AudioError(path, "unreadable audio", str(e).splitlines()[0][:200]) from None
        if i.frames <= 0:
            raise AudioError(path, "empty audio")
        if ext != ".wav":
            why = _tail_unreadable(path, int(i.frames))
            if why:
                raise AudioError(path, "unreadable audio", why)
        return AudioInfo(int(i.samplerate), int(i.frames), int(i.channels))
    return _probe_av(path)


def _import_av(path: Path):
    try:
        import av
    except ImportError:
        raise AudioError(path, "unreadable audio", "PyAV is needed for this format: pip install 'mer[audio]'") from None
    return av


def _audio_stream(container, path: Path):
    streams = [s for s in container.streams if s.type == "audio"]
    if not streams:
        raise AudioError(path, "no audio stream")
    return streams[0]


def _probe_av(path: Path) -> AudioInfo:
    av = _import_av(path)
    try:
        with av.open(str(path)) as c:
            s = _audio_stream(c, path)
            sr = int(s.codec_context.sample_rate or s.rate or 0)
            dur = None
            if s.duration is not None and s.time_base is not None:
                dur = float(s.duration * s.time_base)
            elif c.duration is not None:
                dur = c.duration / 1_000_000
            frames = int(round((dur or 0.0) * sr))
            if dur:
                why = _av_tail_unreadable(c, s, dur)
                if why:
                    raise AudioError(path, "unreadable audio", why)
            return AudioInfo(sr, frames, int(s.codec_context.channels or 1))
    except AudioError:
        raise
    except Exception as e:
        raise AudioError(path, "unreadable audio", str(e).splitlines()[0][:200]) from None


def _av_tail_unreadable(c, s, dur: float, window: float = 0.5, slack: float = 0.25) -> str | None:
    """Return a reason if the last ``window`` s the container promises do not decode.

    An mp4 whose index (moov) sits at the front still opens with its full duration after
    the media data was cut off; seeking near the end and decoding shows what is really there.
    """
    frames = 0
    last = None
    try:
        c.seek(max(0, int((dur - window) / s.time_base)), stream=s, backward=True)
        for fr in c.decode(s):
            frames += 1
            if fr.pts is not None and fr.time_base is not None:
                last = float(fr.pts * fr.time_base) + fr.samples / fr.sample_rate
    except Exception as e:
        return f"truncated: the last {window:g} s do not decode ({str(e).splitlines()[0][:120]})"
    if frames == 0:
        return f"truncated: nothing decodes in the last {window:g} s of the {dur:.2f} s the container declares"
    if last is not None and last < dur - slack:
        return f"truncated: audio ends at {last:.2f} s, the container declares {dur:.2f} s"
    return None


def _resample(x: np.ndarray, sr: int, target: int) -> np.ndarray:
    if sr == target:
        return x
    import soxr  # ships with librosa; high quality and fast

    return soxr.resample(x, sr, target).astype(np.float32, copy=False)


def load(path, sample_rate: int = 16000, start: float | None = None, end: float | None = None) -> np.ndarray:
    """Decode ``path`` (optionally the span [start, end) seconds) to mono float32 at ``sample_rate``."""
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "missing audio")
    start = None if start is None or (isinstance(start, float) and math.isnan(start)) else float(start)
    end = None if end is None or (isinstance(end, float) and math.isnan(end)) else float(end)
    ext = path.suffix.lower()
    if ext in SOUNDFILE_EXTS:
        import soundfile as sf

        try:
            with sf.SoundFile(str(path)) as f:
                sr = f.samplerate
                a = int(round((start or 0.0) * sr))
                b = int(round(end * sr)) if end is not None else f.frames
                if a > 0:
                    f.seek(min(a, f.frames))
                x = f.read(max(0, b - a), dtype="float32", always_2d=True)
        except Exception as e:
            raise AudioError(path, "unreadable audio", str(e).splitlines()[0][:200]) from None
    else:
        x, sr = _decode_av(path, start, end)
    x = x.mean(axis=1) if x.ndim == 2 else x
    return _resample(np.ascontiguousarray(x, dtype=np.float32), sr, sample_rate)


def _decode_av(path: Path, start: float | None, end: float | None) -> tuple[np.ndarray, int]:
    av = _import_av(path)
    try:
        with av.open(str(path)) as c:
            s = _audio_stream(c, path)
            sr = int(s.codec_context.sample_rate)
            # Decode to float planar and mix down ourselves: exact and format-independent.
            chunks = []
            for frame in c.decode(s):
                arr = frame.to_ndarray()
                if arr.dtype.kind == "i":
                    arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
                if frame.format.is_planar:
                    arr = arr.T  # (samples, channels)
                else:
                    arr = arr.reshape(-1, len(frame.layout.channels))
                chunks.append(arr.astype(np.float32, copy=False))
    except AudioError:
        raise
    except Exception as e:
        raise AudioError(path, "unreadable audio", str(e).splitlines()[0][:200]) from None
    if not chunks:
        raise AudioError(path, "empty audio")
    x = np.concatenate(chunks, axis=0)
    a = int(round((start or 0.0) * sr))
    b = int(round(end * sr)) if end is not None else len(x)
    return x[a:b], sr


def file_hash(path, chunk: int = 1 << 20) -> str:
    """blake2b of the file's bytes: feature stores key on audio content, not on names or mtimes."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()
