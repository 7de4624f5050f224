"""``dvector``: speaker embeddings from Resemblyzer's pretrained voice encoder (GE2E, 256-d).

The weights (``pretrained.pt``, 17 MB) ship inside the Resemblyzer wheel, so this runs offline.
Install Resemblyzer with ``pip install --no-deps Resemblyzer`` (its declared ``typing``
dependency is a Python 2 backport) next to ``mer[speaker]``.

The computation is Resemblyzer's own ``VoiceEncoder.embed_utterance``, batched across
utterances: 16 kHz audio -> (``preprocess``) volume normalisation to -30 dBFS and WebRTC-VAD
trimming of long silences (``resemblyzer.preprocess_wav``) -> 40-band mel frames (25 ms / 10 ms)
-> partial utterances of 1.6 s every 1/``rate`` seconds -> 3-layer LSTM -> L2-normalised
partial embeddings -> their mean, L2-normalised, is the utterance embedding.

Outputs:
- ``utterance`` fixed [256]: the d-vector (equal to ``embed_utterance`` up to float rounding).
- ``partials``  ragged [P, 256]: one embedding per 1.6-second partial (frame-level speaker
  track), at ``rate`` partials per second.

Repairs are recorded, never silent: audio in which the VAD finds no voice is embedded untrimmed,
and all-zero audio is embedded without volume normalisation (which would divide by zero).
"""
from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mer.common.errors import MerError, MissingDependency, UsageError
from mer.extract.base import EXTRACTORS, ExtractorConfig, OutputSpec, Utterance
from mer.extract.neural import NeuralExtractor
from mer.extract.torchutil import dtype_name, hash_file, resolve_dtype, shared_model

SAMPLE_RATE = 16000
EMBED_DIM = 256


def _resemblyzer():
    """Import Resemblyzer (it pulls in librosa, scipy and webrtcvad) with a fix-it message."""
    try:
        with warnings.catch_warnings():
            # resemblyzer imports scipy.ndimage.morphology, a deprecated alias; not ours to fix.
            warnings.simplefilter("ignore", DeprecationWarning)
            import resemblyzer
            from resemblyzer import audio, hparams  # noqa: F401
    except ImportError as e:
        raise MissingDependency(
            f"Resemblyzer cannot be imported ({e}); install it with: "
            "pip install 'mer[speaker]' && pip install --no-deps Resemblyzer"
        ) from None
    return resemblyzer


def weights_file() -> Path:
    """Resemblyzer's bundled pretrained.pt, located without importing the package."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency(
            "Resemblyzer is not installed; install it with: pip install 'mer[speaker]' && pip install --no-deps Resemblyzer"
        )
    p = Path(list(spec.submodule_search_locations)[0]) / "pretrained.pt"
    if not p.is_file():
        raise MerError(f"{p}: Resemblyzer is installed but its pretrained weights are missing; reinstall it")
    return p


@dataclass
class DVectorConfig(ExtractorConfig):
    rate: float = 1.3              # partial utterances per second (>= 0.625; Resemblyzer's default)
    min_coverage: float = 0.75     # keep a zero-padded last partial if it covers this fraction
    preprocess: bool = True        # volume normalisation + VAD silence trimming (Resemblyzer's)
    batch_size: int = 256          # partials per forward pass (halved on GPU OOM)
    dtype: str = "auto"            # auto (= float32 everywhere for this small LSTM) | float32 | float16 | bfloat16


@EXTRACTORS.register("dvector")
class DVectorExtractor(NeuralExtractor):
    modality = "audio"
    Config = DVectorConfig
    sample_rate = SAMPLE_RATE
    batch_hint = 64

    def __init__(self, config: DVectorConfig | None = None, device: str = "cpu"):
        c = config or DVectorConfig()
        if not 0 < float(c.min_coverage) <= 1:
            raise UsageError(f"--dvector.min_coverage {c.min_coverage}: must be in (0, 1]")
        # Resemblyzer's own limits: a partial is 1.6 s (160 frames of 10 ms), hops of >= 1 frame.
        if not 0.625 <= float(c.rate) <= 100:
            raise UsageError(f"--dvector.rate {c.rate}: must be between 0.625 (partials must cover the audio) and 100")
        super().__init__(c, device)
        self._weights = weights_file()
        self._hash = None

    @classmethod
    def missing(cls, config=None) -> str | None:
        try:
            weights_file()
        except MerError as e:
            return str(e)
        return None

    @property
    def torch_dtype(self):
        """fp32 unless a half dtype is asked for explicitly: the 1.4 M-parameter LSTM gains
        nothing from half precision, and cuDNN's bf16 LSTM support varies by version."""
        import torch

        if (self.config.dtype or "auto").lower() == "auto":
            return torch.float32
        return resolve_dtype(self.device, self.config.dtype)

    def identity(self) -> dict[str, Any]:
        if self._hash is None:
            self._hash = hash_file(self._weights)
        return {"model": "resemblyzer VoiceEncoder (GE2E)", "weights_hash": self._hash,
                "compute_dtype": dtype_name(self.torch_dtype)}

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        import torch

        return {"torch": torch.__version__, "resemblyzer": version("Resemblyzer"), "librosa": version("librosa")}

    @property
    def partial_rate(self) -> float:
        """Exact partials per second after Resemblyzer rounds the step to whole mel frames."""
        r = _resemblyzer()
        step = int(np.round((r.hparams.sampling_rate / float(self.config.rate)) / (r.hparams.sampling_rate * r.hparams.mel_window_step / 1000)))
        return 1000.0 / (r.hparams.mel_window_step * step)

    def outputs(self) -> dict[str, OutputSpec]:
        return {
            "utterance": OutputSpec("fixed", EMBED_DIM, None, "float32", "L2-normalised mean of partial embeddings"),
            "partials": OutputSpec("ragged", EMBED_DIM, self.partial_rate, "float32", "embedding per 1.6 s partial"),
        }

    def _load(self):
        return shared_model(("dvector", self.identity()["weights_hash"], self.device), self._load_uncached)

    def _load_uncached(self):
        r = _resemblyzer()
        enc = r.VoiceEncoder(device=self.device, verbose=False, weights_fpath=self._weights)
        enc.eval().requires_grad_(False)
        return enc

    def _prepare(self, u: Utterance) -> np.ndarray:
        """Resemblyzer's preprocess_wav on 16 kHz audio, with its two failure modes recorded."""
        r = _resemblyzer()
        x = self._audio(u).astype(np.float32)
        if not self.config.preprocess:
            return x
        if not np.any(x):
            self._record("repair", u.id, "silent audio", "all samples are zero: embedded without volume normalisation")
            return x
        y = r.audio.normalize_volume(x, r.hparams.audio_norm_target_dBFS, increase_only=True)
        trimmed = r.audio.trim_long_silences(y)
        if len(trimmed) == 0:
            self._record("repair", u.id, "no voice detected", "VAD kept nothing: embedded the untrimmed audio")
            return y.astype(np.float32)
        return trimmed.astype(np.float32)

    def _mels(self, wav: np.ndarray) -> np.ndarray:
        """The [P, 160, 40] partial mel spectrograms of one utterance, exactly as embed_utterance."""
        r = _resemblyzer()
        wav_slices, mel_slices = r.VoiceEncoder.compute_partial_slices(len(wav), float(self.config.rate), float(self.config.min_coverage))
        need = wav_slices[-1].stop
        if need >= len(wav):
            wav = np.pad(wav, (0, need - len(wav)), "constant")
        mel = r.audio.wav_to_mel_spectrogram(wav)
        return np.array([mel[s] for s in mel_slices])

    def process(self, batch: list[Utterance]) -> list[dict[str, np.ndarray]]:
        if not batch:
            return []
        out = []
        for u, partials in zip(batch, self.embed_windows([u.id for u in batch], [self._mels(self._prepare(u)) for u in batch])):
            raw = partials.mean(axis=0)
            norm = np.linalg.norm(raw, 2)
            if not np.isfinite(norm) or norm == 0:
                raise MerError(f"{u.id}: d-vector has zero norm (the encoder gave all-zero partial embeddings)")
            out.append({"utterance": (raw / norm).astype(np.float32), "partials": partials})
        return out
