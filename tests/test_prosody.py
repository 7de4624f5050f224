"""``prosody`` (seed 003's 8 features after Sahu 2019) against references computed directly.

The reference below is Sahu's feature code as released (per-sample centre-clipping loop,
frame-by-frame silence count, librosa's rms / hpss / autocorrelate), run on the same
float64 signal; pitch=pyin is checked against librosa.pyin run directly.

Tolerance: the extractor computes in float64 and stores float32, so the only expected
difference is the float32 rounding of the result (relative 6e-8) plus float64 FFT/median
round-off (relative ~1e-15, the same on any x86-64 CPU up to the last bits): rtol 1e-6 holds
with a wide margin. ``harmonic`` is a mean of a nearly zero-mean signal (a sum that
cancels), so its relative error can be large when it is close to 0: it gets, on top of
rtol, an absolute 1e-9 (float64 round-off of a sum of O(1e4) terms below 1, x1000, stays
under 1e-9). ``silence`` is a count ratio: exactly equal.
"""
from __future__ import annotations

import numpy as np
import pytest

from test_extract import SR, speechlike

RTOL = 1e-6
HARMONIC_ATOL = 1e-9


def sahu_reference(y: np.ndarray) -> np.ndarray:
    """Sahu (2019)'s 8 features, written as in his released code."""
    import librosa

    features = []
    sig_mean = np.mean(abs(y))
    features.append(sig_mean)
    features.append(np.std(y))
    rmse = librosa.feature.rms(y=y + 0.0001)[0]
    features.append(np.mean(rmse))
    features.append(np.std(rmse))
    silence = 0
    for e in rmse:
        if e <= 0.4 * np.mean(rmse):
            silence += 1
    features.append(silence / float(len(rmse)))
    y_harmonic = librosa.effects.hpss(y)[0]
    features.append(np.mean(y_harmonic) * 1000)
    cl = 0.45 * sig_mean
    center_clipped = []
    for s in y:
        if s >= cl:
            center_clipped.append(s - cl)
        elif s <= -cl:
            center_clipped.append(s + cl)
        elif np.abs(s) < cl:
            center_clipped.append(0)
    auto_corrs = librosa.autocorrelate(np.array(center_clipped))
    features.append(1000 * np.max(auto_corrs) / len(auto_corrs))
    features.append(np.std(auto_corrs))
    return np.array(features, np.float64)


def _clips():
    """Speech-like clips, one with pauses (zeroed stretches plus noise) so silence > 0."""
    a = speechlike(1.2, 31)
    b = speechlike(0.7, 32)
    c = speechlike(1.5, 33)
    c[4000:10000] = 0.002 * np.random.default_rng(3).standard_normal(6000).astype(np.float32)
    return [a, b, c]


def _check(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == (8,) and ours.dtype == np.float32
    idx = [0, 1, 2, 3, 6, 7]
    np.testing.assert_allclose(ours[idx].astype(np.float64), ref[idx], rtol=RTOL, atol=0)
    assert ours[4] == np.float32(ref[4])
    np.testing.assert_allclose(float(ours[5]), ref[5], rtol=RTOL, atol=HARMONIC_ATOL)


def test_prosody_equals_sahu_features_computed_directly():
    from mer.extract.base import EXTRACTORS, Utterance

    ext = EXTRACTORS.get("prosody")()
    assert ext.outputs()["pooled"].dim == 8 and "auto_corr_max" in ext.outputs()["pooled"].description
    clips = _clips()
    out = ext.process([Utterance(f"p{i}", x, SR) for i, x in enumerate(clips)])
    for x, o in zip(clips, out):
        _check(o["pooled"], sahu_reference(x.astype(np.float64)))
    assert out[2]["pooled"][4] > 0.1 and out[0]["pooled"][4] < out[2]["pooled"][4]  # the pauses are seen


def test_prosody_pyin_pitch_equals_librosa_pyin():
    import librosa

    from mer.extract.base import Utterance
    from mer.extract.prosody import Prosody, ProsodyConfig

    x = speechlike(0.8, 34)
    (o,) = Prosody(ProsodyConfig(pitch="pyin")).process([Utterance("p", x, SR)])
    f0, voiced, _ = librosa.pyin(x.astype(np.float64), fmin=65.0, fmax=600.0, sr=SR)
    f = f0[voiced]
    assert len(f) > 10
    np.testing.assert_allclose(o["pooled"][6:].astype(np.float64), [f.mean(), f.std()], rtol=RTOL)
    ref = sahu_reference(x.astype(np.float64))
    np.testing.assert_allclose(o["pooled"][:4].astype(np.float64), ref[:4], rtol=RTOL)
    # speechlike's f0 glides around 110-220 Hz: the track must be there, not at an octave error
    assert 90 < o["pooled"][6] < 260


def test_prosody_options_are_checked():
    from mer.common.errors import UsageError
    from mer.extract.prosody import Prosody, ProsodyConfig

    with pytest.raises(UsageError, match="--prosody.pitch 'yin'"):
        Prosody(ProsodyConfig(pitch="yin"))
    with pytest.raises(UsageError, match="fmin/fmax"):
        Prosody(ProsodyConfig(pitch="pyin", fmin=500, fmax=100))


def test_prosody_from_the_cli_store(tmp_path):
    """`mer extract --features prosody` writes an 8-d pooled store row per utterance."""
    from click.testing import CliRunner

    from mer.common.cli import cli
    from mer.extract.cache import find_store
    from mer.extract.store import open_store
    from test_extract import make_corpus, write_manifest

    cache = tmp_path / "cache"
    rows = make_corpus(tmp_path / "audio", n=4)
    write_manifest(cache, rows)
    res = CliRunner().invoke(cli, ["extract", "-d", "iemocap", "--cache", str(cache), "-f", "prosody", "--workers", "0"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    with open_store(find_store("iemocap", "prosody", cache)) as r:
        x = r.read_fixed("pooled")
        assert x.shape == (4, 8) and np.all(np.isfinite(x)) and bool(np.all(r.valid))
