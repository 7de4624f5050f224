"""Issue 12's cache repros, one test each (each fails on the code before the fix):
no failure is ever cached, corruption is caught where data is read, paths stay inside.

Engine runs use ``workers=0`` and a 10-utterance corpus (a few seconds each).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_extract import make_corpus, write_manifest

from mer.common.errors import MerError

KW = dict(workers=0, quiet=True, batch_size=4, max_seconds=2.0)


@pytest.fixture
def corpus(tmp_path):
    cache = tmp_path / "cache"
    rows = make_corpus(tmp_path / "audio", n=10)
    write_manifest(cache, rows)
    return cache, rows, tmp_path / "audio"


def _valid(path) -> int:
    from mer.extract.store import open_store

    with open_store(path) as r:
        return int(r.valid.sum())


# ------------------------------------------------------- repro 1: failures are never cached
def test_unavailable_corpus_is_not_cached_and_is_retried(corpus):
    from mer.extract.cache import find_store
    from mer.extract.engine import run_extract

    cache, rows, audio = corpus
    hidden = audio.with_name("audio-unmounted")
    audio.rename(hidden)  # the disk is briefly not there
    with pytest.raises(MerError, match=r"mfcc: 10 rows failed \(missing audio: 10\).*retries exactly these rows"):
        run_extract("iemocap", ["mfcc"], cache=cache, **KW)
    with pytest.raises(MerError, match="none is complete"):
        find_store("iemocap", "mfcc", cache)
    hidden.rename(audio)
    p = run_extract("iemocap", ["mfcc"], cache=cache, **KW)["mfcc"]
    assert _valid(p) == 10
    from mer.extract.cache import verify_store

    assert verify_store(p) == []


def test_missing_session_fails_the_run_and_only_those_rows_are_retried(corpus, monkeypatch):
    from mer.extract import worker
    from mer.extract.engine import run_extract

    cache, rows, _ = corpus
    gone = [Path(r["audio"]) for r in rows[3:6]]
    for g in gone:
        g.rename(g.with_suffix(".away"))
    with pytest.raises(MerError, match=r"3 rows failed \(missing audio: 3\), e\.g\. Ses01F_impro01_F003"):
        run_extract("iemocap", ["mfcc", "egemaps"], cache=cache, **KW)
    from mer.extract.cache import find_store

    with pytest.raises(MerError, match="run `mer extract"):  # so `mer train` cannot run on 7 of 10 rows
        find_store("iemocap", "mfcc", cache)
    for g in gone:
        g.with_suffix(".away").rename(g)
    seen = []
    real = worker.run_batch

    def counting(rows_, specs, *a, **k):
        seen.append(([r["id"] for r in rows_], [s.feature for s in specs]))
        return real(rows_, specs, *a, **k)

    monkeypatch.setattr("mer.extract.runners.Local.run", lambda self, tasks, on_result, max_in_flight: [
        on_result(t, counting(t.rows, t.specs, t.max_seconds, t.threads)) for t in tasks])
    p = run_extract("iemocap", ["mfcc", "egemaps"], cache=cache, **KW)
    want = sorted(r["id"] for r in rows[3:6])
    assert sorted(i for ids, _ in seen for i in ids) == sorted(want * 2)  # each feature, exactly the failed rows
    assert all(_valid(x) == 10 for x in p.values())
    # and the result equals an uninterrupted run
    from test_extract import store_arrays

    cache2 = cache.with_name("cache2")
    write_manifest(cache2, rows)
    monkeypatch.undo()
    ref = run_extract("iemocap", ["mfcc", "egemaps"], cache=cache2, **KW)
    for f in p:
        a, b = store_arrays(p[f]), store_arrays(ref[f])
        for k in a["arrays"]:
            assert np.array_equal(a["arrays"][k], b["arrays"][k]), (f, k)


def test_broken_extractor_fails_only_its_feature_and_is_retried_once_fixed(corpus, monkeypatch):
    from mer.extract.engine import run_extract
    from mer.extract.smile import _Smile

    cache, rows, _ = corpus
    real = _Smile.process

    def broken(self, batch):
        raise ImportError("libSMILEapi.so: cannot open shared object file")

    monkeypatch.setattr(_Smile, "process", broken)
    with pytest.raises(MerError, match=r"egemaps: 10 rows failed \(extractor failed: 10\)"):
        run_extract("iemocap", ["mfcc", "egemaps"], cache=cache, **KW)
    monkeypatch.setattr(_Smile, "process", real)
    from mer.extract.cache import list_stores

    done = {s["feature"]: s["complete"] for s in list_stores("iemocap", cache) if s["format"] != "partial"}
    assert done == {"mfcc": True}  # the good feature is finished; the broken one is not
    p = run_extract("iemocap", ["mfcc", "egemaps"], cache=cache, **KW)
    assert _valid(p["egemaps"]) == 10 and _valid(p["mfcc"]) == 10


def test_accept_failures_records_them_and_a_later_run_retries(corpus):
    from click.testing import CliRunner

    from mer.common.cli import cli
    from mer.extract.engine import run_extract
    from mer.extract.store import open_store

    cache, rows, _ = corpus
    gone = Path(rows[0]["audio"])
    gone.rename(gone.with_suffix(".away"))
    p = run_extract("iemocap", ["mfcc"], cache=cache, accept_failures=True, **KW)["mfcc"]
    with open_store(p) as r:
        assert r.attrs["complete"] and r.attrs["failed"]["rows"] == 1 and int(r.valid.sum()) == 9
    rep = json.loads(Path(str(p) + ".report.json").read_text())
    assert any(d["id"] == rows[0]["id"] and d["reason"].startswith("failed (accepted): missing audio") for d in rep["dropped"])
    res = CliRunner().invoke(cli, ["cache", "ls", "--cache", str(cache)], catch_exceptions=False)
    assert "1 failed rows accepted" in res.output
    gone.with_suffix(".away").rename(gone)
    # reused as accepted with the flag again; retried (that one row) without it
    assert run_extract("iemocap", ["mfcc"], cache=cache, accept_failures=True, **KW)["mfcc"] == p
    assert _valid(p) == 9
    run_extract("iemocap", ["mfcc"], cache=cache, **KW)
    with open_store(p) as r:
        assert int(r.valid.sum()) == 10 and not r.attrs.get("failed")


def test_input_properties_still_complete_the_store(tmp_path):
    """Silent, NaN, corrupt bytes, too long: properties of the input; the store is complete."""
    from mer.extract.engine import run_extract

    cache = tmp_path / "c"
    write_manifest(cache, make_corpus(tmp_path / "a", n=4, bad=True))
    p = run_extract("iemocap", ["mfcc"], cache=cache, **KW)["mfcc"]
    assert _valid(p) == 4


# ------------------------------------------------------------------- repro 3: --max-seconds
def test_max_seconds_is_part_of_the_key(corpus):
    from mer.extract.engine import run_extract

    cache, rows, _ = corpus
    short = run_extract("iemocap", ["mfcc"], cache=cache, **{**KW, "max_seconds": 0.5})["mfcc"]
    full = run_extract("iemocap", ["mfcc"], cache=cache, **{**KW, "max_seconds": 600.0})["mfcc"]
    assert short != full
    assert _valid(full) == 10 and _valid(short) == sum(r["duration"] <= 0.5 for r in rows)


# ------------------------------------------------------------ repro 2: corruption is caught
def _chunk_files(store: Path, array: str) -> list[Path]:
    return sorted(p for p in (store / array / "c").rglob("*") if p.is_file())


def _flip(f: Path) -> None:
    b = bytearray(f.read_bytes())
    b[len(b) // 2] ^= 0xFF
    f.write_bytes(bytes(b))


@pytest.mark.parametrize("array,how", [("valid", "flip"), ("mean", "flip"), ("mean", "delete"),
                                       ("frames/values", "flip"), ("frames/offsets", "delete")])
def test_corrupt_chunk_stops_reuse_and_reading(corpus, array, how):
    from mer.extract.engine import run_extract
    from mer.extract.store import StoreCorrupt, open_store

    cache, _, _ = corpus
    p = run_extract("iemocap", ["mfcc"], cache=cache, **KW)["mfcc"]
    f = _chunk_files(p, array)[0]
    _flip(f) if how == "flip" else f.unlink()
    with pytest.raises(MerError, match=f"{p.name}.*array '{array}'.*mer extract --dataset iemocap --features mfcc"):
        run_extract("iemocap", ["mfcc"], cache=cache, **KW)
    with open_store(p) as r, pytest.raises(StoreCorrupt, match=f"array '{array}'"):
        r.scan()


def test_train_stops_on_a_corrupt_store(tmp_path):
    from mer.common.cli import main
    from mer.train.synthetic_features import synthetic, write_stores

    man, sets = synthetic(80, seed=2, text_dim=4, audio_dim=3, ragged=False)
    paths = write_stores(man, sets, tmp_path)
    _flip(_chunk_files(paths["mfcc"], "pooled")[0])
    with pytest.raises(SystemExit) as e:
        main(["train", "-d", "iemocap", "-f", "bert,mfcc", "--cache", str(tmp_path), "--out", str(tmp_path / "runs"),
              "--epochs", "1", "-q"])
    assert e.value.code == 1
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*/metrics.json"))


def test_cache_verify_checks_every_store_and_names_each_failure(corpus):
    from click.testing import CliRunner

    from mer.common.cli import cli
    from mer.extract.engine import run_extract

    cache, _, _ = corpus
    p = run_extract("iemocap", ["mfcc", "mel", "egemaps"], cache=cache, **KW)
    _flip(_chunk_files(p["mfcc"], "valid")[0])     # was: a bare blosc RuntimeError, nothing after it checked
    _chunk_files(p["mel"], "frames/values")[0].unlink()
    res = CliRunner().invoke(cli, ["cache", "verify", "--cache", str(cache)])
    assert res.exit_code == 1
    out = res.output
    assert f"FAIL {p['mfcc']}" in out and "array 'valid'" in out
    assert f"FAIL {p['mel']}" in out and "array 'frames/values'" in out
    assert f"ok   {p['egemaps']}" in out and "1 ok, 2 failed" in out


# ---------------------------------------------------------------- repro 4: paths stay inside
def test_cache_rm_refuses_paths_outside_the_cache(corpus, tmp_path):
    from click.testing import CliRunner

    from mer.common.cli import cli

    cache, _, _ = corpus
    decoy = tmp_path / "decoy" / "features" / "mine.zarr"
    decoy.mkdir(parents=True)
    (decoy / "precious.txt").write_text("not a mer store")
    run = CliRunner().invoke
    res = run(cli, ["cache", "rm", "--cache", str(cache), "--dataset", "../decoy", "-y"])
    assert res.exit_code != 0 and decoy.exists()
    res = run(cli, ["cache", "rm", "--cache", str(cache), str(decoy), "-y"])
    assert res.exit_code != 0 and (decoy / "precious.txt").exists()
    inside = cache / "iemocap" / "features" / "fake-0123456789abcdef.zarr"
    inside.mkdir(parents=True)
    (inside / "precious.txt").write_text("x")
    res = run(cli, ["cache", "rm", "--cache", str(cache), str(inside), "-y"])
    assert res.exit_code != 0 and (inside / "precious.txt").exists()


def test_cache_rm_respects_the_lock(corpus):
    import subprocess
    import sys

    from click.testing import CliRunner

    from mer.common.cli import cli
    from mer.extract.engine import run_extract

    cache, _, _ = corpus
    p = run_extract("iemocap", ["mfcc"], cache=cache, **KW)["mfcc"]
    staging = Path(str(p) + ".partial")
    staging.mkdir()
    (staging / "staging.json").write_text("{}")
    code = f"from mer.extract.lock import StoreLock; import time; l = StoreLock({str(p)!r}).acquire(); print('held', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        res = CliRunner().invoke(cli, ["cache", "rm", "--cache", str(cache), "--dataset", "iemocap", "-y"])
        assert res.exit_code != 0 and "another extraction" in str(res.exception) + res.output
        assert p.exists() and staging.exists()
    finally:
        proc.kill()
        proc.wait()
    res = CliRunner().invoke(cli, ["cache", "rm", "--cache", str(cache), "--dataset", "iemocap", "-y"], catch_exceptions=False)
    assert res.exit_code == 0 and not p.exists() and not staging.exists()


def test_cache_export_refuses_to_write_inside_a_store(corpus):
    from click.testing import CliRunner

    from mer.common.cli import cli
    from mer.extract.cache import verify_store
    from mer.extract.engine import run_extract

    cache, _, _ = corpus
    p = run_extract("iemocap", ["mfcc"], cache=cache, **KW)["mfcc"]
    for out in (p / "zarr.json", p / "mean" / "x.npz", p):
        res = CliRunner().invoke(cli, ["cache", "export", "--cache", str(cache), "-d", "iemocap", "-f", "mfcc", "--out", str(out)])
        assert res.exit_code != 0, out
    assert verify_store(p) == []
