"""bench/gpu_check.sh, the GPU machine's one script: it parses, refuses unknown options,
and its --probe lists what a machine lacks. The whole CPU dry run takes minutes on 2 cores,
so it is a documented command rather than a test:

    bash bench/gpu_check.sh --cpu-dry-run --out /tmp/gpu-dry     # exit 0; /tmp/gpu-dry/gpu_check.json
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.sh"


def _bash(*args, **kw):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120, **kw)


def test_script_parses_and_refuses_unknown_options():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    r = _bash("--no-such-option")
    assert r.returncode == 2 and "unknown option --no-such-option" in r.stderr
    h = _bash("--help")
    assert h.returncode == 0 and "--cpu-dry-run" in h.stdout and "pip download" in h.stdout


def test_probe_names_the_missing_distributions(tmp_path):
    """--probe on this venv: its Python, and a "missing:" line naming exactly the listed
    distributions that are not installed here (what the wheel folder must then carry)."""
    import os

    reqs = (SCRIPT.parent / "gpu_requirements.txt").read_text()
    names = [l.strip() for l in reqs.splitlines() if l.strip() and not l.startswith("#")]
    assert "librosa" in names and "opensmile" in names and "zarr" in names
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "python3"   # --probe asks python3: this venv's (a symlink would lose the venv)
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    r = _bash("--probe", env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("python 3.")
    [missing] = [l for l in lines if l.startswith("missing:")]
    from importlib import metadata

    expect = []
    for n in names:
        try:
            metadata.version(n)
        except metadata.PackageNotFoundError:
            expect.append(n)
    assert missing.split()[1:] == expect
