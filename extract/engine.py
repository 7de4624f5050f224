"""The extraction engine: manifest -> batches -> Dask workers -> staged parts -> stores.

How a run goes:

1. Each requested feature gets its cache key (see ``mer.extract.cache``). A complete store
   under that key is reused as it is: nothing is computed.
2. For the others the engine takes each store's lock (``mer.extract.lock``: two runs never
   interleave; the lock dies with its holder) and cuts the manifest into batches of
   ``batch_size`` consecutive rows.
3. One task per batch decodes every utterance ONCE per sample rate (mono, resampled) and runs
   every pending extractor of the run on it; bad utterances (unreadable, empty, all zeros,
   NaN/inf, longer than ``max_seconds``, or that make an extractor fail) are skipped with
   their reason instead of stopping the run. Tasks run on a Dask ``LocalCluster`` of worker
   processes (one thread each: the extractors are CPU-bound and hold the GIL), or on an
   existing ``dask.distributed`` cluster (``scheduler``); the number of tasks in flight is
   bounded, so memory does not grow with the corpus.
4. The driver writes each finished batch as a part file (``<store>.partial/batch-NNNNNN.npz``,
   written to a temporary name and renamed, so a part is either whole or absent). This is
   what makes runs resumable: after Ctrl-C, kill -9 or a crashed worker the next run finds
   the parts that exist and computes only the missing batches. The batch size is recorded
   in the staging folder, so a resumed run cuts the corpus the same way.
5. When every batch is there, the parts are streamed in row order into the store (written
   sequentially and chunk-aligned), read back in full and compared with checksums of what
   was written, checked for NaN/inf and shape/offset consistency, and only then marked
   complete and moved into place. The result is byte-for-byte the same whether or not the
   run was interrupted (parts are deterministic, assembly is sequential).
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mer.common import device as _device
from mer.common.errors import MerError, UsageError
from mer.extract import cache as C
from mer.extract.base import EXTRACTORS, Extractor, Utterance, make_config  # noqa: F401 - make_config re-exported

# Utterances per task (and per resumable part). A constant, not a function of the corpus
# size, so a worker's memory does not grow with the corpus (bench/RESULTS.md shows it flat
# from 175 to 2,120 utterances). Small enough to keep two CPU workers evenly busy on a
# corpus of a few hundred utterances; bigger on a GPU, where a task is one forward pass.
DEFAULT_BATCH = 16
DEFAULT_GPU_BATCH = 64
DEFAULT_MAX_SECONDS = 600.0
FLOAT16_MAX = 65504.0


# ------------------------------------------------------------------------------- jobs --


@dataclass
class Job:
    """One feature of a run: its extractor, key, store path and staging folder."""

    feature: str
    extractor: Extractor
    key: str
    path: Path
    modality: str
    manifest_hash: str
    outputs: dict[str, dict]
    on_gpu: bool
    status: str = "pending"          # pending | reused | computed | resumed
    batch_size: int = DEFAULT_BATCH
    done: set = field(default_factory=set)
    n_batches: int = 0
    resumed_batches: int = 0

    @property
    def staging(self) -> Path:
        return Path(str(self.path) + C.PARTIAL)

    def spec(self, dtype: str) -> dict:
        """What a worker needs to rebuild the extractor (plain, picklable data)."""
        e = self.extractor
        return {
            "feature": self.feature,
            "module": type(e).__module__,
            "class": type(e).__qualname__,
            "config": e.config.to_dict(),
            "device": e.device,
            "dtype": dtype,
            "outputs": self.outputs,
            "sample_rate": getattr(e, "sample_rate", None),
            "modality": self.modality,
        }


def resolve_device(device: str) -> str:
    return _device.choose(device)


# ---------------------------------------------------------------------- worker side --

_EXTRACTORS_LOADED: dict[str, Extractor] = {}


def _worker_extractor(spec: dict) -> Extractor:
    """One extractor instance per (name, config, device) per worker process: models and
    filterbanks are loaded once (``setup()``) and reused for every later batch."""
    k = C.canonical([spec["feature"], spec["config"], spec["device"]])
    e = _EXTRACTORS_LOADED.get(k)
    if e is None:
        if spec.get("module") and spec["feature"] not in EXTRACTORS:
            # An extractor registered outside mer (a plugin, a notebook, a test): import its
            # module; if that module registers it only at run time (the worker may have been
            # forked before), register the class found there under the same name.
            import importlib

            mod = importlib.import_module(spec["module"])
            if spec["feature"] not in EXTRACTORS and spec.get("class"):
                obj = mod
                for part in spec["class"].split("."):
                    obj = getattr(obj, part)
                EXTRACTORS.register(spec["feature"])(obj)
        cls = EXTRACTORS.get(spec["feature"])
        e = cls(make_config(cls, spec["config"]), device=spec["device"])
        e.setup()
        _EXTRACTORS_LOADED[k] = e
    return e


def _check_audio(x: np.ndarray, sr: int, max_seconds: float) -> tuple[str, str] | None:
    if x.size == 0:
        return "empty audio", "0 samples"
    if not np.all(np.isfinite(x)):
        return "NaN/inf samples", f"{int(x.size - np.isfinite(x).sum())} non-finite samples"
    if not np.any(x):
        return "silent audio", "all samples are zero"
    if x.size / sr > max_seconds:
        return "too long", f"{x.size / sr:.1f} s > max {max_seconds:g} s"
    return None


def _check_out(out: dict, outputs: dict[str, dict], dtype: str) -> tuple[str, str] | None:
    for name, o in outputs.items():
        if name not in out:
            return "extractor failed", f"no output {name!r}"
        a = np.asarray(out[name])
        want = (int(o["dim"]),) if o["kind"] == "fixed" else (None, int(o["dim"]))
        if a.ndim != len(want) or a.shape[-1] != want[-1]:
            return "extractor failed", f"{name}: shape {a.shape}, expected {want}"
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            return "NaN/inf in features", f"{name}: {int(a.size - np.isfinite(a).sum())} non-finite values"
        if o.get("dtype") == "float16" and a.dtype.kind == "f" and a.size and np.abs(a).max() > FLOAT16_MAX:
            return "out of float16 range", f"{name}: max |x| = {np.abs(a).max():.4g}; use --dtype float32"
    return None


def run_batch(rows: list[dict], specs: list[dict], max_seconds: float, threads: int | None = None) -> dict[str, dict]:
    """The task: decode each utterance once per sample rate, run every extractor of the
    batch, return one part payload per feature (arrays plus skip reasons)."""
    from mer.common.audio import AudioError
    from mer.common.audio import load as load_audio

    b = len(rows)
    decoded: dict[int, list] = {}
    for sr in sorted({s["sample_rate"] for s in specs if s["modality"] == "audio"}):
        got = []
        for r in rows:
            dur = r.get("duration")
            if dur is not None and not (isinstance(dur, float) and math.isnan(dur)) and dur > max_seconds:
                got.append(("too long", f"{dur:.1f} s > max {max_seconds:g} s (from the manifest)"))
                continue
            try:
                x = load_audio(r["audio"], sr, r.get("start"), r.get("end"))
            except AudioError as e:
                got.append((e.reason, e.detail))
                continue
            except Exception as e:  # a decoder crash on one file must not stop the run
                got.append(("unreadable audio", f"{type(e).__name__}: {str(e)[:160]}"))
                continue
            bad = _check_audio(x, sr, max_seconds)
            got.append(bad if bad else x)
        decoded[sr] = got
    result: dict[str, dict] = {}
    for spec in specs:
        ext = _worker_extractor(spec)
        torch = sys.modules.get("torch")  # only if an extractor uses it: never imported here
        if threads and torch is not None and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        utts: list[Utterance] = []
        idx: list[int] = []
        skips: list[tuple[int, str, str]] = []
        for i, r in enumerate(rows):
            if spec["modality"] == "audio":
                x = decoded[spec["sample_rate"]][i]
                if isinstance(x, tuple):
                    skips.append((i, x[0], x[1]))
                    continue
                utts.append(Utterance(r["id"], audio=x, sample_rate=spec["sample_rate"], text=r.get("text")))
            else:
                t = r.get("text")
                if t is None or (isinstance(t, float) and math.isnan(t)) or not str(t).strip():
                    skips.append((i, "empty transcript", ""))
                    continue
                utts.append(Utterance(r["id"], text=str(t)))
            idx.append(i)
        outs: dict[int, dict] = {}
        sub = ext.batch_hint or len(utts) or 1
        for s0 in range(0, len(utts), sub):
            chunk, cidx = utts[s0 : s0 + sub], idx[s0 : s0 + sub]
            try:
                res = ext.process(chunk)
                if len(res) != len(chunk):
                    raise RuntimeError(f"process() returned {len(res)} results for {len(chunk)} utterances")
                pairs = list(zip(cidx, res))
            except Exception:
                # Find the utterance(s) that break the batch; the others are kept.
                pairs = []
                for i, u in zip(cidx, chunk):
                    try:
                        pairs.append((i, ext.process([u])[0]))
                    except Exception as e:
                        skips.append((i, "extractor failed", f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"))
            for i, out in pairs:
                bad = _check_out(out, spec["outputs"], spec["dtype"])
                if bad:
                    skips.append((i, *bad))
                else:
                    outs[i] = out
        part = _pack(b, outs, skips, spec["outputs"], spec["dtype"])
        # Repairs and notes the extractor made (a truncated text, padded short audio): they
        # go into the store's report with the skips, so nothing is changed silently.
        pop = getattr(ext, "pop_events", None)
        part["events"] = [list(e) for e in pop()] if pop else []
        result[spec["feature"]] = part
    return result


def _pack(b: int, outs: dict[int, dict], skips, outputs: dict[str, dict], dtype: str) -> dict:
    valid = np.zeros(b, bool)
    valid[list(outs)] = True
    part: dict[str, Any] = {"valid": valid, "skips": sorted(skips)}
    for name, o in outputs.items():
        d = int(o["dim"])
        dt = np.dtype(o.get("dtype") or dtype)
        if o["kind"] == "fixed":
            a = np.zeros((b, d), dt)
            for i, out in outs.items():
                a[i] = out[name]
            part[name] = a
        else:
            lengths = np.zeros(b, np.int64)
            vals = []
            for i in range(b):
                if i in outs:
                    v = np.asarray(outs[i][name], dtype=dt).reshape(-1, d)
                    lengths[i] = len(v)
                    vals.append(v)
            part[f"{name}.values"] = np.concatenate(vals) if vals else np.zeros((0, d), dt)
            part[f"{name}.lengths"] = lengths
    return part


# ------------------------------------------------------------------------ staging I/O --


def _part_path(job: Job, b: int) -> Path:
    return job.staging / f"batch-{b:06d}.npz"


def _write_part(job: Job, b: int, part: dict) -> None:
    arrays = {k: v for k, v in part.items() if k not in ("skips", "events")}
    arrays["skips"] = np.array(json.dumps([list(s) for s in part["skips"]]))
    arrays["events"] = np.array(json.dumps(part.get("events", [])))
    tmp = job.staging / f".batch-{b:06d}.{os.getpid()}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, _part_path(job, b))  # atomic: a part is whole or absent


def _read_part(job: Job, b: int, what: str = "all") -> dict:
    with np.load(_part_path(job, b), allow_pickle=False) as z:
        if what == "lengths":
            return {k: z[k] for k in z.files if k.endswith(".lengths") or k == "valid"}
        return {k: z[k] for k in z.files}


def _open_staging(job: Job, n: int, batch_size: int, rows_hash: str) -> None:
    st = job.staging
    meta = C._read_json(st / "staging.json")
    if meta and (meta.get("key") != job.key or meta.get("n") != n or meta.get("rows_hash") != rows_hash):
        shutil.rmtree(st, ignore_errors=True)  # parts of something else: start over
        meta = {}
    if meta:
        job.batch_size = int(meta["batch_size"])
    else:
        st.mkdir(parents=True, exist_ok=True)
        job.batch_size = batch_size
        meta = {"key": job.key, "feature": job.feature, "n": n, "batch_size": batch_size, "rows_hash": rows_hash,
                "n_batches": math.ceil(n / batch_size), "outputs": job.outputs, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (st / "staging.json").write_text(json.dumps(meta, indent=1))
    for p in st.glob(".batch-*.tmp.npz"):  # half-written by a killed run
        p.unlink(missing_ok=True)
    job.n_batches = math.ceil(n / job.batch_size)
    job.done = {int(p.stem.split("-")[1]) for p in st.glob("batch-*.npz")}
    job.resumed_batches = len(job.done)


# --------------------------------------------------------------------------- finishing --


def _finalize(job: Job, m, fmt: str, dtype: str, dataset: str) -> dict:
    """Stream the parts into the store, verify the read-back, mark complete, move in place."""
    from mer.common.report import Report
    from mer.extract.store import StoreWriter, open_store, replace_dir_or_file, set_attrs, STORES

    n = len(m.df)
    ids = m.df["id"].astype(str).tolist()
    files = m.df["audio"].astype(str).tolist() if job.modality == "audio" else ["(text)"] * n
    totals = {name: 0 for name, o in job.outputs.items() if o["kind"] == "ragged"}
    for b in range(job.n_batches):
        p = _read_part(job, b, "lengths")
        for name in totals:
            totals[name] += int(p[f"{name}.lengths"].sum())
    tmp = job.staging / f"store{STORES.get(fmt).suffix}"
    w = StoreWriter(tmp, fmt, ids, job.outputs, dtype, totals)
    report = Report(f"mer extract --dataset {dataset} --features {job.feature}: {job.path.name}")
    file_of = dict(zip(ids, files))
    try:
        for b in range(job.n_batches):
            p = _read_part(job, b)
            base = b * job.batch_size
            for i, reason, detail in json.loads(str(p["skips"])):
                report.drop(ids[base + i], files[base + i], reason, detail)
            for kind, uid, reason, detail in json.loads(str(p["events"])) if "events" in p else []:
                getattr(report, kind)(uid, file_of.get(uid, job.feature), reason, detail)
            data = {}
            for name, o in job.outputs.items():
                data[name] = p[name] if o["kind"] == "fixed" else (p[f"{name}.values"], p[f"{name}.lengths"])
            w.add(p["valid"], data)
        e = job.extractor
        attrs = {
            "mer_store_version": 1,
            "dataset": dataset,
            "feature": job.feature,
            "key": job.key,
            "config": e.config.to_dict(),
            "identity": e.identity(),
            "versions": {**_base_versions(), **e.versions()},
            "manifest_hash": job.manifest_hash,
            "modality": job.modality,
            "outputs": {k: {kk: v[kk] for kk in ("kind", "dim", "frame_rate", "dtype", "layers") if kk in v}
                        for k, v in job.outputs.items()},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "complete": False,
            "format": fmt,
        }
        w.finish(attrs)
    except BaseException:
        w.abort()
        raise
    with open_store(tmp) as r:
        valid = int(r.valid.sum())
    report.counts = {"rows": n, "valid": valid, "skipped": n - valid}
    rep_json = Path(str(C.report_stem(job.path)) + ".json")
    rep_txt = Path(str(C.report_stem(job.path)) + ".txt")
    rep_json.write_text(json.dumps(report.to_dict(), indent=1, ensure_ascii=False))
    rep_txt.write_text(report.to_text())
    probs = C.verify_store(tmp, m, check_name=False, require_complete=False, report=rep_json)
    if probs:
        raise MerError(f"{job.path.name}: the written store failed verification, not marked complete: {'; '.join(probs)}")
    set_attrs(tmp, {"complete": True})
    replace_dir_or_file(tmp, job.path)
    shutil.rmtree(job.staging, ignore_errors=True)
    return {"valid": valid, "skipped": n - valid, "reasons": dict(report.reasons("dropped"))}


def _base_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0], "numpy": np.__version__}
    for pkg in ("mer", "zarr", "h5py", "dask", "distributed"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


# ----------------------------------------------------------------------------- driver --


def _rows(m) -> list[dict]:
    df = m.df
    cols = ["id", "audio", "start", "end", "duration", "text"]
    out = []
    for rec in df[cols].itertuples(index=False, name=None):
        d = dict(zip(cols, rec))
        for k in ("start", "end", "duration"):
            v = d[k]
            d[k] = None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
        for k in ("audio", "text", "id"):
            v = d[k]
            d[k] = None if v is None or v is __import__("pandas").NA else str(v)
        out.append(d)
    return out


class _Local:
    """Runs tasks in this process (``workers=0``): no cluster, for debugging and tiny jobs."""

    n_workers = 1
    threads = None

    def __init__(self):
        self.gpu_resources = False

    def run(self, tasks, on_result, max_in_flight):
        for t in tasks:
            on_result(t, run_batch(*t.args))

    def close(self):
        pass


class _Dask:
    def __init__(self, workers: int | None, scheduler: str | None, quiet: bool, need_gpu: bool, preload: tuple[str, ...] = ()):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            from mer.common.errors import MissingDependency

            raise MissingDependency("dask.distributed is not installed; install it with: pip install 'mer[dask]'") from None
        self.cluster = None
        if scheduler:
            try:
                self.client = Client(scheduler, timeout="30s")
            except Exception as e:
                raise MerError(f"cannot reach the Dask scheduler at {scheduler}: {type(e).__name__}: {e}") from None
            try:
                self.client.wait_for_workers(1, timeout=60)
            except Exception:
                raise MerError(f"the Dask scheduler at {scheduler} has no workers (waited 60 s)") from None
            try:  # recent distributed lists only 5 workers unless asked for all
                info = self.client.scheduler_info(n_workers=-1)
            except TypeError:
                info = self.client.scheduler_info()
            ws = info.get("workers", {})
            self.n_workers = max(1, sum(int(w.get("nthreads", 1)) for w in ws.values()))
            self.gpu_resources = any("GPU" in (w.get("resources") or {}) for w in ws.values())
            self.threads = None  # the cluster's owner decides threads
        else:
            n = workers or os.cpu_count() or 1
            import dask

            # One task per worker process: a death is that task's doing, so it is declared
            # a KilledWorker at once and split (see run), not retried on every worker.
            cfg = {
                "distributed.scheduler.allowed-failures": 0,
                # The workers' statistical profiler samples every thread's stack 100 times a
                # second for the dashboard, which mer does not start: it cost ~7% of the
                # workers' CPU here. Resource monitors once a second instead of 10 times.
                "distributed.worker.profile.enabled": False,
                "distributed.admin.system-monitor.interval": "1s",
                "distributed.worker.memory.monitor-interval": "1s",
            }
            import multiprocessing

            forkserver = "forkserver" in multiprocessing.get_all_start_methods()
            if forkserver:
                # Workers are forked from a server process that imported the extractors' heavy
                # libraries (torch, librosa, opensmile) once: each worker then starts without
                # importing them again, and shares their memory pages with its siblings.
                cfg["distributed.worker.multiprocessing-method"] = "forkserver"
            with dask.config.set(cfg):
                if forkserver:
                    from distributed.utils import get_mp_context

                    get_mp_context().set_forkserver_preload(["distributed", "mer.extract.engine", *preload])
                try:
                    self.cluster = LocalCluster(
                        n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                        silence_logs=logging.ERROR if quiet else logging.WARNING,
                        # Each worker is one process with one thread; native libraries (torch,
                        # BLAS) get a fair share of the cores instead of all of them each.
                        env={"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // n)), "MKL_NUM_THREADS": "1"},
                    )
                except Exception as e:
                    raise MerError(
                        f"the local Dask workers did not start ({type(e).__name__}: {e}). If run_extract is called "
                        f"from a script, the call must sit under `if __name__ == \"__main__\":` (each worker imports "
                        f"the script); or run in this process with workers=0 / --workers 0"
                    ) from None
            self.client = Client(self.cluster)
            self.n_workers = n
            self.threads = max(1, (os.cpu_count() or 1) // n)
            self.gpu_resources = False

    def run(self, tasks, on_result, max_in_flight):
        """Submit with a bounded number in flight; hand each result to ``on_result``.

        A batch whose worker process died (``KilledWorker``: a segfault in a decoder or a
        native library, the OOM killer) is split into one task per utterance, so the one
        utterance that kills workers is skipped as "worker crashed" and the rest are kept.
        """
        from distributed import KilledWorker, as_completed

        queue = list(tasks)[::-1]   # pop() from the end = submission order
        suspects: list[_Task] = []  # one-utterance pieces of batches whose worker died
        futs = {}
        ac = as_completed()
        split: dict[int, dict] = {}  # id(parent task) -> one result slot per utterance

        def submit(t, alone=False):
            t.alone = alone
            kw = {"resources": {"GPU": 1}} if (t.gpu and self.gpu_resources) else {}
            # A fresh key per submission: a shared cluster may hold another run's results.
            f = self.client.submit(run_batch, *t.args, key=f"mer-{t.name}-{uuid.uuid4().hex[:12]}", pure=False, retries=1, **kw)
            futs[f.key] = t
            ac.add(f)

        def refill():
            # Suspects run one at a time with nothing else in flight: a worker that dies then
            # was killed by that one utterance, never by a neighbour.
            if suspects:
                if not futs:
                    submit(suspects.pop(), alone=True)
                return
            while queue and len(futs) < max_in_flight:
                submit(queue.pop())

        def done(t, res):
            if t.parent is None:
                on_result(t, res)
                return
            slots = split[id(t.parent)]
            slots[t.index] = res
            if all(p is not None for p in slots):
                del split[id(t.parent)]
                on_result(t.parent, _merge_results(slots))

        refill()
        while futs:
            f = next(ac)
            t = futs.pop(f.key)
            try:
                res = f.result()
            except KilledWorker as e:
                rows, specs, *rest = t.args
                if len(rows) > 1:
                    split[id(t)] = [None] * len(rows)
                    suspects.extend(_Task(f"{t.name}-u{k}", t.batch, t.jobs, ([rows[k]], specs, *rest), t.gpu, parent=t, index=k)
                                    for k in range(len(rows) - 1, -1, -1))
                    refill()
                    continue
                if not t.alone:  # maybe a bystander of another task's crash: try it alone
                    suspects.append(t)
                    refill()
                    continue
                why = f"{rows[0]['id']} killed the worker process ({str(e)[:160]})"
                res = {sp["feature"]: _pack(1, {}, [(0, "worker crashed", why)], sp["outputs"], sp["dtype"]) for sp in specs}
            except Exception as e:
                raise MerError(f"batch {t.name} failed on a worker: {type(e).__name__}: {e} (finished batches are kept; run again to resume)") from None
            f.release()
            done(t, res)
            refill()

    def close(self):
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()


@dataclass
class _Task:
    name: str
    batch: int
    jobs: list[Job]
    args: tuple
    gpu: bool
    parent: "_Task | None" = None   # set on the one-utterance pieces of a split batch
    index: int = 0
    alone: bool = False              # was the only task in flight when submitted


def _merge_results(pieces: list[dict]) -> dict:
    """Join the per-utterance results of a split batch into one batch result."""
    out = {}
    for feat in pieces[0]:
        parts = [p[feat] for p in pieces]
        m = {"valid": np.concatenate([p["valid"] for p in parts]),
             "skips": [(k + i, r, d) for k, p in enumerate(parts) for i, r, d in p["skips"]],
             "events": [e for p in parts for e in p.get("events", [])]}
        for key in parts[0]:
            if key not in ("valid", "skips", "events"):
                m[key] = np.concatenate([p[key] for p in parts])
        out[feat] = m
    return out


def run_extract(
    dataset: str,
    features: list[str],
    cache=None,
    root=None,
    configs: dict[str, dict] | None = None,
    fmt: str = "zarr",
    device: str = "auto",
    workers: int | None = None,
    scheduler: str | None = None,
    dtype: str = "float32",
    batch_size: int | None = None,
    quiet: bool = False,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    manifest=None,
) -> dict[str, Path]:
    """Extract ``features`` for ``dataset`` into the cache; returns feature -> store path.

    ``configs``: feature -> {field: value} overrides of each extractor's Config.
    ``workers``: local worker processes (default: one per core; 0 = run in this process).
    ``scheduler``: address of an existing dask.distributed scheduler (workers must see the
    audio files and the ``mer`` package). ``manifest``: an explicit manifest path.
    ``batch_size``: utterances per task and per resumable part (default: DEFAULT_BATCH on
    CPU workers, DEFAULT_GPU_BATCH for features computed on a GPU); a resumed run keeps the
    batch size its parts were cut with.
    """
    from mer.common import manifest as mf
    from mer.extract.store import STORES

    if (workers != 0 or scheduler) and _importing_main_in_child():
        # We are a new worker process importing the user's script (multiprocessing runs it
        # as __mp_main__ to rebuild its functions): starting workers from here would recurse,
        # and the parent would wait for this worker forever.
        raise MerError(
            "run_extract was called while a worker process imported the calling script: put the call under "
            "`if __name__ == \"__main__\":`, or pass workers=0 to run in this process"
        )

    t_start = time.time()
    say = (lambda *a: None) if quiet else _printer()
    features = [f.strip() for f in (features.split(",") if isinstance(features, str) else features) if f.strip()]
    if not features:
        raise UsageError("no features asked for; e.g. --features mfcc,mel,egemaps")
    if len(set(features)) != len(features):
        raise UsageError(f"a feature is listed twice: {','.join(features)}")
    if fmt not in STORES:
        raise UsageError(f"--format {fmt!r}: choose one of {', '.join(STORES.names())}")
    if dtype not in ("float32", "float16"):
        raise UsageError(f"--dtype {dtype!r}: choose float32 or float16")
    if batch_size is not None and batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    configs = dict(configs or {})
    for k in configs:
        if k not in features:
            raise UsageError(f"options given for {k!r}, which is not in --features {','.join(features)}")

    if root is not None:
        from mer.common.datasets.prepare import prepare

        m, _ = prepare(dataset, root, cache=cache, quiet=quiet)
    else:
        m = mf.load(dataset, cache, manifest=manifest)
    features = applicable_features(features, m)
    n = len(m.df)
    device = _device.check(device)

    jobs: list[Job] = []
    for name in features:
        cls = EXTRACTORS.get(name)
        cfg = make_config(cls, configs.get(name))
        # The device is settled below, only if something must be computed: the key does not
        # depend on it, and finding out means importing torch (seconds).
        ext = cls(cfg, device="cpu")
        mh = m.modality_hash(cls.modality)
        key = C.store_key(mh, name, cfg.to_dict(), ext.identity(), dtype)
        path = C.store_path(dataset, name, key, fmt, cache)
        outs = {}
        for oname, o in ext.outputs().items():
            outs[oname] = {"kind": o.kind, "dim": int(o.dim), "frame_rate": o.frame_rate, "dtype": dtype if np.dtype(o.dtype).kind == "f" else o.dtype}
            if o.layers > 1:
                outs[oname]["layers"] = int(o.layers)
        jobs.append(Job(name, ext, key, path, cls.modality, mh, outs, False))

    def complete(p: Path) -> bool:
        if not p.exists():
            return False
        try:
            from mer.extract.store import open_store

            with open_store(p) as r:
                return bool(r.attrs.get("complete"))
        except MerError:
            return False

    for j in jobs:
        if complete(j.path):
            j.status = "reused"
            # Left over when a run died between moving its store in place and cleaning up.
            shutil.rmtree(j.staging, ignore_errors=True)
    pending = [j for j in jobs if j.status == "pending"]
    results: dict[str, dict] = {}
    with ExitStack() as stack:
        from mer.extract.lock import StoreLock

        for j in sorted(pending, key=lambda j: str(j.path)):  # one order for all: no deadlock
            j.path.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(StoreLock(j.path, say=lambda s: say(s)))
            if complete(j.path):  # finished by the run we waited for
                j.status = "reused"
                shutil.rmtree(j.staging, ignore_errors=True)
        pending = [j for j in jobs if j.status == "pending"]
        if pending:
            rows = _rows(m)
            rows_hash = C.canonical([m.modality_hash("audio"), m.modality_hash("text"), n])
            import hashlib

            rows_hash = hashlib.sha256(rows_hash.encode()).hexdigest()
            wants = [j for j in pending if j.extractor.uses_gpu or getattr(j.extractor, "device_capable", False)]
            dev = resolve_device(device) if wants and device != "cpu" else "cpu"
            for j in wants:
                j.on_gpu = dev != "cpu"
                j.extractor.device = dev
            for j in pending:
                _open_staging(j, n, batch_size or (DEFAULT_GPU_BATCH if j.on_gpu else DEFAULT_BATCH), rows_hash)
                j.status = "resumed" if j.done else "computed"
            _compute(pending, rows, n, dtype, max_seconds, workers, scheduler, quiet, say)
            # Stores are independent: assemble and verify them side by side (compression and
            # file I/O release the GIL), instead of one after the other at the end of the run.
            from concurrent.futures import ThreadPoolExecutor

            for j in pending:
                say(f"{j.feature}: writing and verifying {j.path.name}")
            with ThreadPoolExecutor(max(1, min(len(pending), os.cpu_count() or 1))) as pool:
                done = {j.feature: pool.submit(_finalize, j, m, fmt, dtype, dataset) for j in pending}
            for j in pending:
                results[j.feature] = done[j.feature].result()
    for j in jobs:
        if j.status == "reused":
            from mer.extract.store import open_store

            with open_store(j.path) as r:
                v = int(r.valid.sum())
            results[j.feature] = {"valid": v, "skipped": n - v, "reasons": dict(_reasons(j.path))}
    if not quiet:
        _summary(jobs, results, n, dataset, time.time() - t_start, say)
    if all(results[j.feature]["valid"] == 0 for j in jobs):
        raise MerError(f"nothing usable was extracted for {dataset}: every utterance was skipped (see the reports next to the stores)")
    return {j.feature: j.path for j in jobs}


def applicable_features(features: list[str], m) -> list[str]:
    """The features whose modality the corpus has; each one left out gets one line on stderr
    (an audio-only corpus asked for bert, say), also with --quiet, like the notes about
    default features left out. Nothing applicable is an error."""
    kept = []
    for name in features:
        why = m.lacks(EXTRACTORS.get(name).modality)
        if why is None:
            kept.append(name)
        else:
            print(f"note: skipping {name}: {why}", file=sys.stderr)
    if not kept:
        raise UsageError(f"none of --features {','.join(features)} applies: {m.lacks(EXTRACTORS.get(features[0]).modality)}")
    return kept


def _importing_main_in_child() -> bool:
    """True while multiprocessing (spawn/forkserver) re-imports the main script in a child."""
    f = sys._getframe(1)
    spawn = os.path.join("multiprocessing", "spawn.py")
    while f is not None:
        if f.f_code.co_name in ("_fixup_main_from_path", "_fixup_main_from_name") and f.f_code.co_filename.endswith(spawn):
            return True
        f = f.f_back
    return False


def _reasons(path: Path) -> dict:
    from mer.common.report import Report

    p = Path(str(C.report_stem(path)) + ".json")
    return Report.read(p).reasons("dropped") if p.exists() else {}


def _compute(pending: list[Job], rows, n, dtype, max_seconds, workers, scheduler, quiet, say) -> None:
    from mer.common.progress import progress

    # Jobs that share a batch cut (and device group) share tasks, hence decoding.
    groups: dict[tuple, list[Job]] = {}
    for j in pending:
        groups.setdefault((j.batch_size, j.on_gpu), []).append(j)
    todo = {j.feature: n - sum(min(j.batch_size, n - b * j.batch_size) for b in j.done) for j in pending}
    if not any(todo.values()):
        return
    if workers == 0 and not scheduler:
        runner = _Local()
    else:
        preload = []
        for j in pending:
            for mod in (type(j.extractor).__module__, *getattr(j.extractor, "preload", ())):
                if mod not in preload:
                    preload.append(mod)
        runner = _Dask(workers, scheduler, quiet, any(j.on_gpu for j in pending), tuple(preload))
    try:
        tasks = []
        for (bs, gpu), js in groups.items():
            for b in range(math.ceil(n / bs)):
                need = [j for j in js if b not in j.done]
                if not need:
                    continue
                brows = rows[b * bs : (b + 1) * bs]
                specs = [j.spec(dtype) for j in need]
                tasks.append(_Task(f"{'-'.join(x.feature for x in need)}-b{b:06d}", b, need, (brows, specs, max_seconds, runner.threads), gpu))
        with ExitStack() as bars:
            pbars = {}
            for j in pending:
                if todo[j.feature]:
                    bar = bars.enter_context(progress(n, j.feature, disable=quiet))
                    bar.update(n - todo[j.feature])
                    bar.set_postfix(skipped=0)
                    pbars[j.feature] = bar
            skipped = {j.feature: 0 for j in pending}

            def on_result(t: _Task, res: dict) -> None:
                for j in t.jobs:
                    part = res[j.feature]
                    _write_part(j, t.batch, part)
                    j.done.add(t.batch)
                    skipped[j.feature] += len(part["skips"])
                    bar = pbars.get(j.feature)
                    if bar is not None:
                        bar.update(len(part["valid"]))
                        bar.set_postfix(skipped=skipped[j.feature], refresh=False)

            runner.run(tasks, on_result, max_in_flight=2 * runner.n_workers + 1)
    finally:
        runner.close()
    for j in pending:
        missing = [b for b in range(j.n_batches) if b not in j.done]
        if missing:
            raise MerError(f"{j.feature}: {len(missing)} batches missing after the run (e.g. batch {missing[0]})")


def _printer():
    def say(*a):
        print(*a, file=sys.stderr, flush=True)

    return say


def _summary(jobs, results, n, dataset, seconds, say) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # rich is a core dependency; this is only belt and braces
        for j in jobs:
            r = results[j.feature]
            say(f"{j.feature}: {j.status} {r['valid']}/{n} valid, {r['skipped']} skipped -> {j.path}")
        return
    t = Table(title=f"mer extract: {dataset} ({n} utterances, {seconds:.1f} s)")
    for col in ("feature", "status", "valid", "skipped", "reasons", "store"):
        t.add_column(col)
    for j in jobs:
        r = results[j.feature]
        status = {"reused": "up to date (reused, nothing computed)", "resumed": f"resumed ({j.resumed_batches}/{j.n_batches} batches were done)"}.get(j.status, j.status)
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(r["reasons"].items())) or "-"
        t.add_row(j.feature, status, str(r["valid"]), str(r["skipped"]), reasons, str(j.path))
    Console(stderr=True, width=200).print(t)
