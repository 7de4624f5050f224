"""Benchmark: mer against its peers (lhotse, opensmile, nkululeko) on the same corpus, paired.

Issue 17 item 6. The peers are installed from PyPI into their OWN virtual environment
(``--peers-venv``, default ``<user cache>/mer/bench-peers-venv``), created on the first run
and reused after: they pin other versions of shared libraries than mer does, and installing
them beside mer would change what mer is measured with. Their work runs in that
environment's python, as this same file with ``--peer TASK`` (so only the standard library is
imported at the top of this file).

One corpus, synthesized by ``mer.common.synth.generate`` (IEMOCAP layout, espeak-ng speech,
16 kHz; per_class 16 x 4 emotions x 5 sessions = 320 labelled utterances), prepared once by
``mer prepare``. Every comparison runs both sides ``--repeats`` times, paired, the order
alternating (mer first on even repeats, the peer first on odd ones), each side in a fresh
cache/output folder, measured by ``bench_extract.run_measured`` (wall time; CPU seconds and
peak summed PSS of the process tree sampled every 0.5 s) plus the children's rusage for CPU
(a process that ends between two samples is still counted):

a. features: ``mer extract -f mfcc,mel,egemaps --workers 2`` (64-band log-mel, 40 MFCCs,
   eGeMAPSv02 functionals + LLDs from one openSMILE pass)
   vs lhotse ``CutSet.compute_and_store_features`` with ``Fbank`` (64 bins) and ``Mfcc``
   (40 ceps from 40 bins), ``num_jobs=2``, plus ``opensmile.Smile(eGeMAPSv02, ...,
   num_workers=2, multiprocessing=True).process_files`` for functionals and for LLDs (the
   outputs mer stores), written to parquet;
b. eGeMAPS alone: ``mer extract -f egemaps --egemaps.lld false --workers 2`` (functionals
   only, as the peer) vs ``opensmile.Smile(eGeMAPSv02, Functionals, num_workers=2,
   multiprocessing=True).process_files``;
c. a first full run: ``mer prepare`` + ``mer extract -f egemaps`` + ``mer train -f egemaps
   --protocol loso`` (concat fusion: an MLP) from an empty cache vs nkululeko on the same
   corpus exported as its CSV format (file, speaker, emotion; not timed), eGeMAPSv02
   functionals (``[FEATS] type = ['os']``), an MLP, leave-one-speaker-out, from an empty
   experiment folder;
d. training alone: the same ``mer train`` on the stores of (c) vs nkululeko rerun in the
   experiment folder of (c), where its features are stored (it does not extract again);
e. start-up: ``mer --help`` and ``mer train --help`` vs ``lhotse --help`` and
   ``python -m nkululeko.nkululeko --help``.

Each side checks the other did the same work: files processed and feature dimensions (the
table's ``check`` column), and for (c)/(d) the unweighted accuracy both report.
Prints a Markdown table: median wall / CPU / peak PSS of each side and the ratio mer/peer
(below 1: mer is ahead).

    python bench/bench_peers.py --repeats 5 --out /tmp/mer-bench-peers/results.json
    python bench/bench_peers.py --quick            # smoke run: 20 utterances, 1 repeat
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
BIN = Path(sys.executable).parent
# Pinned so every run measures the same peers (the newest releases on 2026-12-03).
# torch first, from its CPU wheel: nkululeko needs torch, and an unpinned one would pull a
# multi-GB CUDA build (docs/environment.md).
PEER_TORCH = "torch==2.13.0"
PEER_PACKAGES = ["lhotse==1.33.0", "opensmile==2.6.0", "nkululeko==1.14.1"]
WORKERS = 2


def default_peers_venv() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "mer" / "bench-peers-venv"


def ensure_peers(venv: Path) -> dict:
    """The peers' environment, created on first use; returns its record (versions and how
    long the install took). Reused while the pins are the same; otherwise rebuilt."""
    record = venv / "mer-bench-peers.json"
    want = [PEER_TORCH, *PEER_PACKAGES]
    if record.exists():
        rec = json.loads(record.read_text())
        if rec.get("pins") == want and (venv / "bin" / "python").exists():
            rec["reused"] = True
            return rec
        print(f"peer environment {venv} has other pins ({rec.get('pins')}): rebuilding", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    print(f"installing the peers into {venv} (first run only): {' '.join(want)}", flush=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for args in ([PEER_TORCH], PEER_PACKAGES):
        r = subprocess.run(pip + args, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"installing {' '.join(args)} into {venv} failed ({r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-3000:]}")
    seconds = time.perf_counter() - t0
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
         "('torch', 'lhotse', 'opensmile', 'nkululeko', 'numpy', 'pandas', 'scikit-learn')}))"],
        capture_output=True, text=True, check=True)
    rec = {"pins": want, "install_s": round(seconds, 1), "versions": json.loads(probe.stdout),
           "installed_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    record.write_text(json.dumps(rec, indent=1))
    rec["reused"] = False
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peers-venv", type=Path, default=default_peers_venv())
    ap.add_argument("--install-only", action="store_true")
    a = ap.parse_args()
    rec = ensure_peers(a.peers_venv)
    print(json.dumps(rec))


if __name__ == "__main__":
    main()
