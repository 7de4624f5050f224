"""Benchmark: mer at MSP-Podcast's size (issue 22: ~150,000 utterances, ~230 h) vs 15,000.

Nothing here synthesizes 230 hours of audio. For each size, in this one script:

- corpus: the MSP-Podcast release layout (``Labels/labels_consensus.csv``, ``Audios/*.wav``,
  ``Transcripts/*.txt``) with one tiny real wav per utterance (20 ms), so ``mer prepare``
  runs its real scan, label checks, audio probe and hash on every row;
- prepare + validation: ``prepare`` (scan, checks, manifest and report written) and
  ``mer.common.manifest.load`` (read back, content hashes checked), in this process;
- stores: written directly (``mer.train.synthetic_features.write_store``, the store writer
  of ``mer extract``, chunk by chunk, never whole in memory) with MSP-Podcast-like lengths:
  durations drawn from a log-normal clipped to 2.75-11 s (the corpus's turn lengths; the
  total is printed), mfcc (40-d frames at 100 per second + pooled 40-d) and bert (384-d,
  one vector per token, 6-30 tokens, + mean 384-d);
- cache lookup (``find_store`` for both features) and ``mer cache ls`` (a fresh process, as
  a user runs it); store bytes per feature;
- one training epoch of a pooled fusion (``concat`` on bert.mean,mfcc.pooled) and of a
  streamed sequence fusion (``masked`` on bert.tokens,mfcc.frames), each ``mer train`` in its
  own process (official protocol: Train/Development/Test1), batches of 64 utterances
  (``--batch-size 64``; the streamed one with ``--batch-frames 0``), wall time and the peak
  PSS of its process tree (``bench_extract.run_measured``).

Calibration: a small corpus of real synthesized speech (``mer.common.synth``, iemocap
layout) is extracted for real (``mer extract -f mfcc,bert``), and its bytes per audio second
(mfcc) and per utterance (bert) are printed beside the synthetic stores', which must agree.

    python bench/bench_scale.py                       # 15,000 and 150,000 (hours; ~20 GB of disk)
    python bench/bench_scale.py --quick               # 300 and 3,000: a smoke run of every step
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import wave
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_extract import BIN, machine, run_measured  # noqa: E402

DATASET = "msp-podcast"
EMO = ["A", "S", "H", "N"]          # the emo4 scheme's letters
SPLITS = (("Train", 0.7), ("Development", 0.1), ("Test1", 0.2))
FRAME_RATE = 100                    # mfcc frames per second
MFCC_DIM, BERT_DIM = 40, 384
WAV_SAMPLES = 320                   # 20 ms at 16 kHz per file: enough for probe and hash
TRAIN = (("pooled", "concat", "bert.mean,mfcc.pooled"), ("streamed", "masked", "bert.tokens,mfcc.frames"))


def draw(n: int, seed: int):
    """Labels, speakers, splits, durations (s) and token counts of ``n`` utterances."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(EMO), n)
    dur = np.clip(rng.lognormal(np.log(5.0), 0.45, n), 2.75, 11.0)
    toks = np.clip((dur * 2.6).astype(int) + rng.integers(-2, 3, n), 6, 30)
    # speaker-independent splits: a speaker belongs to one split
    n_spk = max(10, n // 50)
    spk = rng.integers(0, n_spk, n)
    cut = np.cumsum([int(p * n_spk) for _, p in SPLITS])
    split = np.array([SPLITS[int(np.searchsorted(cut, s, side="right"))][0] if s < cut[-1] else "Train" for s in spk])
    return y, spk, split, dur, toks


def write_layout(root: Path, n: int, seed: int) -> None:
    import numpy as np

    y, spk, split, _, _ = draw(n, seed)
    (root / "Audios").mkdir(parents=True)
    (root / "Transcripts").mkdir()
    (root / "Labels").mkdir()
    pcm = (np.random.default_rng(seed).normal(0, 300, WAV_SAMPLES)).astype("<i2").tobytes()
    lines = ["FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set"]
    for i in range(n):
        name = f"MSP-PODCAST_{i // 100:04d}_{i % 100:04d}"
        with wave.open(str(root / "Audios" / f"{name}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(pcm[:-4] + i.to_bytes(4, "little"))   # distinct content (and hash) per file
        (root / "Transcripts" / f"{name}.txt").write_text("well I think that is fine\n")
        a = 2.0 + 3.0 * (y[i] in (0, 2))
        lines.append(f"{name}.wav,{EMO[y[i]]},{a:.1f},{4.0:.1f},{3.5:.1f},{spk[i]},{'Female' if spk[i] % 2 else 'Male'},{split[i]}")
    (root / "Labels" / "labels_consensus.csv").write_text("\n".join(lines) + "\n")


def write_stores_scaled(m, cache: Path, seed: int) -> dict:
    """mfcc and bert stores for manifest ``m``, chunk by chunk; a learnable signal (the class
    shifts both features' means) so the epoch trains on something."""
    import numpy as np

    from mer.train.synthetic_features import write_store

    n = len(m.df)
    order = m.df["id"].astype(str).to_numpy()
    idx = np.array([int(u.rsplit("_", 2)[1]) * 100 + int(u.rsplit("_", 1)[1]) for u in order])
    y, _, _, dur, toks = draw(n, seed)
    y, dur, toks = y[idx], dur[idx], toks[idx]
    frames = np.maximum(1, (dur * FRAME_RATE).astype(np.int64))
    step = 2048
    info = {"hours": float(dur.sum() / 3600), "frames": int(frames.sum()), "tokens": int(toks.sum())}

    def chunks(lengths, dim, seq, pooled, k):
        g = np.random.default_rng(seed + k)
        centres = g.normal(size=(len(EMO), dim)).astype(np.float32)
        for a in range(0, n, step):
            ln = lengths[a : a + step]
            c = np.repeat(centres[y[a : a + step]], ln, axis=0)
            vals = (c + g.standard_normal(c.shape, dtype=np.float32)).astype(np.float32)
            offs = np.concatenate([[0], np.cumsum(ln)])
            mean = np.add.reduceat(vals, offs[:-1], axis=0) / ln[:, None]
            yield np.ones(len(ln), bool), {pooled: mean.astype(np.float32), seq: (vals, ln)}

    t0 = time.perf_counter()
    for feat, mod, lens, dim, seq, pooled, k in (("mfcc", "audio", frames, MFCC_DIM, "frames", "pooled", 1),
                                                 ("bert", "text", toks, BERT_DIM, "tokens", "mean", 2)):
        outs = {pooled: {"kind": "fixed", "dim": dim},
                seq: {"kind": "ragged", "dim": dim, "frame_rate": FRAME_RATE if feat == "mfcc" else None}}
        write_store(m, feat, mod, outs, {seq: int(lens.sum())}, chunks(lens, dim, seq, pooled, k), cache,
                    f"scale{seed}")
    info["write_s"] = time.perf_counter() - t0
    return info


def timed(fn, *a, **k):
    t0 = time.perf_counter()
    r = fn(*a, **k)
    return r, time.perf_counter() - t0


def one_size(n: int, out: Path, epochs: int, seed: int = 0) -> dict:
    from mer.common import manifest as mf
    from mer.common.datasets.prepare import prepare
    from mer.extract import cache as C

    root, cache = out / f"corpus-{n}", out / f"cache-{n}"
    for p in (root, cache):
        shutil.rmtree(p, ignore_errors=True)
    r: dict = {"n": n}
    _, r["layout_s"] = timed(write_layout, root, n, seed)
    (m, rep), r["prepare_s"] = timed(prepare, DATASET, root, cache=cache, quiet=True)
    r["kept"] = len(m.df)
    m, r["load_s"] = timed(mf.load, DATASET, cache)
    r.update(write_stores_scaled(m, cache, seed))
    t0 = time.perf_counter()
    for f in ("mfcc", "bert"):
        C.find_store(DATASET, f, cache, m)
    r["lookup_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run([str(BIN / "mer"), "cache", "ls", "--cache", str(cache)], check=True, capture_output=True)
    r["cache_ls_s"] = time.perf_counter() - t0
    r["bytes"] = {s["feature"]: s["bytes"] for s in C.list_stores(DATASET, cache)}
    shutil.rmtree(root)   # the tiny wavs are prepare's input only
    for label, fusion, feats in TRAIN:
        runs = out / f"runs-{fusion}-{n}"
        shutil.rmtree(runs, ignore_errors=True)
        cmd = [str(BIN / "mer"), "train", "-d", DATASET, "-f", feats, "--fusion", fusion, "--scheme", "emo4",
               "--protocol", "official", "--epochs", str(epochs), "--patience", str(epochs + 1),
               "--cache", str(cache), "--out", str(runs), "--no-plots", "-q", "--batch-size", "64"]
        if label == "streamed":
            # batches of 64 utterances: the default 4096-frame budget cuts MSP-Podcast's ~5 s
            # turns (500 mfcc frames) to ~7-row batches, 9x the optimizer steps (measured at
            # 3,000 utterances), which measures torch's per-step cost, not mer's data path
            cmd += ["--batch-frames", "0"]
        wall, pss, cpu, log = run_measured(cmd)
        runs_made = list(runs.iterdir()) if runs.exists() else []
        if not runs_made:
            raise SystemExit(f"mer train failed:\n{log[-3000:]}")
        hist = json.loads((runs_made[0] / "history.json").read_text())
        rows = sum(e.get("train_rows", 0) for f in hist for e in f["epochs"])
        r[label] = {"fusion": fusion, "wall_s": wall, "cpu_s": cpu, "pss_gib": pss / 2**30, "train_rows": rows}
    return r


def calibrate(out: Path, per_class: int) -> dict:
    """A small real extraction: bytes per audio second (mfcc) and per utterance (bert)."""
    from mer.common import manifest as mf
    from mer.common.synth import generate
    from mer.extract import cache as C

    root, cache = out / "calib-corpus", out / "calib-cache"
    for p in (root, cache):
        shutil.rmtree(p, ignore_errors=True)
    generate(root, layout="iemocap", per_class=per_class, sessions=1, seed=0)
    t0 = time.perf_counter()
    subprocess.run([str(BIN / "mer"), "extract", "-d", "iemocap", "--root", str(root), "-f", "mfcc,bert",
                    "--cache", str(cache), "-q"], check=True, capture_output=True)
    secs = time.perf_counter() - t0
    m = mf.load("iemocap", cache)
    b = {s["feature"]: s["bytes"] for s in C.list_stores("iemocap", cache)}
    hours = float(m.df["duration"].sum()) / 3600
    return {"n": len(m.df), "hours": hours, "extract_s": secs,
            "mfcc_bytes_per_audio_s": b["mfcc"] / (hours * 3600), "bert_bytes_per_utt": b["bert"] / len(m.df)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[15_000, 150_000])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--calib-per-class", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="300 and 3,000 utterances, a 1-per-class calibration")
    ap.add_argument("--out", default="/tmp/mer-bench-scale")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.calib_per_class = [300, 3000], 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(machine())
    print(f"command: {' '.join(sys.argv)}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    cal = calibrate(out, args.calib_per_class)
    print(f"calibration (real extraction, {cal['n']} utterances, {cal['hours'] * 3600:.0f} s of audio): "
          f"mfcc {cal['mfcc_bytes_per_audio_s']:,.0f} B per audio second, bert {cal['bert_bytes_per_utt']:,.0f} B "
          f"per utterance, extract {cal['extract_s']:.1f} s", flush=True)
    res = []
    for n in args.sizes:
        r = one_size(n, out, args.epochs)
        res.append(r)
        print(json.dumps(r), flush=True)
    print("\n| utterances | audio h | prepare s | manifest load s | find_store s | `mer cache ls` s | mfcc store | "
          "bert store | mfcc B/audio s | bert B/utt | pooled epoch s / peak GiB | streamed epoch s / peak GiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in res:
        h = r["hours"]
        print(f"| {r['n']:,} | {h:.1f} | {r['prepare_s']:.1f} | {r['load_s']:.2f} | {r['lookup_s']:.2f} | "
              f"{r['cache_ls_s']:.1f} | {r['bytes']['mfcc'] / 2**30:.2f} GiB | {r['bytes']['bert'] / 2**30:.2f} GiB | "
              f"{r['bytes']['mfcc'] / (h * 3600):,.0f} | {r['bytes']['bert'] / r['kept']:,.0f} | "
              f"{r['pooled']['wall_s']:.1f} / {r['pooled']['pss_gib']:.2f} | "
              f"{r['streamed']['wall_s']:.1f} / {r['streamed']['pss_gib']:.2f} |")
    if len(res) >= 2:
        a, b = res[0], res[-1]
        k = b["n"] / a["n"]
        print(f"\n{b['n']:,} vs {a['n']:,} ({k:.0f}x the data): prepare {b['prepare_s'] / a['prepare_s']:.1f}x, "
              f"find_store {b['lookup_s'] / a['lookup_s']:.1f}x, cache ls {b['cache_ls_s'] / a['cache_ls_s']:.1f}x; "
              + "; ".join(f"{lab} epoch time {b[lab]['wall_s'] / a[lab]['wall_s']:.1f}x, peak memory "
                          f"{b[lab]['pss_gib'] / a[lab]['pss_gib']:.2f}x" for lab, _, _ in TRAIN)
              + " (targets: time no faster than the data, memory nearly flat)")


if __name__ == "__main__":
    main()
