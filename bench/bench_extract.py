"""Benchmark: `mer extract` vs a plain per-file loop, MFCC + mel + eGeMAPS, same machine.

For each corpus size: synthesize an IEMOCAP-layout corpus (mer.common.synth, espeak-ng
speech, 16 kHz), prepare its manifest (not timed), then time in separate processes

- mer:  ``mer extract --features mfcc,mel,egemaps`` (default workers: one per core), fresh
        cache, stores written and verified;
- loop: one file at a time, what a script would do: ``librosa.load``,
        ``librosa.feature.mfcc``, ``librosa.feature.melspectrogram`` + ``power_to_db``,
        ``opensmile.Smile.process_file`` for eGeMAPSv02 functionals and again for the LLDs
        (the same outputs mer stores), results kept in lists and pickled at the end.

Same parameters on both sides (16 kHz, 25 ms window, 10 ms hop, n_fft 512, 40 MFCCs from 40
mel bands, 64-band log-mel). Peak memory is the peak of the summed PSS (proportional set
size, so shared libraries are not counted twice) of the process and all its descendants,
sampled every 0.5 s; CPU seconds are summed over the same processes. Prints a Markdown table with the speed-up ratio and both peaks.

    python bench/bench_extract.py --per-class 8 32 --out /tmp/mer-bench

``--no-loop`` times mer alone (a 10,000-utterance corpus, ``--per-class 500``, would keep the
per-file loop busy for most of an hour); ``--device cuda`` and ``--features`` are passed to
``mer extract``; ``--json F`` writes the rows.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

BIN = Path(sys.executable).parent
# Reading a process's PSS (/proc/PID/smaps_rollup) costs ~5 ms of CPU once torch is loaded;
# mer's tree has five processes, the loop one. At 0.2 s the sampler itself took ~13% of a
# core while mer ran (2.6% for the loop), on the same two cores it measures. Peaks are
# plateaus (batches of bounded size), so 0.5 s does not miss them.
SAMPLE_S = 0.5


def tree_sample(proc, cpu: dict) -> int:
    """Summed PSS of ``proc`` and its descendants; records each one's CPU seconds in ``cpu``
    (pid -> user + system), so processes that end before the command does still count
    (a forkserver's workers are not reaped by the command, so rusage would miss them)."""
    import psutil

    total = 0
    for p in [proc] + proc.children(recursive=True):
        try:
            with p.oneshot():
                mi = p.memory_full_info()
                t = p.cpu_times()
            total += getattr(mi, "pss", mi.rss)
            cpu[p.pid] = t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[float, int, float, str]:
    """Wall seconds, peak tree PSS (bytes) and CPU seconds (user + sys of the command and all
    its descendants, sampled every SAMPLE_S) of a command."""
    import psutil

    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ps = psutil.Process(p.pid)
    peak = [0]
    cpu: dict[int, float] = {}
    done = threading.Event()

    def sample():
        while not done.is_set():
            try:
                peak[0] = max(peak[0], tree_sample(ps, cpu))
            except Exception:
                pass
            done.wait(SAMPLE_S)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, _ = p.communicate()
    wall = time.perf_counter() - t0
    done.set()
    th.join()
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{out[-3000:]}")
    return wall, peak[0], sum(cpu.values()), out


def loop_main(manifest: str, out: str) -> None:
    """The baseline: a plain per-file loop (run in its own process by the benchmark)."""
    import librosa
    import opensmile
    import pandas as pd

    df = pd.read_parquet(manifest)
    func = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.Functionals)
    lld = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.LowLevelDescriptors)
    res = {"mfcc": [], "mel": [], "egemaps": [], "egemaps_lld": []}
    for path in df["audio"]:
        y, sr = librosa.load(path, sr=16000)
        res["mfcc"].append(librosa.feature.mfcc(y=y, sr=sr, n_mfcc=40, n_mels=40, n_fft=512, win_length=400, hop_length=160))
        res["mel"].append(librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, n_mels=64, n_fft=512, win_length=400, hop_length=160)))
        res["egemaps"].append(func.process_file(path).to_numpy())
        res["egemaps_lld"].append(lld.process_file(path).to_numpy())
    with open(out, "wb") as f:
        pickle.dump(res, f)


def machine() -> str:
    import psutil

    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()[:10]
    return "\n".join([
        f"nproc: {os.cpu_count()}",
        f"RAM: {psutil.virtual_memory().total / 2**30:.1f} GiB",
        f"load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"python {platform.python_version()}, {platform.platform()}",
        *lscpu,
    ])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-class", type=int, nargs="+", default=[8, 32], help="synth per_class for each corpus size")
    ap.add_argument("--sessions", type=int, default=5)
    ap.add_argument("--out", default="/tmp/mer-bench")
    ap.add_argument("--workers", type=int, default=None, help="mer --workers (default: one per core)")
    ap.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up run of both sides")
    ap.add_argument("--no-loop", action="store_true", help="time mer only (no per-file loop baseline)")
    ap.add_argument("--device", default=None, help="mer extract --device (default: its own, auto)")
    ap.add_argument("--features", default="mfcc,mel,egemaps", help="mer extract --features (the loop computes the default three)")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--loop", nargs=2, metavar=("MANIFEST", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.loop:
        loop_main(*a.loop)
        return
    from mer.common.synth import generate

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    print("## machine\n```\n" + machine() + "\n```", flush=True)
    rows = []
    sizes = list(a.per_class)
    if not a.no_warmup:
        # An untimed run of both sides on a tiny corpus first: whichever side ran first would
        # otherwise pay for loading torch, openSMILE, librosa and dask from a cold disk cache
        # (seen: 20 s of mer's start-up after the machine sat idle).
        sizes = [0] + sizes
    for pc in sizes:
        warm = pc == 0
        if warm:
            pc = 1
        corpus = out / f"corpus-{pc}"
        if not (corpus / "synth_info.json").exists():
            t = time.perf_counter()
            generate(corpus, layout="iemocap", per_class=pc, sessions=a.sessions, seed=0)
            print(f"synthesized {corpus} in {time.perf_counter() - t:.0f} s", flush=True)
        cache = out / f"cache-{pc}"
        env = {**os.environ, "MER_CACHE": str(cache)}
        subprocess.run([str(BIN / "mer"), "prepare", "--dataset", "iemocap", "--root", str(corpus)], env=env, check=True, capture_output=True)
        import pandas as pd

        mpath = cache / "iemocap" / "manifest.parquet"
        df = pd.read_parquet(mpath)
        hours = float(df["duration"].sum()) / 3600
        subprocess.run([str(BIN / "mer"), "cache", "rm", "--dataset", "iemocap", "--yes"], env=env, capture_output=True)
        cmd = [str(BIN / "mer"), "extract", "--dataset", "iemocap", "--features", a.features, "--quiet"]
        if a.workers is not None:
            cmd += ["--workers", str(a.workers)]
        if a.device:
            cmd += ["--device", a.device]
        la0 = os.getloadavg()[0]
        t_mer, m_mer, c_mer, _ = run_measured(cmd, env)
        if a.no_loop:   # mer alone: its figures, the loop's columns empty
            print(json.dumps({"utterances": len(df), "audio_min": round(hours * 60, 1), "mer_s": round(t_mer, 1),
                              "mer_cpu_s": round(c_mer, 1), "mer_peak_MiB": round(m_mer / 2**20), "warm_up": warm,
                              "features": a.features, "device": a.device or "auto"}), flush=True)
            if not warm:
                rows.append({"utterances": len(df), "audio_min": round(hours * 60, 1), "mer_s": round(t_mer, 1),
                             "mer_cpu_s": round(c_mer, 1), "mer_peak_MiB": round(m_mer / 2**20),
                             "utterances_per_s": round(len(df) / t_mer, 1), "features": a.features,
                             "device": a.device or "auto", "load_before": round(la0, 2)})
            continue
        t_loop, m_loop, c_loop, _ = run_measured([sys.executable, __file__, "--loop", str(mpath), str(out / f"loop-{pc}.pkl")])
        if warm:
            print(f"warm-up on {len(df)} utterances: mer {t_mer:.1f} s, loop {t_loop:.1f} s (not reported)", flush=True)
            continue
        rows.append({"utterances": len(df), "audio_min": round(hours * 60, 1), "mer_s": round(t_mer, 1), "loop_s": round(t_loop, 1),
                     "speedup": round(t_loop / t_mer, 2), "mer_cpu_s": round(c_mer, 1), "loop_cpu_s": round(c_loop, 1),
                     "cpu_ratio": round(c_loop / c_mer, 2), "mer_peak_MiB": round(m_mer / 2**20), "loop_peak_MiB": round(m_loop / 2**20),
                     "load_before": round(la0, 2), "load_after": round(os.getloadavg()[0], 2)})
        print(json.dumps(rows[-1]), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    if a.no_loop:
        return
    print("\n| utterances | audio (min) | mer wall (s) | loop wall (s) | speed-up (wall) | mer CPU (s) | loop CPU (s) | CPU ratio | mer peak PSS (MiB) | loop peak PSS (MiB) | load avg before/after |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['utterances']} | {r['audio_min']} | {r['mer_s']} | {r['loop_s']} | {r['speedup']}x | {r['mer_cpu_s']} | {r['loop_cpu_s']} | "
              f"{r['cpu_ratio']}x | {r['mer_peak_MiB']} | {r['loop_peak_MiB']} | {r['load_before']} / {r['load_after']} |")
    if len(rows) > 1:
        a0, a1 = rows[0], rows[-1]
        print(f"\nmer peak memory: {a0['mer_peak_MiB']} MiB at {a0['utterances']} utterances, {a1['mer_peak_MiB']} MiB at "
              f"{a1['utterances']} ({a1['utterances'] / a0['utterances']:.1f}x the corpus): {a1['mer_peak_MiB'] / a0['mer_peak_MiB']:.2f}x")
        print(f"loop peak memory: {a0['loop_peak_MiB']} MiB -> {a1['loop_peak_MiB']} MiB: {a1['loop_peak_MiB'] / a0['loop_peak_MiB']:.2f}x")
        print("speed-up (loop wall / mer wall): " + ", ".join(f"{r['speedup']}x at {r['utterances']}" for r in rows))


if __name__ == "__main__":
    main()
