"""Extractors and the engine: parity with librosa and openSMILE, cache reuse, bad input,
the CLI. Engine runs here use ``workers=0`` (in-process) to stay fast; the Dask paths (local
cluster, SIGKILL + resume, a real scheduler/worker pair) are in test_extract_cluster.py.

Helpers ``make_corpus`` / ``write_manifest`` are imported by test_extract_cluster.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

SR = 16000

# Stated tolerances (float32 torch vs float32 librosa; values are dB / cepstra of O(10-100)).
MEL_DB_ATOL = 2e-3      # dB
MFCC_ATOL = 2e-3


def speechlike(seconds: float, seed: int, sr: int = SR) -> np.ndarray:
    """Harmonics on a gliding f0 with an amplitude envelope and noise (peak < 0.8)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    f0 = 110 + 80 * rng.random() + 30 * np.sin(2 * np.pi * (0.5 + rng.random()) * t)
    ph = 2 * np.pi * np.cumsum(f0) / sr
    x = sum((0.5 / k) * np.sin(k * ph) for k in range(1, 8))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t + rng.random() * 6) ** 2
    x = 0.25 * x * env + 0.01 * rng.standard_normal(n)
    return x.astype(np.float32)


def make_corpus(root: Path, n: int = 12, seed: int = 0, bad: bool = False, min_s=0.4, max_s=1.0) -> list[dict]:
    """n good WAVs (and, with ``bad``, one each of: corrupt, empty, silent, NaN, too long).
    Returns manifest rows."""
    import soundfile as sf

    from mer.common.audio import file_hash

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        dur = float(rng.uniform(min_s, max_s))
        p = root / f"u{i:03d}.wav"
        sf.write(p, speechlike(dur, seed * 1000 + i), SR, subtype="PCM_16")
        rows.append({"id": f"Ses01F_impro01_F{i:03d}", "audio": str(p), "duration": dur, "text": f"utterance number {i}", "emotion": "neu"})
    if bad:
        (root / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(rng.integers(0, 255, 300, dtype=np.uint8)))
        (root / "empty.wav").write_bytes(b"")
        sf.write(root / "silent.wav", np.zeros(8000, np.float32), SR, subtype="PCM_16")
        nanx = speechlike(0.5, 99)
        nanx[100:110] = np.nan
        sf.write(root / "nan.wav", nanx, SR, subtype="FLOAT")
        sf.write(root / "long.wav", speechlike(3.0, 98), SR, subtype="PCM_16")
        for name in ("corrupt", "empty", "silent", "nan", "long"):
            rows.append({"id": f"bad_{name}", "audio": str(root / f"{name}.wav"), "duration": float("nan"), "text": "bad", "emotion": "neu"})
    for r in rows:
        p = Path(r["audio"])
        r["audio_hash"] = file_hash(p) if p.stat().st_size else "empty"
        r["dataset"] = "iemocap"
    return rows


def write_manifest(cache: Path, rows: list[dict], dataset: str = "iemocap"):
    from mer.common import manifest as mf
    from mer.common import paths

    return mf.write(mf.to_frame(rows), paths.manifest_path(dataset, cache), dataset, None)


def store_arrays(path) -> dict:
    from mer.extract.store import open_store

    with open_store(path) as r:
        out = {name: np.asarray(r.array(name)[:]) for name in r.arrays()}
        out["ids"] = r.ids
        attrs = {k: v for k, v in r.attrs.items() if k not in ("created", "versions")}
    return {"arrays": out, "attrs": attrs}


def assert_same_store(a, b):
    A, B = store_arrays(a), store_arrays(b)
    assert A["attrs"] == B["attrs"]
    assert set(A["arrays"]) == set(B["arrays"])
    for k in A["arrays"]:
        assert np.array_equal(A["arrays"][k], B["arrays"][k]), k


# ----------------------------------------------------------------------------- parity --


@pytest.fixture(scope="module")
def clips():
    from mer.extract.base import Utterance

    lens = [0.05, 0.37, 1.0, 2.3]  # includes a clip shorter than one delta window
    return [Utterance(f"c{i}", speechlike(s, i), SR) for i, s in enumerate(lens)]


@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax", [
    (16000, 512, 40, 0.0, None), (16000, 512, 128, 0.0, 7000.0), (22050, 2048, 128, 20.0, None), (8000, 256, 23, 100.0, 3800.0),
])
def test_mel_filterbank_equals_librosa(sr, n_fft, n_mels, fmin, fmax):
    """mer builds the Slaney filterbank itself (librosa.filters costs 1 s of import per run):
    it must be librosa's matrix exactly."""
    import librosa

    from mer.extract.spectral import slaney_mel

    ours = slaney_mel(sr, n_fft, n_mels, fmin, fmax)
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    assert ours.dtype == ref.dtype and np.array_equal(ours, ref)


@pytest.mark.parametrize("n_mels,top_db,fmax", [(64, 80.0, None), (128, None, 7000.0)])
def test_mel_matches_librosa(clips, n_mels, top_db, fmax):
    import librosa

    from mer.extract.spectral import Mel, MelConfig

    out = Mel(MelConfig(n_mels=n_mels, top_db=top_db, fmax=fmax)).process(clips)
    for u, o in zip(clips, out):
        S = librosa.feature.melspectrogram(y=u.audio, sr=SR, n_fft=512, win_length=400, hop_length=160, n_mels=n_mels, fmax=fmax)
        ref = librosa.power_to_db(S, top_db=top_db).T
        assert o["frames"].shape == ref.shape
        np.testing.assert_allclose(o["frames"], ref, rtol=0, atol=MEL_DB_ATOL)


@pytest.mark.parametrize("n_mfcc,n_mels", [(40, 40), (13, 64)])
def test_mfcc_matches_librosa(clips, n_mfcc, n_mels):
    import librosa

    from mer.extract.spectral import Mfcc, MfccConfig

    out = Mfcc(MfccConfig(n_mfcc=n_mfcc, n_mels=n_mels)).process(clips)
    for u, o in zip(clips, out):
        ref = librosa.feature.mfcc(y=u.audio, sr=SR, n_mfcc=n_mfcc, n_mels=n_mels, n_fft=512, win_length=400, hop_length=160).T
        assert o["frames"].shape == ref.shape
        np.testing.assert_allclose(o["frames"], ref, rtol=0, atol=MFCC_ATOL)
        np.testing.assert_allclose(o["mean"], ref.mean(0), atol=MFCC_ATOL)
        np.testing.assert_allclose(o["std"], ref.std(0), atol=MFCC_ATOL)


def test_mfcc_deltas_39(clips):
    import librosa

    from mer.extract.spectral import Mfcc, MfccConfig

    m = Mfcc(MfccConfig(n_mfcc=13, deltas=True))
    assert m.outputs()["frames"].dim == 39
    for u in clips[1:]:
        (o,) = m.process([u])
        ref = librosa.feature.mfcc(y=u.audio, sr=SR, n_mfcc=13, n_mels=40, n_fft=512, win_length=400, hop_length=160)
        full = np.concatenate([ref, librosa.feature.delta(ref), librosa.feature.delta(ref, order=2)]).T
        np.testing.assert_allclose(o["frames"], full, atol=MFCC_ATOL)
    with pytest.raises(ValueError, match="too short for deltas"):
        m.process([clips[0]])


@pytest.mark.parametrize("name", ["egemaps", "gemaps", "compare"])
def test_smile_equals_opensmile(clips, name):
    import opensmile

    from mer.extract.base import EXTRACTORS

    ext = EXTRACTORS.get(name)()
    fs = getattr(opensmile.FeatureSet, ext.feature_set)
    func = opensmile.Smile(feature_set=fs, feature_level=opensmile.FeatureLevel.Functionals)
    lld = opensmile.Smile(feature_set=fs, feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
    out = ext.process(clips[1:3])
    outs = ext.outputs()
    assert outs["functionals"].dim == {"egemaps": 88, "gemaps": 62, "compare": 6373}[name]
    assert ("lld" in outs) == (name != "compare")  # ComParE LLDs only when asked for
    if "lld" in outs:
        assert outs["lld"].dim == {"egemaps": 25, "gemaps": 18}[name]
    for u, o in zip(clips[1:3], out):
        np.testing.assert_allclose(o["functionals"], func.process_signal(u.audio, SR).to_numpy()[0], rtol=1e-6, atol=1e-6)
        if "lld" in outs:
            np.testing.assert_allclose(o["lld"], lld.process_signal(u.audio, SR).to_numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.filterwarnings("ignore:Feature set:UserWarning")  # opensmile flags the v01 sets as deprecated
@pytest.mark.parametrize("name", ["emobase", "is09", "is10", "is11", "is12", "is13", "egemaps_v01b", "egemaps_v01a", "gemaps_v01a"])
def test_every_shipped_smile_set_equals_opensmile(clips, name):
    """Each set opensmile ships is an extractor whose functionals (and LLDs where stored by
    default) equal the package run directly on the same signal (same library, same int16
    input: bit for bit; the tolerance only absorbs the float32 -> float64 of pandas)."""
    import opensmile

    from mer.extract.base import EXTRACTORS
    from mer.extract.smile import SETS

    ext = EXTRACTORS.get(name)()
    member, nf, nl, lld_default = SETS[name]
    fs = getattr(opensmile.FeatureSet, member)
    assert ext.outputs()["functionals"].dim == nf and ("lld" in ext.outputs()) == lld_default
    (o,) = ext.process([clips[2]])
    ref = opensmile.Smile(feature_set=fs, feature_level=opensmile.FeatureLevel.Functionals).process_signal(clips[2].audio, SR)
    assert ref.shape[1] == nf
    np.testing.assert_allclose(o["functionals"], ref.to_numpy()[0], rtol=1e-6, atol=1e-6)
    if lld_default:
        lld = opensmile.Smile(feature_set=fs, feature_level=opensmile.FeatureLevel.LowLevelDescriptors).process_signal(clips[2].audio, SR)
        assert o["lld"].shape == lld.shape and lld.shape[1] == nl
        np.testing.assert_allclose(o["lld"], lld.to_numpy(), rtol=1e-6, atol=1e-6)


SMILE_CONF = Path(__file__).parent / "fixtures" / "smile_small.conf"


def test_smile_config_file_equals_opensmile(clips, tmp_path):
    """``smile`` runs any .conf (here a small emo_large-shaped one): functionals and LLDs
    equal opensmile.Smile(feature_set=<that file>) run directly; its sizes come from the file."""
    import opensmile

    from mer.extract.smile import CustomSmile, CustomSmileConfig

    ext = CustomSmile(CustomSmileConfig(config=str(SMILE_CONF), lld_level="lld"))
    outs = ext.outputs()
    assert outs["functionals"].dim == 224 and outs["lld"].dim == 16 and outs["lld"].frame_rate == 100.0
    func = opensmile.Smile(feature_set=str(SMILE_CONF), feature_level="func")
    lld = opensmile.Smile(feature_set=str(SMILE_CONF), feature_level="lld")
    for u, o in zip(clips[1:], ext.process(clips[1:])):
        np.testing.assert_allclose(o["functionals"], func.process_signal(u.audio, SR).to_numpy()[0], rtol=1e-6, atol=1e-6)
        ref = lld.process_signal(u.audio, SR).to_numpy()
        assert o["lld"].shape == ref.shape
        np.testing.assert_allclose(o["lld"], ref, rtol=1e-6, atol=1e-6)
    assert "lld" not in CustomSmile(CustomSmileConfig(config=str(SMILE_CONF))).outputs()  # LLDs only when a level is named


def test_smile_config_key_follows_content_of_file_and_includes(tmp_path):
    """The store key hashes the config's text and its includes: same text elsewhere, same
    identity; an edit to the included file, a new one. A file opensmile-python cannot feed
    (no source/sink placeholders) or a missing include is refused by name."""
    import shutil

    from mer.common.errors import UsageError
    from mer.extract.smile import CustomSmile, CustomSmileConfig

    d = tmp_path / "conf"
    shutil.copytree(SMILE_CONF.parent, d)
    a = CustomSmile(CustomSmileConfig(config=str(SMILE_CONF))).identity()
    b = CustomSmile(CustomSmileConfig(config=str(d / SMILE_CONF.name))).identity()
    assert a == b
    inc = d / "smile_small_func.conf.inc"
    inc.write_text(inc.read_text().replace("Moments.kurtosis = 1", "Moments.kurtosis = 0"))
    c = CustomSmile(CustomSmileConfig(config=str(d / SMILE_CONF.name)))
    assert c.identity() != a and c.outputs()["functionals"].dim == 224 - 32
    bad = d / "plain.conf"
    bad.write_text((d / SMILE_CONF.name).read_text().replace("\\{\\cm[sink{?}:include external sink]}", ""))
    with pytest.raises(UsageError, match=r"plain.conf: lacks .*sink"):
        CustomSmile(CustomSmileConfig(config=str(bad)))
    inc.unlink()
    with pytest.raises(UsageError, match=r"smile_small_func.conf.inc: no such file \(included from"):
        CustomSmile(CustomSmileConfig(config=str(d / SMILE_CONF.name)))
    with pytest.raises(UsageError, match="--smile.config PATH"):
        CustomSmile()


def test_smile_instance_reused_across_utterances_equals_fresh_opensmile():
    """One openSMILE instance per worker thread is reset between utterances instead of
    rebuilt: twelve utterances of mixed lengths in a row, with one that fails in the middle
    (too short), must each equal a fresh ``opensmile.Smile`` bit for bit."""
    import opensmile

    from mer.extract.base import Utterance
    from mer.extract.smile import EGeMAPS

    ext = EGeMAPS()
    func = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.Functionals)
    lld = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.LowLevelDescriptors)
    lens = [2.3, 0.4, 1.1, 3.0, 0.25, 1.7, 0.6, 2.0, 0.9, 1.4, 0.3, 2.6]
    for k, s in enumerate(lens):
        if k == 6:  # a failure mid-way: the next utterance gets a fresh instance
            with pytest.raises(ValueError, match="too short"):
                ext.process([Utterance("tiny", np.full(40, 0.1, np.float32), SR)])
        x = speechlike(s, 10 + k)
        (o,) = ext.process([Utterance(f"u{k}", x, SR)])
        ref_f = func.process_signal(x, SR).to_numpy()[0].astype(np.float32)
        ref_l = lld.process_signal(x, SR).to_numpy().astype(np.float32)
        assert np.array_equal(o["functionals"], ref_f), k
        assert o["lld"].shape == ref_l.shape and np.array_equal(o["lld"], ref_l), k


def test_mfcc_and_mel_share_one_stft_with_unchanged_results(clips):
    """In one task mfcc and mel reuse the same power spectrogram (worker.run_batch runs
    them on the same decoded arrays): each must still equal what it gives on its own."""
    from mer.extract import spectral
    from mer.extract.spectral import Mel, MelConfig, Mfcc, MfccConfig

    alone_mel = Mel(MelConfig(n_mels=64)).process(clips)
    spectral._LAST.entry = None
    alone_mfcc = Mfcc(MfccConfig(n_mfcc=20, n_mels=40)).process(clips)
    spectral._LAST.entry = None
    calls = []
    real = spectral._Spectral._power

    def counting(self, batch):  # records whether this call computed an STFT
        before = getattr(spectral._LAST, "entry", None)
        out = real(self, batch)
        calls.append(spectral._LAST.entry is not before)
        return out

    spectral._Spectral._power = counting
    try:
        mel = Mel(MelConfig(n_mels=64)).process(clips)
        mfcc = Mfcc(MfccConfig(n_mfcc=20, n_mels=40)).process(clips)
        other = Mfcc(MfccConfig(n_mfcc=20, n_mels=40, n_fft=1024)).process(clips)  # other STFT: recomputed
    finally:
        spectral._Spectral._power = real
    assert calls == [True, False, True]
    for a, b in zip(alone_mel, mel):
        assert np.array_equal(a["frames"], b["frames"])
    for a, b in zip(alone_mfcc, mfcc):
        assert np.array_equal(a["frames"], b["frames"]) and np.array_equal(a["mean"], b["mean"])
    assert other[2]["frames"].shape == mfcc[2]["frames"].shape
    assert not np.array_equal(other[2]["frames"], mfcc[2]["frames"])


# ----------------------------------------------------------------------------- engine --


@pytest.fixture
def small(tmp_path):
    cache = tmp_path / "cache"
    rows = make_corpus(tmp_path / "audio", n=10, bad=True)
    write_manifest(cache, rows)
    return cache, rows


def test_engine_reuse_and_new_key(small):
    from mer.extract.engine import run_extract
    from mer.extract.store import open_store

    cache, rows = small
    kw = dict(cache=cache, workers=0, quiet=True, batch_size=4, max_seconds=2.0)
    p = run_extract("iemocap", ["mfcc", "mel", "egemaps"], **kw)
    assert all(v.exists() for v in p.values())
    mtimes = {k: (v / "zarr.json").stat().st_mtime_ns for k, v in p.items()}
    p2 = run_extract("iemocap", ["mfcc", "mel", "egemaps"], **kw)
    assert p2 == p
    assert {k: (v / "zarr.json").stat().st_mtime_ns for k, v in p2.items()} == mtimes  # nothing rewritten
    p3 = run_extract("iemocap", ["mfcc", "mel", "egemaps"], configs={"mfcc": {"n_mfcc": "13"}}, **kw)
    assert p3["mfcc"] != p["mfcc"] and p3["mel"] == p["mel"] and p3["egemaps"] == p["egemaps"]
    assert p["mfcc"].exists()  # the old store is left alone
    with open_store(p3["mfcc"]) as r:
        assert r.attrs["config"]["n_mfcc"] == 13 and r.read_fixed("mean").shape == (len(rows), 13)
        assert r.attrs["complete"] is True and r.attrs["manifest_hash"]
    with open_store(p["egemaps"]) as r:
        ids = r.ids.tolist()
        assert ids == [x["id"] for x in rows]
        f = r.read_fixed("functionals")
        vals, off = r.read_ragged("lld")
        assert f.shape == (len(rows), 88) and vals.shape[1] == 25
        assert np.all(np.isfinite(f)) and len(off) == len(rows) + 1


def test_bad_audio_is_skipped_and_reported_by_name(small):
    from mer.extract.cache import verify_store
    from mer.extract.engine import run_extract
    from mer.extract.store import open_store

    cache, rows = small
    p = run_extract("iemocap", ["mfcc", "egemaps"], cache=cache, workers=0, quiet=True, batch_size=4, max_seconds=2.0)
    for feat, path in p.items():
        rep = json.loads(Path(str(path) + ".report.json").read_text())
        got = {d["id"]: d["reason"] for d in rep["dropped"]}
        assert got == {
            "bad_corrupt": "unreadable audio",
            "bad_empty": "unreadable audio",
            "bad_silent": "silent audio",
            "bad_nan": "NaN/inf samples",
            "bad_long": "too long",
        }, feat
        assert any(d["file"].endswith("corrupt.wav") for d in rep["dropped"])
        assert rep["counts"] == {"rows": 15, "valid": 10, "skipped": 5}
        txt = Path(str(path) + ".report.txt").read_text()
        assert "bad_corrupt" in txt and "too long" in txt
        with open_store(path) as r:
            assert r.valid.tolist() == [True] * 10 + [False] * 5
            if "frames" in r.outputs:
                _, off = r.read_ragged("frames")
                assert np.all(np.diff(off)[10:] == 0)
        assert verify_store(path) == []


def test_nothing_usable_fails(tmp_path):
    from mer.common.errors import MerError
    from mer.extract.engine import run_extract

    rows = make_corpus(tmp_path / "a", n=0, bad=True)
    write_manifest(tmp_path / "c", rows)
    with pytest.raises(MerError, match="nothing usable"):
        run_extract("iemocap", ["mfcc"], cache=tmp_path / "c", workers=0, quiet=True, max_seconds=2.0)


def test_hdf5_equals_zarr_and_float16(small):
    from mer.extract.engine import run_extract
    from mer.extract.store import open_store

    cache, _ = small
    kw = dict(cache=cache, workers=0, quiet=True, batch_size=4, max_seconds=2.0)
    z = run_extract("iemocap", ["mfcc"], **kw)["mfcc"]
    h = run_extract("iemocap", ["mfcc"], fmt="hdf5", **kw)["mfcc"]
    assert h.suffix == ".h5" and h.stem == z.stem  # same key, other format
    A, B = store_arrays(z), store_arrays(h)
    A["attrs"].pop("format"), B["attrs"].pop("format")
    assert A["attrs"] == B["attrs"]
    for k in A["arrays"]:
        assert np.array_equal(A["arrays"][k], B["arrays"][k]), k
    f16 = run_extract("iemocap", ["mfcc"], dtype="float16", **kw)["mfcc"]
    assert f16 != z
    with open_store(f16) as r, open_store(z) as r32:
        a = r.read_fixed("mean")
        assert a.dtype == np.float16
        np.testing.assert_allclose(a.astype(np.float32), r32.read_fixed("mean"), rtol=2e-3, atol=2e-2)


def test_unknown_option_and_feature(small):
    from mer.common.errors import MerError, UsageError
    from mer.extract.engine import run_extract

    cache, _ = small
    with pytest.raises(UsageError, match="n_mfccs"):
        run_extract("iemocap", ["mfcc"], cache=cache, workers=0, quiet=True, configs={"mfcc": {"n_mfccs": 3}})
    with pytest.raises(MerError, match="unknown feature 'mfccc'"):
        run_extract("iemocap", ["mfccc"], cache=cache, workers=0, quiet=True)


def test_find_store_and_cache_cli(small, tmp_path):
    from click.testing import CliRunner

    from mer.common.cli import cli
    from mer.common.errors import MerError
    from mer.extract.cache import find_store, list_stores

    cache, rows = small
    with pytest.raises(MerError, match="mer extract --dataset iemocap --features mel"):
        find_store("iemocap", "mel", cache)
    run = CliRunner().invoke
    args = ["extract", "--dataset", "iemocap", "--cache", str(cache), "--features", "mfcc,mel", "--workers", "0",
            "--batch-size", "4", "--max-seconds", "2", "--mfcc.n_mfcc", "20", "--mfcc.deltas", "true"]
    res = run(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    p = find_store("iemocap", "mfcc", cache)
    s = [x for x in list_stores("iemocap", cache) if x["path"] == p][0]
    assert s["outputs"]["frames"]["dim"] == 60 and s["n"] == len(rows) and s["valid"] == 10
    res = run(cli, args, catch_exceptions=False)
    assert "up to date (reused, nothing computed)" in res.output
    res = run(cli, ["cache", "ls", "--cache", str(cache)], catch_exceptions=False)
    assert "mfcc" in res.output and "frames[T,60]" in res.output
    res = run(cli, ["cache", "verify", "--cache", str(cache), "--dataset", "iemocap"], catch_exceptions=False)
    assert "2 ok, 0 failed" in res.output, res.output
    out = tmp_path / "mfcc.npz"
    res = run(cli, ["cache", "export", "--cache", str(cache), "--dataset", "iemocap", "--feature", "mfcc", "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    with np.load(out) as z:
        assert z["ids"].tolist() == [r["id"] for r in rows]
        assert z["mean"].shape == (len(rows), 60) and z["frames/offsets"][-1] == len(z["frames/values"])
        assert json.loads(str(z["config"]))["n_mfcc"] == 20
    res = run(cli, ["cache", "rm", "--cache", str(cache), "--dataset", "iemocap", "--feature", "mfcc", "--yes"], catch_exceptions=False)
    assert not p.exists() and not Path(str(p) + ".report.json").exists()
    with pytest.raises(MerError):
        find_store("iemocap", "mfcc", cache)


def test_store_goes_stale_when_manifest_changes(small):
    from mer.common.errors import MerError
    from mer.extract.cache import find_store
    from mer.extract.engine import run_extract

    cache, rows = small
    run_extract("iemocap", ["mfcc"], cache=cache, workers=0, quiet=True, max_seconds=2.0)
    find_store("iemocap", "mfcc", cache)
    write_manifest(cache, rows[:-1])
    with pytest.raises(MerError, match="none is complete and built from the current manifest"):
        find_store("iemocap", "mfcc", cache)


def test_lock_excludes_and_dies_with_holder(tmp_path):
    import subprocess
    import sys
    import time

    from mer.common.errors import MerError
    from mer.extract.lock import StoreLock

    store = tmp_path / "x.zarr"
    code = f"from mer.extract.lock import StoreLock; import time; l = StoreLock({str(store)!r}).acquire(); print('held', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(MerError, match=f"pid {proc.pid}"):
            StoreLock(store, wait=False).acquire()
        proc.kill()  # SIGKILL: no cleanup code runs
        proc.wait()
        t0 = time.time()
        with StoreLock(store, wait=True, timeout=10):
            assert time.time() - t0 < 10
    finally:
        proc.kill()


def test_cli_extracts_smile_config_and_a_shipped_set(small, tmp_path):
    """`mer extract --features smile --smile.config PATH` (how seed 004's emo_large is run)
    and a shipped set (is09) from the command line; an edited include gives a new store."""
    import shutil

    from click.testing import CliRunner

    from mer.common.cli import cli
    from mer.extract.cache import find_store
    from mer.extract.store import open_store

    cache, rows = small
    d = tmp_path / "conf"
    shutil.copytree(SMILE_CONF.parent, d)
    args = ["extract", "--dataset", "iemocap", "--cache", str(cache), "--features", "smile,is09", "--workers", "0",
            "--max-seconds", "2", "--smile.config", str(d / SMILE_CONF.name), "--smile.lld_level", "lld"]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    p = find_store("iemocap", "smile", cache)
    with open_store(p) as r:
        assert r.read_fixed("functionals").shape == (len(rows), 224) and r.attrs["outputs"]["lld"]["dim"] == 16
        assert r.attrs["identity"]["config_sha256"] and int(np.sum(r.valid)) == 10
    with open_store(find_store("iemocap", "is09", cache)) as r:
        assert r.read_fixed("functionals").shape == (len(rows), 384)
    inc = d / "smile_small_func.conf.inc"
    inc.write_text(inc.read_text().replace("Means.amean = 1", "Means.amean = 0"))
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    p2 = find_store("iemocap", "smile", cache)
    assert p2 != p and p.exists()
    with open_store(p2) as r:
        assert r.read_fixed("functionals").shape == (len(rows), 224 - 32)
        # computed with the edited file, not by the instance loaded for the old one (which
        # gave 224 values per row, every row "extractor failed", a store of zeros)
        assert int(np.sum(r.valid)) == 10 and np.abs(r.read_fixed("functionals")[: len(rows)]).sum() > 0
