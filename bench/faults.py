"""Fault injection: random SIGKILLs of `mer extract`, and one killed worker, against an
uninterrupted reference run on the same corpus. Prints identical/total.

Each trial starts `mer extract` (Dask workers) in a fresh cache, SIGKILLs the whole process
group (driver and workers, no cleanup code runs) at a random moment, runs the same command
again to completion, and compares every store with the reference array by array and
attribute by attribute (less ``created``/``versions``). The last trial instead SIGKILLs one
worker process mid-run and lets the run finish. A trial counts as identical only if every
store equals the reference and no staging folder is left.

    python bench/faults.py                 # 20 kills + 1 worker kill, 40 utterances
    python bench/faults.py --kills 5 --n 24 --seed 1
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent
FEATURES = "mfcc,egemaps"
ARGS = ["--features", FEATURES, "--workers", "2", "--batch-size", "3", "--max-seconds", "5", "--quiet"]


def make_corpus(root: Path, n: int, seed: int) -> list[dict]:
    import soundfile as sf

    from mer.common.audio import file_hash

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        sr = 16000
        t = np.arange(int(sr * rng.uniform(0.6, 1.6))) / sr
        f0 = 120 + 80 * rng.random()
        x = sum((0.4 / k) * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 6)) * (0.5 + 0.5 * np.sin(6 * t) ** 2)
        x = (x + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
        p = root / f"u{i:03d}.wav"
        sf.write(p, x, sr, subtype="PCM_16")
        rows.append({"id": f"Ses01F_impro01_F{i:03d}", "audio": str(p), "duration": len(t) / sr, "text": f"utterance {i}",
                     "emotion": "neu", "audio_hash": file_hash(p), "dataset": "iemocap"})
    return rows


def write_manifest(cache: Path, rows: list[dict]) -> None:
    from mer.common import manifest as mf
    from mer.common import paths

    mf.write(mf.to_frame(rows), paths.manifest_path("iemocap", cache), "iemocap", None)


def env(cache: Path) -> dict:
    return {**os.environ, "MER_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}


def stores(cache: Path) -> dict[str, Path]:
    feats = cache / "iemocap" / "features"
    return {p.name: p for p in feats.glob("*.zarr")} if feats.exists() else {}


def same(a: Path, b: Path) -> bool:
    from mer.extract.store import open_store

    with open_store(a) as x, open_store(b) as y:
        ax = {k: v for k, v in x.attrs.items() if k not in ("created", "versions")}
        ay = {k: v for k, v in y.attrs.items() if k not in ("created", "versions")}
        if ax != ay or x.arrays() != y.arrays():
            return False
        return all(np.array_equal(x.read(n), y.read(n)) for n in x.arrays())


def identical(cache: Path, ref: dict[str, Path]) -> bool:
    got = stores(cache)
    left = list((cache / "iemocap" / "features").glob("*.partial"))
    return set(got) == set(ref) and not left and all(same(got[k], ref[k]) for k in ref)


def run_cli(cache: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "mer"), "extract", "--dataset", "iemocap", *ARGS], env=env(cache),
                          capture_output=True, text=True, timeout=timeout)


def start_cli(cache: Path) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "mer"), "extract", "--dataset", "iemocap", *ARGS], env=env(cache),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(60)


def staged(cache: Path) -> int:
    feats = cache / "iemocap" / "features"
    return len(list(feats.glob("*.partial/batch-*.npz"))) if feats.exists() else 0


def worker_pids(driver: int) -> list[int]:
    """Leaf processes under the driver: the Dask worker processes (forked from the
    forkserver, which itself has children and so is not a leaf)."""
    import psutil

    try:
        procs = psutil.Process(driver).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in procs:
        try:
            if not p.children() and "resource_tracker" not in " ".join(p.cmdline()):
                out.append(p.pid)
        except psutil.Error:
            pass
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--n", type=int, default=40, help="utterances in the corpus")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    with tempfile.TemporaryDirectory(prefix="mer-faults-") as tmp:
        tmp = Path(tmp)
        rows = make_corpus(tmp / "audio", a.n, a.seed)
        ref_cache = tmp / "ref"
        write_manifest(ref_cache, rows)
        t0 = time.time()
        out = run_cli(ref_cache)
        wall = time.time() - t0
        if out.returncode != 0:
            print(out.stderr[-2000:])
            return 1
        ref = stores(ref_cache)
        n_parts = len(ref) * -(-a.n // 3)
        print(f"reference: {len(ref)} stores, {a.n} utterances, uninterrupted run {wall:.1f} s")
        ok = 0
        total = 0
        for k in range(a.kills):
            cache = tmp / f"kill{k:02d}"
            write_manifest(cache, rows)
            proc = start_cli(cache)
            # A random point of progress: after 1..all-1 of the run's parts are staged (a
            # kill during start-up would test nothing), plus a random fraction of a part.
            target = rnd.randint(1, n_parts - 1)
            t0 = time.time()
            while proc.poll() is None and staged(cache) < target and time.time() - t0 < 600:
                time.sleep(0.01)
            time.sleep(rnd.uniform(0, 0.3))
            at = time.time() - t0
            kill_group(proc)
            parts = staged(cache)
            res = run_cli(cache)
            good = res.returncode == 0 and identical(cache, ref)
            total += 1
            ok += good
            print(f"kill {k + 1:2d}: SIGKILL at {at:5.1f} s ({parts:2d}/{n_parts} parts staged) -> resumed run "
                  f"{'identical' if good else 'DIFFERENT (rc %d)' % res.returncode}")
            if not good and res.returncode:
                print(res.stderr[-1500:])
        # One worker killed mid-run: the run itself must recover and finish.
        cache = tmp / "worker-kill"
        write_manifest(cache, rows)
        proc = subprocess.Popen([str(BIN / "mer"), "extract", "--dataset", "iemocap", *ARGS], env=env(cache),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        killed = None
        feats = cache / "iemocap" / "features"
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and killed is None:
            if feats.exists() and list(feats.glob("*.partial/batch-*.npz")):
                pids = worker_pids(proc.pid)
                if pids:
                    killed = rnd.choice(pids)
                    os.kill(killed, signal.SIGKILL)
            time.sleep(0.05)
        _, err = proc.communicate(timeout=600)
        good = proc.returncode == 0 and identical(cache, ref) and killed is not None
        total += 1
        ok += good
        print(f"worker kill: SIGKILL to worker pid {killed} -> same run finished "
              f"{'identical' if good else 'DIFFERENT (rc %s)' % proc.returncode}")
        if not good:
            print(err[-1500:])
        print(f"identical: {ok}/{total}")
        return 0 if ok == total else 1


if __name__ == "__main__":
    raise SystemExit(main())
