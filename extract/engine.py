"""The extraction driver: ``run_extract``, read top to bottom as named stages.

    load_manifest -> [per phase] plan_jobs -> reuse_complete -> compute_pending -> finalize_all -> report

- ``load_manifest``: the corpus's manifest (prepared from ``root`` first when given).
- phases (``phases``): normally one; with ``--text-source asr:...`` and ``asr`` among the
  features, asr runs first so that the text features can read its transcripts.
- ``plan_jobs``: each feature gets its cache key (``mer.extract.cache``: manifest content,
  extractor name, config and identity, dtype, row limits) and store path: a ``Job``
  (``mer.extract.work``).
- ``reuse_complete``: a complete store under that key is reused as it is. For the others the
  store's lock is taken (``mer.extract.lock``: two runs never interleave) and its staging
  folder opened (``mer.extract.staging``), finding the parts an earlier run left.
- ``compute_pending``: the missing batches, and the failed rows of earlier parts, become
  ``Task``s run by a runner (``mer.extract.runners``: this process, or Dask workers); each
  result is written as a part as it arrives.
- ``finalize_all``: a store whose rows are all valid or skipped for a property of the input is
  streamed from its parts, read back, verified and only then marked complete. A store with
  failed rows (a file missing now, an extractor exception) stays incomplete, the run exits
  with an error naming them, and the next run retries exactly those rows; with
  ``accept_failures`` it is finalized anyway, the failures recorded in the store.
- ``report``: the summary table (``mer.extract.summary``) and the errors.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from mer.common import console
from mer.common import device as _device
from mer.common.errors import MerError, UsageError
from mer.extract import cache as C
from mer.extract.base import EXTRACTORS, make_config  # noqa: F401 - make_config re-exported
from mer.extract.work import Job

# Utterances per task (and per resumable part). A constant, not a function of the corpus
# size, so a worker's memory does not grow with the corpus (bench/RESULTS.md shows it flat
# from 175 to 2,120 utterances). Small enough to keep two CPU workers evenly busy on a
# corpus of a few hundred utterances; bigger on a GPU, where a task is one forward pass.
DEFAULT_BATCH = 16
DEFAULT_GPU_BATCH = 64
DEFAULT_MAX_SECONDS = 600.0


@dataclass
class Options:
    """The settings of one run, checked once (see ``run_extract`` for their meaning)."""

    dataset: str
    cache: object = None
    fmt: str = "zarr"
    device: str = "auto"
    workers: int | None = None
    scheduler: str | None = None
    dtype: str = "float32"
    batch_size: int | None = None
    max_seconds: float = DEFAULT_MAX_SECONDS
    accept_failures: bool = False
    quiet: bool = False

    def __post_init__(self):
        from mer.extract.store import DTYPES, STORES

        if self.fmt not in STORES:
            raise UsageError(f"--format {self.fmt!r}: choose one of {', '.join(STORES.names())}")
        if self.dtype not in DTYPES:
            raise UsageError(f"--dtype {self.dtype!r}: choose {' or '.join(DTYPES)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")


def run_extract(dataset: str, features: list[str], cache=None, root=None, configs: dict[str, dict] | None = None,
                fmt: str = "zarr", device: str = "auto", workers: int | None = None, scheduler: str | None = None,
                dtype: str = "float32", batch_size: int | None = None, quiet: bool = False,
                max_seconds: float = DEFAULT_MAX_SECONDS, manifest=None, accept_failures: bool = False,
                text_source: str | None = None) -> dict[str, Path]:
    """Extract ``features`` for ``dataset`` into the cache; returns feature -> store path.

    ``configs``: feature -> {field: value} overrides of each extractor's Config.
    ``text_source``: ``asr:<store or model>``: text features read the transcripts of that asr
    store instead of the corpus's text (mer.extract.asr.apply_text_source).
    ``workers``: local worker processes (default: one per core, or none when one process
    finishes sooner; 0 = run in this process). ``scheduler``: address of an existing
    dask.distributed scheduler (workers must see the audio files and the ``mer`` package).
    ``manifest``: an explicit manifest path.
    ``batch_size``: utterances per task and per resumable part (default: DEFAULT_BATCH on
    CPU workers, DEFAULT_GPU_BATCH for features computed on a GPU); a resumed run keeps the
    batch size its parts were cut with. ``accept_failures``: finalize stores even with rows
    that failed for a reason a rerun could fix (recorded in the store; see the module doc).
    """
    if (workers != 0 or scheduler) and _importing_main_in_child():
        # We are a new worker process importing the user's script (multiprocessing runs it
        # as __mp_main__ to rebuild its functions): starting workers from here would recurse,
        # and the parent would wait for this worker forever.
        raise MerError(
            "run_extract was called while a worker process imported the calling script: put the call under "
            "`if __name__ == \"__main__\":`, or pass workers=0 to run in this process"
        )
    features, configs = _check_request(features, configs)
    o = Options(dataset, cache, fmt, device, workers, scheduler, dtype, batch_size, max_seconds, accept_failures, quiet)
    m = load_manifest(dataset, root, cache, manifest, quiet)
    o.device = _device.check(device)
    paths: dict[str, Path] = {}
    for feats, source in phases(features, text_source):
        paths.update(extract_phase(m, feats, {k: v for k, v in configs.items() if k in feats}, source, o))
    return paths


def _check_request(features, configs) -> tuple[list[str], dict]:
    features = [f.strip() for f in (features.split(",") if isinstance(features, str) else features) if f.strip()]
    if not features:
        raise UsageError("no features asked for; e.g. --features mfcc,mel,egemaps")
    if len(set(features)) != len(features):
        raise UsageError(f"a feature is listed twice: {','.join(features)}")
    configs = dict(configs or {})
    for k in configs:
        if k not in features:
            raise UsageError(f"options given for {k!r}, which is not in --features {','.join(features)}")
    return features, configs


def load_manifest(dataset: str, root, cache, manifest, quiet: bool):
    if root is not None:
        from mer.common.datasets.prepare import prepare

        return prepare(dataset, root, cache=cache, quiet=quiet)[0]
    from mer.common import manifest as mf

    return mf.load(dataset, cache, manifest=manifest)


def phases(features: list[str], text_source: str | None) -> list[tuple[list[str], str | None]]:
    """(features, text source) per phase: the transcripts must exist before text features can
    read them, so with a text source and ``asr`` among other features, asr comes first."""
    if text_source and "asr" in features and len(features) > 1:
        return [(["asr"], None), ([f for f in features if f != "asr"], text_source)]
    return [(features, text_source)]


def extract_phase(m, features: list[str], configs: dict, text_source: str | None, o: Options) -> dict[str, Path]:
    t_start = time.time()
    if text_source:
        from mer.extract.asr import apply_text_source

        m = apply_text_source(m, text_source, o.cache)
    features = applicable_features(features, m)
    with console.quiet(o.quiet):
        jobs = plan_jobs(m, features, configs, o)
        results: dict[str, dict] = {}
        with ExitStack() as locks:
            pending = reuse_complete(jobs, o, locks)
            if pending:
                compute_pending(m, pending, o)
                results.update(finalize_all(m, pending, o))
        from mer.extract.summary import reused_result

        results.update({j.feature: reused_result(j, len(m.df)) for j in jobs if j.status == "reused"})
        report(jobs, results, len(m.df), o, time.time() - t_start)
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
            console.info(f"note: skipping {name}: {why}")
    if not kept:
        raise UsageError(f"none of --features {','.join(features)} applies: {m.lacks(EXTRACTORS.get(features[0]).modality)}")
    return kept


def plan_jobs(m, features: list[str], configs: dict, o: Options) -> list[Job]:
    import numpy as np

    jobs = []
    for name in features:
        cls = EXTRACTORS.get(name)
        cfg = make_config(cls, configs.get(name))
        # The device is settled later, only if something must be computed: the key does not
        # depend on it, and finding out means importing torch (seconds).
        ext = cls(cfg, device="cpu")
        mh = m.modality_hash(cls.modality)
        # Which audio rows are valid depends on the length limit: it is part of the key.
        limits = {"max_seconds": float(o.max_seconds)} if cls.modality == "audio" else {}
        key = C.store_key(mh, name, cfg.to_dict(), ext.identity(), o.dtype, limits)
        outs = {}
        for oname, out in ext.outputs().items():
            outs[oname] = {"kind": out.kind, "dim": int(out.dim), "frame_rate": out.frame_rate,
                           "dtype": o.dtype if np.dtype(out.dtype).kind == "f" else out.dtype}
            if out.layers > 1:
                outs[oname]["layers"] = int(out.layers)
        path = C.store_path(o.dataset, name, key, o.fmt, o.cache)
        jobs.append(Job(name, ext, key, path, cls.modality, mh, outs, False, limits=limits))
    return jobs


def reuse_complete(jobs: list[Job], o: Options, locks: ExitStack) -> list[Job]:
    """Mark the jobs whose store is complete ``reused``; lock the others' stores (in one order
    for all runs: no deadlock) and return them, pending."""
    from mer.extract.lock import StoreLock
    from mer.extract.summary import is_complete, mark_reused

    for j in jobs:
        if is_complete(j, o.accept_failures):
            mark_reused(j)
    for j in sorted((j for j in jobs if j.status == "pending"), key=lambda j: str(j.path)):
        j.path.parent.mkdir(parents=True, exist_ok=True)
        locks.enter_context(StoreLock(j.path))
        if is_complete(j, o.accept_failures):  # finished by the run we waited for
            mark_reused(j)
    return [j for j in jobs if j.status == "pending"]


def compute_pending(m, pending: list[Job], o: Options) -> None:
    """Settle the device, open each job's staging folder, and run the tasks still to do."""
    from mer.extract.staging import open_staging
    from mer.extract.worker import manifest_rows

    n = len(m.df)
    rows_hash = hashlib.sha256(C.canonical([m.modality_hash("audio"), m.modality_hash("text"), n]).encode()).hexdigest()
    wants = [j for j in pending if j.extractor.uses_gpu or j.extractor.device_capable]
    dev = _device.choose(o.device) if wants and o.device != "cpu" else "cpu"
    for j in wants:
        j.on_gpu = dev != "cpu"
        j.extractor.device = dev
    for j in pending:
        open_staging(j, n, o.batch_size or (DEFAULT_GPU_BATCH if j.on_gpu else DEFAULT_BATCH), rows_hash)
        j.status = "resumed" if j.done else "computed"
        if j.retry:
            j.status = f"retried {sum(len(v) for v in j.retry.values())} failed rows"
    if any(j.rows_to_do(n) for j in pending):
        run_tasks(pending, manifest_rows(m), o)


def run_tasks(pending: list[Job], rows: list[dict], o: Options) -> None:
    """Each task's result written as a part as it arrives, with a progress bar per feature."""
    from mer.common.progress import progress
    from mer.extract.runners import choose_runner
    from mer.extract.staging import read_part, write_part
    from mer.extract.work import Task, plan_tasks
    from mer.extract.worker import merge_retry

    n = len(rows)
    tasks = plan_tasks(pending, rows, o.dtype, o.max_seconds, None)
    preload = tuple(dict.fromkeys(m for j in pending for m in (type(j.extractor).__module__, *j.extractor.preload)))
    runner = choose_runner(len(tasks), o.workers, o.scheduler, o.quiet, any(j.on_gpu for j in pending), preload)
    try:
        for t in tasks:
            t.threads = runner.threads
        with ExitStack() as bars:
            pbars, skipped = {}, {j.feature: 0 for j in pending}
            for j in pending:
                if j.rows_to_do(n):
                    pbars[j.feature] = bar = bars.enter_context(progress(n, j.feature, disable=o.quiet))
                    bar.update(n - j.rows_to_do(n))
                    bar.set_postfix(skipped=0)

            def on_result(t: Task, res: dict) -> None:
                for j in t.jobs:
                    part = res[j.feature]
                    if t.retry:
                        part = merge_retry(read_part(j, t.batch), t.retry, part, j.outputs, o.dtype)
                    write_part(j, t.batch, part)
                    j.done.add(t.batch)
                    skipped[j.feature] += len(part["skips"])
                    if j.feature in pbars:
                        pbars[j.feature].update(len(t.retry) if t.retry else len(part["valid"]))
                        pbars[j.feature].set_postfix(skipped=skipped[j.feature], refresh=False)

            runner.run(tasks, on_result, max_in_flight=2 * runner.n_workers + 1)
    finally:
        runner.close()
    for j in pending:
        missing = [b for b in range(j.n_batches) if b not in j.done]
        if missing:
            raise MerError(f"{j.feature}: {len(missing)} batches missing after the run (e.g. batch {missing[0]})")


def finalize_all(m, pending: list[Job], o: Options) -> dict[str, dict]:
    """Assemble and verify the stores that may be finished, side by side (compression and
    file I/O release the GIL); the others are left incomplete, their failures counted."""
    from concurrent.futures import ThreadPoolExecutor

    from mer.extract.staging import collect_failures, finalize
    from mer.extract.summary import counts

    n = len(m.df)
    ids = m.df["id"].astype(str).tolist()
    files = m.df["audio"].astype(str).tolist()
    for j in pending:
        collect_failures(j, ids, files if j.modality == "audio" else ["(text)"] * n)
    ready = [j for j in pending if o.accept_failures or not j.failures]
    for j in ready:
        console.info(f"{j.feature}: writing and verifying {j.path.name}")
    with ThreadPoolExecutor(max(1, min(len(ready), os.cpu_count() or 1))) as pool:
        done = {j.feature: pool.submit(finalize, j, m, o.fmt, o.dtype, o.dataset) for j in ready}
    results = {j.feature: done[j.feature].result() for j in ready}
    for j in pending:
        if j not in ready:
            j.status = "incomplete (failed rows)"
            results[j.feature] = {"valid": None, "skipped": None, "failed": len(j.failures),
                                  "reasons": counts(f"failed: {f[3]}" for f in j.failures)}
    return results


def report(jobs: list[Job], results: dict, n: int, o: Options, seconds: float) -> None:
    from mer.extract.summary import failure_line, summary_table

    console.info(summary_table(jobs, results, n, o.dataset, seconds))
    failed = [j for j in jobs if j.status.startswith("incomplete")]
    if failed:
        raise MerError("; ".join(failure_line(j) for j in failed)
                       + ". These stores stay incomplete and the next run retries exactly these rows"
                       " (or pass --accept-failures to finalize them with the failures recorded)")
    if all(results[j.feature]["valid"] == 0 for j in jobs):
        raise MerError(f"nothing usable was extracted for {o.dataset}: every utterance was skipped (see the reports next to the stores)")


def _importing_main_in_child() -> bool:
    """True while multiprocessing (spawn/forkserver) re-imports the main script in a child."""
    f = sys._getframe(1)
    spawn = os.path.join("multiprocessing", "spawn.py")
    while f is not None:
        if f.f_code.co_name in ("_fixup_main_from_path", "_fixup_main_from_name") and f.f_code.co_filename.endswith(spawn):
            return True
        f = f.f_back
    return False
