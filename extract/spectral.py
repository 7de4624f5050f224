"""MFCC and log-mel spectrograms as batched tensor code (torch.stft + mel filterbank + DCT).

The arithmetic follows librosa 0.11 step for step so that the numbers match it (the tests
check this): periodic Hann window of ``win_length`` zero-padded to ``n_fft``, centred frames
with zero (``constant``) padding, power spectrum, Slaney-normalised mel filterbank equal to
``librosa.filters.mel`` (built here in numpy, see ``slaney_mel``), ``power_to_db`` with
``ref=1``, ``amin=1e-10`` and a per-utterance ``top_db`` floor, and an orthonormal DCT-II for MFCCs. Utterances are sorted by length and
stacked into padded batches of bounded size, so one ``torch.stft`` call covers many
utterances; zero padding beyond an utterance's end changes none of its frames because
centred constant padding already feeds zeros there.

torchaudio is not used: it does not import beside the pinned torch (see environment docs).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from mer.extract.base import EXTRACTORS, Extractor, ExtractorConfig, InputError, OutputSpec, Utterance

# Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, log above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(f):
    f = np.asanyarray(f, dtype=np.float64)
    return np.where(f >= _MIN_LOG_HZ, _MIN_LOG_MEL + np.log(np.maximum(f, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP, f / _F_SP)


def _mel_to_hz(m):
    m = np.asanyarray(m, dtype=np.float64)
    return np.where(m >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL)), _F_SP * m)


def slaney_mel(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Mel filterbank [n_mels, 1 + n_fft // 2], float32: triangles on Slaney's mel scale with
    area normalisation, the same matrix as ``librosa.filters.mel`` with its defaults (the
    tests compare the two). Built here because importing ``librosa.filters`` (scipy.signal,
    numba) took 1.1 s of every extraction run's start-up, for one small matrix."""
    fmax = sr / 2 if fmax is None else fmax
    fft_f = np.fft.rfftfreq(n_fft, 1.0 / sr)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_f[None, :]
    lower = -ramps[:n_mels] / fdiff[:n_mels, None]
    upper = ramps[2:] / fdiff[1:, None]
    # float32 triangles, then the float64 area normalisation, cast back: the same rounding
    # steps as librosa, so the matrices are equal bit for bit.
    w = np.maximum(0.0, np.minimum(lower, upper)).astype(np.float32)
    return (w * (2.0 / (mel_f[2:] - mel_f[:n_mels]))[:, None]).astype(np.float32)


# The last batch's power spectrograms, per thread (see _Spectral._power).
_LAST = threading.local()

# Samples (padded) per torch.stft call: bounds the complex spectrogram to ~tens of MB.
MAX_BATCH_SAMPLES = 2_000_000


@dataclass
class MelConfig(ExtractorConfig):
    sample_rate: int = 16000
    n_mels: int = 64
    n_fft: int = 512
    win_ms: float = 25.0
    hop_ms: float = 10.0
    fmin: float = 0.0
    fmax: float | None = None       # None: sample_rate / 2
    power: float = 2.0
    top_db: float | None = 80.0     # per-utterance floor below the peak, as librosa.power_to_db


@dataclass
class MfccConfig(ExtractorConfig):
    sample_rate: int = 16000
    n_mfcc: int = 40
    n_mels: int = 40
    n_fft: int = 512
    win_ms: float = 25.0
    hop_ms: float = 10.0
    fmin: float = 0.0
    fmax: float | None = None
    top_db: float | None = 80.0
    deltas: bool = False            # append delta and delta-delta (13 + deltas = seed 003's 39-d)
    delta_width: int = 9


class _Spectral(Extractor):
    modality = "audio"
    uses_gpu = False  # cheap enough on CPU workers by default ...
    device_capable = True  # ... but with --device cuda the engine runs it on the GPU
    preload = ("torch",)  # imported once for all local workers (engine)

    def __init__(self, config=None, device: str = "cpu"):
        super().__init__(config, device)
        c = self.config
        self.sample_rate = int(c.sample_rate)
        self.win_length = int(round(c.win_ms * c.sample_rate / 1000))
        self.hop_length = int(round(c.hop_ms * c.sample_rate / 1000))
        if self.win_length > c.n_fft:
            from mer.common.errors import UsageError

            raise UsageError(f"{self.name}: window {c.win_ms} ms = {self.win_length} samples exceeds n_fft {c.n_fft}")
        self._fb = None

    def setup(self) -> None:
        import torch

        c = self.config
        fb = slaney_mel(sr=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax)
        self._torch = torch
        self._dev = torch.device(self.device)
        self._fb = torch.from_numpy(fb.astype(np.float32)).to(self._dev)
        self._window = torch.hann_window(self.win_length, periodic=True, dtype=torch.float32, device=self._dev)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def versions(self) -> dict[str, str]:
        import importlib.metadata as md

        out = {"torch": md.version("torch"), "numpy": np.__version__}
        if getattr(self.config, "deltas", False):  # librosa.feature.delta computes them
            out["librosa"] = md.version("librosa")
        return out

    def _power(self, batch: list[Utterance]) -> list[tuple[list[int], "object", "object"]]:
        """Power spectrograms of ``batch`` in padded groups: [(indices, frames, P [B, F, T])].

        Computed once per batch for every spectral extractor with the same STFT settings:
        ``mfcc`` and ``mel`` in the same run share one ``torch.stft``, which is most of
        their cost. The cache keeps only the last batch (per thread) and holds the audio
        arrays it was keyed on, so their ids cannot be reused by other arrays meanwhile.
        """
        torch = self._torch
        c = self.config
        power = float(getattr(c, "power", 2.0))
        key = (c.n_fft, self.hop_length, self.win_length, power, str(self._dev), tuple(id(u.audio) for u in batch))
        hit = getattr(_LAST, "entry", None)
        if hit is not None and hit[0] == key:
            return hit[2]
        # Similar lengths together: little padding; bounded padded size per stft call.
        order = sorted(range(len(batch)), key=lambda i: len(batch[i].audio))
        groups, cur, cur_max = [], [], 0
        for i in order:
            n = len(batch[i].audio)
            if cur and max(cur_max, n) * (len(cur) + 1) > MAX_BATCH_SAMPLES:
                groups.append(cur)
                cur, cur_max = [], 0
            cur.append(i)
            cur_max = max(cur_max, n)
        if cur:
            groups.append(cur)
        res = []
        for g in groups:
            lens = [len(batch[i].audio) for i in g]
            x = np.zeros((len(g), max(lens)), np.float32)
            for k, i in enumerate(g):
                x[k, : lens[k]] = batch[i].audio
            frames = torch.tensor([1 + n // self.hop_length for n in lens], device=self._dev)
            with torch.no_grad():
                xt = torch.from_numpy(x).to(self._dev)
                spec = torch.stft(
                    xt, n_fft=c.n_fft, hop_length=self.hop_length, win_length=self.win_length,
                    window=self._window, center=True, pad_mode="constant", return_complex=True,
                )
                p = spec.real.square() + spec.imag.square() if power == 2.0 else spec.abs().pow(power)
            res.append((g, frames, p))
        _LAST.entry = (key, [u.audio for u in batch], res)
        return res

    def _log_mel(self, batch: list[Utterance], post=None) -> list[np.ndarray]:
        """Per utterance: dB mel power spectrogram [n_mels, T], or ``post`` of it (a batched
        torch function of [B, n_mels, T], e.g. the DCT), as float32 numpy on the CPU."""
        if self._fb is None:
            self.setup()
        torch = self._torch
        c = self.config
        out: list[np.ndarray | None] = [None] * len(batch)
        for g, frames, p in self._power(batch):
            with torch.no_grad():
                mel = torch.matmul(self._fb, p)  # [B, n_mels, T]
                db = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
                if c.top_db is not None:
                    # librosa's floor is relative to each utterance's own peak: padding frames
                    # (beyond an utterance's end) are masked out of the max.
                    valid = torch.arange(db.shape[-1], device=self._dev)[None, :] < frames[:, None]
                    peak = db.masked_fill(~valid[:, None, :], float("-inf")).amax(dim=(1, 2))
                    db = torch.maximum(db, (peak - float(c.top_db))[:, None, None])
                if post is not None:
                    db = post(db)
                db = db.cpu().numpy()
            for k, i in enumerate(g):
                out[i] = db[k, :, : int(frames[k])]
        return out  # type: ignore[return-value]


def torch_matmul(a, b):
    import torch

    return torch.matmul(a, b)


@EXTRACTORS.register("mel")
class Mel(_Spectral):
    """Log-mel spectrogram (dB), frame-level, for CNN front ends."""

    Config = MelConfig

    def outputs(self):
        return {"frames": OutputSpec("ragged", self.config.n_mels, self.frame_rate, "float32", "log-mel power (dB), [T, n_mels]")}

    def process(self, batch):
        return [{"frames": np.ascontiguousarray(m.T)} for m in self._log_mel(batch)]


@EXTRACTORS.register("mfcc")
class Mfcc(_Spectral):
    """MFCCs (librosa-compatible), frame-level plus pooled mean and std over frames."""

    Config = MfccConfig

    def setup(self) -> None:
        super().setup()
        import scipy.fft

        c = self.config
        if c.n_mfcc > c.n_mels:
            from mer.common.errors import UsageError

            raise UsageError(f"mfcc: n_mfcc {c.n_mfcc} > n_mels {c.n_mels}")
        dct = scipy.fft.dct(np.eye(c.n_mels), type=2, norm="ortho", axis=0)[: c.n_mfcc]
        self._dct = self._torch.from_numpy(dct.astype(np.float32))

    @property
    def dim(self) -> int:
        return self.config.n_mfcc * (3 if self.config.deltas else 1)

    def outputs(self):
        fr = self.frame_rate
        d = self.dim
        return {
            "frames": OutputSpec("ragged", d, fr, "float32", "MFCC (+deltas) per frame, [T, D]"),
            "mean": OutputSpec("fixed", d, None, "float32", "mean over frames"),
            "std": OutputSpec("fixed", d, None, "float32", "standard deviation over frames (ddof=0)"),
        }

    def process(self, batch):
        if self._fb is None:
            self.setup()
        c = self.config
        res = []
        dct = self._dct.to(self._dev)
        for mf in self._log_mel(batch, post=lambda db: torch_matmul(dct, db)):  # [n_mfcc, T]
            if c.deltas:
                import librosa

                if mf.shape[1] < c.delta_width:
                    raise InputError(f"too short for deltas: {mf.shape[1]} frames < delta_width {c.delta_width}")
                mf = np.concatenate(
                    [mf, librosa.feature.delta(mf, width=c.delta_width, order=1), librosa.feature.delta(mf, width=c.delta_width, order=2)]
                )
            f = np.ascontiguousarray(mf.T, dtype=np.float32)
            res.append({"frames": f, "mean": f.mean(axis=0), "std": f.std(axis=0)})
        return res
