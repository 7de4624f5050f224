"""``prosody``: the 8 prosodic features per utterance of seed 003 (after Sahu 2019).

Seed 003 feeds "the handcrafted speech features used in [15] (Sahu, *Multimodal speech
emotion recognition and ambiguity resolution*, arXiv:1904.06022), including Pitch,
Harmonics, Speech Energy, Pause and Central [moments] resulting [in] eight speech features
per utterance", computed with librosa. They are defined here exactly as in Sahu's released
feature code (``y`` = the mono signal in [-1, 1], computed in float64):

====  ===============  ==================================================================
 #    name             definition
====  ===============  ==================================================================
 0    ``sig_mean``     central moments: mean of ``|y|``
 1    ``sig_std``      central moments: standard deviation of ``y``
 2    ``rmse_mean``    energy: mean of librosa's frame RMS of ``y + 1e-4`` (2048-sample
                       frames, hop 512, centred)
 3    ``rmse_std``     energy: standard deviation of that RMS track
 4    ``silence``      pause: share of RMS frames at or below 0.4 x their mean
 5    ``harmonic``     harmonics: mean of the harmonic part of ``librosa.effects.hpss(y)``,
                       x 1000 (near zero for speech; kept as Sahu defines it)
 6    ``auto_corr_max``  pitch: ``1000 * max(r) / len(r)`` where ``r`` is the
                       autocorrelation (``librosa.autocorrelate``) of the centre-clipped
                       signal (clip level 0.45 x ``sig_mean``: samples within it become 0,
                       the others move towards 0 by it), the classic clipping pitch
                       detector's input; ``max(r)`` is its lag-0 value, the clipped power
 7    ``auto_corr_std``  pitch: standard deviation of ``r``
====  ===============  ==================================================================

``--prosody.pitch pyin`` replaces features 6-7 with the mean and standard deviation of
librosa's pYIN F0 (Hz) over voiced frames (``--prosody.fmin``/``fmax``, default 65-600 Hz;
0 when no frame is voiced), for users who want a pitch track rather than Sahu's
autocorrelation statistics (slower: pYIN costs about 20x the rest).

Sahu resampled to 44.1 kHz; mer decodes at ``--prosody.sample_rate`` (16 kHz by default,
IEMOCAP's own rate). The frame-based values (RMS, silence, HPSS) depend on the rate, so it
is part of the store key like every config field. Output: ``pooled`` fixed [8].
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mer.common.errors import UsageError
from mer.extract.base import EXTRACTORS, Extractor, ExtractorConfig, OutputSpec

NAMES = ("sig_mean", "sig_std", "rmse_mean", "rmse_std", "silence", "harmonic", "auto_corr_max", "auto_corr_std")
PYIN_NAMES = NAMES[:6] + ("f0_mean", "f0_std")
RMS_OFFSET = 1e-4       # Sahu: rms(y + 0.0001)
SILENCE_RATIO = 0.4     # a frame is a pause when its RMS <= 0.4 x the mean RMS
CLIP_RATIO = 0.45       # centre-clipping level, x mean(|y|)


@dataclass
class ProsodyConfig(ExtractorConfig):
    sample_rate: int = 16000
    pitch: str = "acf"        # acf: Sahu's centre-clipped autocorrelation statistics; pyin: F0 mean/std
    fmin: float = 65.0        # pyin only: F0 search range in Hz
    fmax: float = 600.0


def centre_clip(y: np.ndarray, level: float) -> np.ndarray:
    """Samples with ``|y| < level`` -> 0; the others shifted towards zero by ``level``."""
    return np.where(y >= level, y - level, np.where(y <= -level, y + level, 0.0))


def prosody_features(y: np.ndarray, sr: int, pitch: str = "acf", fmin: float = 65.0, fmax: float = 600.0) -> np.ndarray:
    """The 8 features of one signal, float64 (see the module docstring for each)."""
    import librosa

    y = np.asarray(y, np.float64)
    sig_mean = np.mean(np.abs(y))
    rms = librosa.feature.rms(y=y + RMS_OFFSET)[0]
    silence = np.count_nonzero(rms <= SILENCE_RATIO * np.mean(rms)) / len(rms)
    harmonic = np.mean(librosa.effects.hpss(y)[0]) * 1000.0
    if pitch == "acf":
        r = librosa.autocorrelate(centre_clip(y, CLIP_RATIO * sig_mean))
        p0, p1 = 1000.0 * np.max(r) / len(r), np.std(r)
    else:
        f0, voiced, _ = librosa.pyin(y, fmin=fmin, fmax=fmax, sr=sr)
        f = f0[voiced & np.isfinite(f0)]
        p0, p1 = (float(np.mean(f)), float(np.std(f))) if len(f) else (0.0, 0.0)
    return np.array([sig_mean, np.std(y), np.mean(rms), np.std(rms), silence, harmonic, p0, p1], np.float64)


@EXTRACTORS.register("prosody")
class Prosody(Extractor):
    """Seed 003's 8 prosodic features (Sahu 2019): energy, pause, harmonics, pitch, moments."""

    modality = "audio"
    uses_gpu = False
    Config = ProsodyConfig
    preload = ("librosa",)

    def __init__(self, config: ProsodyConfig | None = None, device: str = "cpu"):
        super().__init__(config, device)
        c = self.config
        if c.pitch not in ("acf", "pyin"):
            raise UsageError(f"--prosody.pitch {c.pitch!r}: choose acf (Sahu's autocorrelation statistics) or pyin")
        if c.pitch == "pyin" and not 0 < float(c.fmin) < float(c.fmax) < c.sample_rate / 2:
            raise UsageError(f"--prosody.fmin/fmax {c.fmin}/{c.fmax}: need 0 < fmin < fmax < sample_rate/2")
        self.sample_rate = int(c.sample_rate)

    def versions(self) -> dict[str, str]:
        import librosa

        return {"librosa": librosa.__version__, "numpy": np.__version__}

    def outputs(self):
        names = NAMES if self.config.pitch == "acf" else PYIN_NAMES
        return {"pooled": OutputSpec("fixed", 8, None, "float32", "prosody: " + ", ".join(names))}

    def process(self, batch):
        c = self.config
        return [{"pooled": prosody_features(u.audio, self.sample_rate, c.pitch, float(c.fmin), float(c.fmax)).astype(np.float32)}
                for u in batch]
