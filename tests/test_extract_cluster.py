"""The engine on real Dask clusters: a local cluster killed with SIGKILL mid-run and resumed,
and a `dask scheduler` + `dask worker` pair started as separate processes on 127.0.0.1.
Both must give stores equal to an uninterrupted in-process run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from dask_procs import scheduler_and_worker
from test_extract import assert_same_store, make_corpus, write_manifest

from mer.extract.base import EXTRACTORS, Extractor, ExtractorConfig, OutputSpec


@dataclass
class _CrashConfig(ExtractorConfig):
    pass


class CrashTest(Extractor):
    """Kills its worker process (as a segfaulting native decoder would) on 'crashme'."""

    name = "crashtest"
    modality = "audio"
    Config = _CrashConfig
    sample_rate = 16000

    def outputs(self):
        return {"rms": OutputSpec("fixed", 1)}

    def process(self, batch):
        if any(u.id == "crashme" for u in batch):
            os._exit(11)
        return [{"rms": np.array([np.sqrt(np.mean(u.audio**2))], np.float32)} for u in batch]


# Registered only where asked (the test below, and the Dask workers it starts, which import
# this module by name and inherit the variable), so other tests never see it.
if os.environ.get("MER_TEST_CRASHTEST"):
    EXTRACTORS.register("crashtest")(CrashTest)

BIN = Path(sys.executable).parent


def _env(cache: Path) -> dict:
    return {**os.environ, "MER_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("cluster")
    rows = make_corpus(base / "audio", n=40, bad=True, min_s=0.5, max_s=1.2)
    return base, rows


@pytest.fixture(scope="module")
def reference(corpus):
    from mer.extract.engine import run_extract

    base, rows = corpus
    cache = base / "ref"
    write_manifest(cache, rows)
    return run_extract("iemocap", ["mfcc", "egemaps"], cache=cache, workers=0, quiet=True, batch_size=3, max_seconds=2.0)


def test_sigkill_then_resume_equals_uninterrupted(corpus, reference):
    base, rows = corpus
    cache = base / "killed"
    write_manifest(cache, rows)
    cmd = [str(BIN / "mer"), "extract", "--dataset", "iemocap", "--features", "mfcc,egemaps", "--workers", "1",
           "--batch-size", "3", "--max-seconds", "2", "--quiet"]
    proc = subprocess.Popen(cmd, env=_env(cache), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    feats = cache / "iemocap" / "features"
    n_batches = -(-len(rows) // 3)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            parts = list(feats.glob("egemaps-*.partial/batch-*.npz")) if feats.exists() else []
            if len(parts) >= 2 or proc.poll() is not None:
                break
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its cluster, no cleanup
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    staged = list(feats.glob("egemaps-*.partial/batch-*.npz"))
    assert 0 < len(staged) < n_batches, f"kill did not land mid-run ({len(staged)} of {n_batches} parts)"
    assert not list(feats.glob("egemaps-*.zarr/zarr.json"))
    out = subprocess.run(cmd[:-1], env=_env(cache), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed" in out.stderr
    for feat, ref in reference.items():
        got = feats / ref.name
        assert got.exists(), feat
        assert_same_store(got, ref)
        assert not Path(str(got) + ".partial").exists()


def test_dask_scheduler_and_worker_processes(corpus, reference):
    from mer.extract.engine import run_extract

    base, rows = corpus
    cache = base / "dist"
    write_manifest(cache, rows)
    with scheduler_and_worker() as addr:
        got = run_extract("iemocap", ["mfcc", "egemaps"], cache=cache, scheduler=addr, quiet=True, batch_size=3, max_seconds=2.0)
    for feat, ref in reference.items():
        assert got[feat].name == ref.name
        assert_same_store(got[feat], ref)


def test_utterance_that_kills_workers_is_skipped(tmp_path):
    import json

    from mer.extract.engine import run_extract
    from mer.extract.store import open_store

    os.environ["MER_TEST_CRASHTEST"] = "1"
    EXTRACTORS.register("crashtest")(CrashTest)
    rows = make_corpus(tmp_path / "a", n=8)
    rows[5]["id"] = "crashme"
    cache = tmp_path / "c"
    write_manifest(cache, rows)
    p = run_extract("iemocap", ["crashtest"], cache=cache, workers=1, quiet=True, batch_size=4)["crashtest"]
    with open_store(p) as r:
        assert r.attrs["complete"] is True
        assert r.valid.tolist() == [True] * 5 + [False] + [True] * 2
        assert np.all(r.read_fixed("rms")[r.valid] > 0)
    rep = json.loads(Path(str(p) + ".report.json").read_text())
    assert [(d["id"], d["reason"]) for d in rep["dropped"]] == [("crashme", "worker crashed")]


def test_script_without_main_guard_fails_with_advice(corpus, tmp_path):
    """A script that calls run_extract at import level (no ``if __name__ == "__main__":``)
    makes every worker process import it and call run_extract again. That used to hang; it
    must now end, non-zero, with the fix in the message."""
    base, rows = corpus
    cache = tmp_path / "cache"
    write_manifest(cache, rows)
    script = tmp_path / "noguard.py"
    script.write_text(
        "from mer.extract.engine import run_extract\n"
        f"run_extract('iemocap', ['mfcc'], cache={str(cache)!r}, workers=1, quiet=True)\n"
        "print('finished')\n"
    )
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240, env=_env(cache))
    assert r.returncode != 0, r.stdout
    assert "finished" not in r.stdout
    assert '__name__ == "__main__"' in r.stderr, r.stderr[-2000:]


def test_no_cluster_when_one_process_finishes_sooner(tmp_path, monkeypatch):
    """A local Dask cluster costs ~1.5 s to start: a run of one task (or on one core) runs in
    this process unless --workers/--scheduler asks for workers; the store is the same."""
    from mer.extract import runners
    from mer.extract.engine import run_extract

    started = []

    class NoDask:
        def __init__(self, workers, *a, **k):
            started.append(workers)

    monkeypatch.setattr(runners, "Dask", NoDask)
    monkeypatch.setattr(runners.os, "cpu_count", lambda: 2)
    assert isinstance(runners.choose_runner(1, None, None, True, False), runners.Local)
    assert isinstance(runners.choose_runner(1, 1, None, True, False), NoDask)      # asked for: started
    assert isinstance(runners.choose_runner(1, None, "tcp://x:1", True, False), NoDask)
    assert isinstance(runners.choose_runner(3, None, None, True, False), NoDask)   # 3 tasks, 2 cores
    assert isinstance(runners.choose_runner(3, 0, None, True, False), runners.Local)
    monkeypatch.setattr(runners.os, "cpu_count", lambda: 1)
    assert isinstance(runners.choose_runner(3, None, None, True, False), runners.Local)
    assert started == [1, None, None]

    rows = make_corpus(tmp_path / "audio", n=5)
    for c in ("cache", "ref"):
        write_manifest(tmp_path / c, rows)
    monkeypatch.setattr(runners.os, "cpu_count", lambda: 2)
    got = run_extract("iemocap", ["mfcc"], cache=tmp_path / "cache", quiet=True, batch_size=16)  # 5 rows: one task
    assert started == [1, None, None]  # no cluster for the run
    ref = run_extract("iemocap", ["mfcc"], cache=tmp_path / "ref", quiet=True, workers=0, batch_size=16)
    assert_same_store(got["mfcc"], ref["mfcc"])
