"""``mer extract --dry-run``: what a run would cost, before it computes anything.

Per feature: the rows still to compute (none for a complete store; a resumed run's finished
batches are subtracted), the estimated size of the store and the estimated time on this
machine. Both come from a short timed sample: ``sample`` rows spread over the manifest go
through the worker's own path (``mer.extract.worker.run_batch``: decode, extractor, output
checks), in this process. One batch of one row first (it pays the extractor's ``setup()``:
model loading), then the sample; the sample's seconds and output bytes per unit are scaled
to the rows to compute. A unit is a second of audio (audio features: their cost and their
frames grow with the audio) or a character of text (text features: tokens).

- disk: the output arrays' bytes (uncompressed: float features compress little; a real
  mfcc store measured 0.93 of its raw bytes), so dumping every SSL layer shows up here as
  the dozens of times the audio's size it is;
- time: setup + per-unit seconds x units / workers (the run's worker processes; each sets
  up once, in parallel), plus the start-up this process measured before its sample
  (interpreter, imports, manifest, plan: a fresh ``mer extract`` pays it too). Writing and
  verifying the store is not included: it is I/O, small next to the compute of any real
  feature. The sample runs on the CPU: a ``--device cuda`` run of a neural feature is faster.

Nothing is written: no manifest (unless ``--root`` asks for one to be prepared), no
staging folder, no store, no lock.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import numpy as np

from mer.extract import cache as C
from mer.extract.work import DEFAULT_BATCH, DEFAULT_MAX_SECONDS, Job, Options, plan_jobs

DEFAULT_SAMPLE = 16


@dataclass
class Estimate:
    feature: str
    rows: int             # rows this run would compute
    units: float          # audio seconds or text characters of those rows
    unit: str             # "audio s" | "text chars"
    bytes: float          # estimated store size
    seconds: float        # estimated wall time of the compute
    status: str           # "reused" | "to compute" | "resumed: k of n batches done"
    sample_rows: int = 0


def finished_batches(job: Job, n: int) -> tuple[int, set[int]]:
    """(batch size, batches a previous run finished) of ``job``, by a read-only look at its
    staging folder; (0, set()) when there is none for this key and manifest."""
    meta = C._read_json(job.staging / "staging.json") if job.staging.exists() else {}
    if not meta or meta.get("key") != job.key or meta.get("n") != n:
        return 0, set()
    return int(meta["batch_size"]), {int(p.stem.split("-")[1]) for p in job.staging.glob("batch-*.npz")}


def _units(rows: list[dict], modality: str, max_seconds: float) -> np.ndarray:
    if modality == "audio":
        # rows longer than --max-seconds are skipped, not computed
        return np.array([0.0 if not r.get("duration") or r["duration"] > max_seconds else r["duration"] for r in rows])
    return np.array([len(r["text"]) if isinstance(r.get("text"), str) else 0 for r in rows], float)


def _out_bytes(part: dict, outputs: dict) -> float:
    b = 0
    for name, o in outputs.items():
        if o["kind"] == "fixed":
            b += part[name][part["valid"]].nbytes
        else:
            b += part[f"{name}.values"].nbytes + part[f"{name}.lengths"].nbytes
    return float(b)


def sample_cost(job: Job, rows: list[dict], dtype: str, max_seconds: float, sample: int) -> tuple[float, float, float, int]:
    """(setup seconds, seconds per unit, bytes per unit, rows sampled) of ``job``'s feature."""
    from mer.extract.worker import run_batch

    spec = job.spec(dtype)
    units = _units(rows, job.modality, max_seconds)
    have = np.flatnonzero(units > 0)
    if len(have) == 0:
        return 0.0, 0.0, 0.0, 0
    pick = have[np.unique(np.linspace(0, len(have) - 1, min(sample, len(have))).round().astype(int))]
    first = [rows[pick[0]]]
    t0 = time.perf_counter()
    run_batch(first, [spec], max_seconds)      # the extractor's setup, and one row
    t_first = time.perf_counter() - t0
    batch = [rows[i] for i in pick]
    t0 = time.perf_counter()
    part = run_batch(batch, [spec], max_seconds)[job.feature]
    t_sample = time.perf_counter() - t0
    u = float(units[pick].sum())
    valid_u = float(units[pick][part["valid"]].sum()) or u
    per_unit = t_sample / u
    setup = max(0.0, t_first - per_unit * float(units[pick[0]]))
    return setup, per_unit, _out_bytes(part, job.outputs) / valid_u, len(pick)


@dataclass
class DryRun:
    estimates: list[Estimate]
    n: int                # manifest rows
    workers: int
    startup: float        # seconds this process took to get to the sample (interpreter, imports, manifest, plan)

    @property
    def seconds(self) -> float:
        """The whole command's estimated wall time: start-up, then every feature's compute."""
        return self.startup + sum(e.seconds for e in self.estimates)

    @property
    def bytes(self) -> float:
        return sum(e.bytes for e in self.estimates)


def process_age() -> float:
    """Seconds since this process started (Linux: /proc; elsewhere 0, and the start-up line
    then counts from the dry run's own start)."""
    try:
        start_ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
        uptime = float(open("/proc/uptime").read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def dry_run(dataset: str, features, cache=None, root=None, configs: dict | None = None, fmt: str = "zarr",
            workers: int | None = None, dtype: str = "float32", batch_size: int | None = None,
            max_seconds: float = DEFAULT_MAX_SECONDS, manifest=None, accept_failures: bool = False,
            text_source: str | None = None, sample: int = DEFAULT_SAMPLE, quiet: bool = True) -> DryRun:
    """``mer extract --dry-run``: the same checks and plan as ``run_extract``, then
    ``estimate`` instead of the compute. Prints the table (unless ``quiet``) and returns it.
    A real run pays the same start-up as this process did before its sample (a fresh
    ``mer extract``: interpreter, imports, manifest, plan); it is measured and added."""
    from mer.common import console
    from mer.extract.engine import _check_request, applicable_features, load_manifest

    features, configs = _check_request(features, configs)
    o = Options(dataset, cache, fmt, "cpu", workers, None, dtype, batch_size, max_seconds, accept_failures, True)
    m = load_manifest(dataset, root, cache, manifest, True)
    if text_source:
        from mer.extract.asr import apply_text_source

        m = apply_text_source(m, text_source, cache)
    # Planning is part of the start-up: it computes each feature's key (a model's identity
    # loads its config, importing transformers: seconds).
    jobs = plan_jobs(m, applicable_features(features, m), configs, o)
    startup = process_age()
    est = estimate(m, jobs, o, sample)
    d = DryRun(est, len(m.df), 1 if workers == 0 else (workers or os.cpu_count() or 1), startup)
    if not quiet:
        console.result(table(d))
    return d


def estimate(m, jobs: list[Job], o: Options, sample: int = DEFAULT_SAMPLE) -> list[Estimate]:
    """An Estimate per Job (``mer.extract.work.plan_jobs``) of manifest ``m`` (see the module doc)."""
    from mer.extract.summary import is_complete
    from mer.extract.worker import manifest_rows

    rows = manifest_rows(m)
    n = len(rows)
    workers = 1 if o.workers == 0 else (o.workers or os.cpu_count() or 1)
    out = []
    for j in jobs:
        unit = "audio s" if j.modality == "audio" else "text chars"
        if is_complete(j, o.accept_failures):
            out.append(Estimate(j.feature, 0, 0.0, unit, 0.0, 0.0, "reused"))
            continue
        bs, fin = finished_batches(j, n)
        todo_rows, status = rows, "to compute"
        if fin:   # a resumed run computes the rows of the unfinished batches only
            todo_rows = [r for i, r in enumerate(rows) if i // bs not in fin]
            status = f"resumed: {len(fin)} of {math.ceil(n / bs)} batches done"
        bs = bs or o.batch_size or DEFAULT_BATCH
        setup, per_unit, per_byte, k = sample_cost(j, rows, o.dtype, o.max_seconds, sample)
        units = float(_units(todo_rows, j.modality, o.max_seconds).sum())
        w = max(1, min(workers, math.ceil(len(todo_rows) / bs)))
        out.append(Estimate(j.feature, len(todo_rows), units, unit, per_byte * units,
                            setup + per_unit * units / w, status, k))
    return out


def table(d: DryRun) -> str:
    lines = [f"dry run: {d.n} manifest rows; estimates from a timed sample on this machine ({d.workers} worker(s)); "
             "nothing computed",
             f"{'feature':<12} {'rows to compute':>15} {'units':>18} {'est. disk':>11} {'est. time':>10}  state"]
    for e in d.estimates:
        lines.append(f"{e.feature:<12} {e.rows:>15,} {e.units:>12,.0f} {e.unit:<5} {C.human_bytes(int(e.bytes)):>11} "
                     f"{_dur(e.seconds):>10}  {e.status}")
    lines.append(f"{'start-up':<12} {'':>15} {'':>18} {'':>11} {_dur(d.startup):>10}  interpreter, imports, manifest, plan")
    lines.append(f"{'total':<12} {sum(e.rows for e in d.estimates):>15,} {'':>18} {C.human_bytes(int(d.bytes)):>11} "
                 f"{_dur(d.seconds):>10}")
    return "\n".join(lines)


def _dur(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"
