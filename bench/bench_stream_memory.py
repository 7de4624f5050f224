"""Benchmark: does training memory stay flat when the corpus grows? (issue 10's 2,000 vs 8,000)

Frame sequences are streamed from the store's chunks (mer.train.streaming), so a training
process should hold, per utterance, only ids, labels, offsets and pooled vectors. This script
writes feature stores directly (no audio: synthesizing and extracting 8,000 utterances takes
longer than the training it measures) with IEMOCAP-like lengths (durations drawn as
``mer.common.synth.writers.iemocap_length``, 1-15 s, 100 frames/s, 40-d MFCC-like frames and 8-24
token vectors of 384 dims), through the same store writer as ``mer extract``, then runs
``mer train`` on each size in its own process and reports wall time, training utterances per
second, and the peak PSS of the process tree. The figure to read is the ratio of the peaks:
the issue's target is at most 1.3x for 4x the utterances.

    python bench/bench_stream_memory.py --sizes 2000 8000 --fusions masked weighted --epochs 1 --protocol si
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_extract import BIN, machine, run_measured  # noqa: E402


def write_corpus(cache: Path, n: int, seed: int = 0) -> dict:
    """Stores for ``n`` utterances: mfcc (frames 40-d + pooled) and bert (tokens 384-d + mean)."""
    import numpy as np

    from mer.train.data import FeatureSet
    from mer.train.synthetic_features import synthetic, write_stores

    man, small = synthetic(n, seed=seed, text_dim=384, audio_dim=40, noise=0.8)
    rng = np.random.default_rng(seed + 1)
    sets = {}
    for feat, lens in (("mfcc", np.clip(rng.lognormal(1.3, 0.6, n), 1.0, 15.0) * 100),
                       ("bert", rng.integers(8, 25, n))):
        fs = small[feat]
        fixed_name = next(iter(fs.fixed))
        seq_name = next(iter(fs.ragged))
        lengths = np.asarray(lens, np.int64)
        offs = np.zeros(n + 1, np.int64)
        np.cumsum(lengths, out=offs[1:])
        pooled = fs.fixed[fixed_name]
        vals = np.repeat(pooled, lengths, axis=0)
        vals += rng.normal(scale=0.8, size=vals.shape).astype(np.float32)
        sets[feat] = FeatureSet(feat, fs.modality, fs.ids, fs.outputs, {fixed_name: pooled}, {seq_name: (vals, offs)},
                                key=fs.key + "-long")
        del vals
    t0 = time.perf_counter()
    write_stores(man, sets, cache)
    frames = int(sum(np.diff(s.ragged[next(iter(s.ragged))][1]).sum() for s in sets.values()))
    return {"write_s": round(time.perf_counter() - t0, 1), "frames": frames}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000])
    ap.add_argument("--fusions", nargs="+", default=["masked", "weighted"])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--protocol", default="si")
    ap.add_argument("--out", default="/tmp/mer-bench-stream")
    args = ap.parse_args()
    out = Path(args.out)
    print(machine())
    print(f"command: {' '.join(sys.argv)}")
    rows = []
    for n in args.sizes:
        cache = out / f"cache-{n}"
        if not (cache / ".written").exists():
            # in a child process: this one must stay small, because a process started from
            # it inherits its peak RSS across fork + exec (ru_maxrss), which history.json reports
            import subprocess

            code = (f"import sys, json; sys.path.insert(0, {str(HERE)!r}); from bench_stream_memory import write_corpus; "
                    f"from pathlib import Path; print(json.dumps(write_corpus(Path({str(cache)!r}), {n})))")
            info = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                             text=True).stdout.strip().splitlines()[-1])
            (cache / ".written").write_text(json.dumps(info))
        info = json.loads((cache / ".written").read_text())
        print(f"\n{n} utterances: {info['frames']:,} frames+tokens in the stores", flush=True)
        for fusion in args.fusions:
            runs = out / f"runs-{fusion}-{n}"
            cmd = [str(BIN / "mer"), "train", "-d", "iemocap", "-f", "bert.tokens,mfcc.frames", "--fusion", fusion,
                   "--protocol", args.protocol, "--epochs", str(args.epochs), "--patience", str(args.epochs + 1),
                   "--cache", str(cache), "--out", str(runs), "--no-plots", "-q"]
            wall, pss, cpu, log = run_measured(cmd)
            run = max(runs.iterdir(), key=lambda p: p.stat().st_mtime)
            hist = json.loads((run / "history.json").read_text())
            utts = sum(e.get("train_rows", 0) for f in hist for e in f["epochs"])
            ua = json.loads((run / "metrics.json").read_text())["mean"].get("ua")
            fold_rss = [max(e["peak_rss_mb"] for e in f["epochs"]) for f in hist]
            rows.append((n, fusion, wall, utts / wall, pss / 2**30, ua, fold_rss))
            print(f"{n:>6} {fusion:>12}: {wall:7.1f} s, {utts / wall:6.1f} training utt/s ({utts / max(cpu, 1e-9):.1f} per CPU s), "
                  f"peak tree PSS {pss / 2**30:.2f} GiB, ua {ua:.3f}, per-fold peak RSS MB {fold_rss}", flush=True)
    print("\n| utterances | fusion | wall s | training utt/s | peak tree PSS GiB | UA |")
    print("|---:|---|---:|---:|---:|---:|")
    for n, f, w, u, p, ua, _ in rows:
        print(f"| {n} | {f} | {w:.1f} | {u:.1f} | {p:.2f} | {ua:.3f} |")
    by = {(n, f): p for n, f, _, _, p, _, _ in rows}
    lo, hi = min(args.sizes), max(args.sizes)
    for f in args.fusions:
        if (lo, f) in by and (hi, f) in by:
            print(f"{f}: peak at {hi} / peak at {lo} = {by[(hi, f)] / by[(lo, f)]:.2f}x (target <= 1.3x)")


if __name__ == "__main__":
    main()
