"""The extraction driver: manifest -> jobs -> batches -> parts -> stores.

How a run goes (each step in its own module):

1. Each requested feature gets its cache key (``mer.extract.cache``: manifest content,
   extractor name, config and identity, dtype, and the row limits such as ``max_seconds``).
   A complete store under that key is reused as it is: nothing is computed.
2. For the others the driver takes each store's lock (``mer.extract.lock``: two runs never
   interleave; the lock dies with its holder) and opens its staging folder
   (``mer.extract.staging``), finding the parts an earlier run left.
3. The missing batches, and the failed rows of earlier parts, become tasks run by
   ``mer.extract.runners`` (in this process, or on Dask workers); each task is
   ``mer.extract.worker.run_batch``. Each result is written as a part as it arrives.
4. A store whose rows are all valid or skipped for a property of the input is finalized:
   streamed from the parts, read back, verified and only then marked complete. A store with
   failed rows (a file missing now, an extractor exception) is left incomplete, the run exits
   with an error naming them, and the next run retries exactly those rows; with
   ``accept_failures`` it is finalized anyway, the failures recorded in the store.
"""
from __future__ import annotations

import hashlib
import math
import os
import shutil
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from mer.common import device as _device
from mer.common.errors import MerError, UsageError
from mer.extract import cache as C
from mer.extract.base import EXTRACTORS, make_config  # noqa: F401 - make_config re-exported
from mer.extract.runners import Dask, Local, Task
from mer.extract.staging import Job, collect_failures, finalize, open_staging, read_part, write_part
from mer.extract.worker import manifest_rows, merge_retry

# Utterances per task (and per resumable part). A constant, not a function of the corpus
# size, so a worker's memory does not grow with the corpus (bench/RESULTS.md shows it flat
# from 175 to 2,120 utterances). Small enough to keep two CPU workers evenly busy on a
# corpus of a few hundred utterances; bigger on a GPU, where a task is one forward pass.
DEFAULT_BATCH = 16
DEFAULT_GPU_BATCH = 64
DEFAULT_MAX_SECONDS = 600.0


def resolve_device(device: str) -> str:
    return _device.choose(device)


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
    accept_failures: bool = False,
    text_source: str | None = None,
) -> dict[str, Path]:
    """Extract ``features`` for ``dataset`` into the cache; returns feature -> store path.

    ``configs``: feature -> {field: value} overrides of each extractor's Config.
    ``text_source``: ``asr:<store or model>``: text features read the transcripts of that asr
    store instead of the corpus's text (mer.extract.asr.apply_text_source).
    ``workers``: local worker processes (default: one per core; 0 = run in this process).
    ``scheduler``: address of an existing dask.distributed scheduler (workers must see the
    audio files and the ``mer`` package). ``manifest``: an explicit manifest path.
    ``batch_size``: utterances per task and per resumable part (default: DEFAULT_BATCH on
    CPU workers, DEFAULT_GPU_BATCH for features computed on a GPU); a resumed run keeps the
    batch size its parts were cut with. ``accept_failures``: finalize stores even with rows
    that failed for a reason a rerun could fix (recorded in the store; see the module doc).
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

    if text_source and "asr" in features and len(features) > 1:
        # The transcripts must exist before text features can read them: asr first, then the rest.
        kw = dict(cache=cache, fmt=fmt, device=device, workers=workers, scheduler=scheduler, dtype=dtype,
                  batch_size=batch_size, quiet=quiet, max_seconds=max_seconds, accept_failures=accept_failures)
        done = run_extract(dataset, ["asr"], root=root, manifest=manifest, configs={k: v for k, v in configs.items() if k == "asr"}, **kw)
        done.update(run_extract(dataset, [f for f in features if f != "asr"], manifest=manifest, text_source=text_source,
                                configs={k: v for k, v in configs.items() if k != "asr"}, **kw))
        return done
    if root is not None:
        from mer.common.datasets.prepare import prepare

        m, _ = prepare(dataset, root, cache=cache, quiet=quiet)
    else:
        m = mf.load(dataset, cache, manifest=manifest)
    if text_source:
        from mer.extract.asr import apply_text_source

        m = apply_text_source(m, text_source, cache, say=lambda s: print(s, file=sys.stderr))
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
        # Which audio rows are valid depends on the length limit: it is part of the key.
        limits = {"max_seconds": float(max_seconds)} if cls.modality == "audio" else {}
        key = C.store_key(mh, name, cfg.to_dict(), ext.identity(), dtype, limits)
        path = C.store_path(dataset, name, key, fmt, cache)
        outs = {}
        for oname, o in ext.outputs().items():
            outs[oname] = {"kind": o.kind, "dim": int(o.dim), "frame_rate": o.frame_rate, "dtype": dtype if np.dtype(o.dtype).kind == "f" else o.dtype}
            if o.layers > 1:
                outs[oname]["layers"] = int(o.layers)
        jobs.append(Job(name, ext, key, path, cls.modality, mh, outs, False, limits=limits))

    def complete(j: Job) -> bool:
        """Reusable as it is: complete, every chunk's checksum right, and no accepted
        failures unless this run accepts them too (else they are retried)."""
        if not j.path.exists():
            return False
        from mer.extract.store import StoreCorrupt, open_store

        try:
            with open_store(j.path) as r:
                if not r.attrs.get("complete"):
                    return False
                if (r.attrs.get("failed") or {}).get("rows") and not accept_failures:
                    say(f"{j.feature}: {j.path.name} has {r.attrs['failed']['rows']} failed rows (accepted earlier); retrying them")
                    return False
                r.scan()  # every chunk read and checked once: reuse never hands on corrupt data
                return True
        except StoreCorrupt as e:
            raise MerError(f"{e}") from None
        except MerError:
            return False

    def reuse(j: Job) -> None:
        j.status = "reused"
        # Left over when a run died between moving its store in place and cleaning up (but the
        # parts of accepted failures stay, for a run that retries them).
        with open_store_attrs(j.path) as a:
            if not (a.get("failed") or {}).get("rows"):
                shutil.rmtree(j.staging, ignore_errors=True)

    for j in jobs:
        if complete(j):
            reuse(j)
    pending = [j for j in jobs if j.status == "pending"]
    results: dict[str, dict] = {}
    with ExitStack() as stack:
        from mer.extract.lock import StoreLock

        for j in sorted(pending, key=lambda j: str(j.path)):  # one order for all: no deadlock
            j.path.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(StoreLock(j.path, say=lambda s: say(s)))
            if complete(j):  # finished by the run we waited for
                reuse(j)
        pending = [j for j in jobs if j.status == "pending"]
        if pending:
            rows = manifest_rows(m)
            rows_hash = C.canonical([m.modality_hash("audio"), m.modality_hash("text"), n])
            rows_hash = hashlib.sha256(rows_hash.encode()).hexdigest()
            wants = [j for j in pending if j.extractor.uses_gpu or j.extractor.device_capable]
            dev = resolve_device(device) if wants and device != "cpu" else "cpu"
            for j in wants:
                j.on_gpu = dev != "cpu"
                j.extractor.device = dev
            for j in pending:
                open_staging(j, n, batch_size or (DEFAULT_GPU_BATCH if j.on_gpu else DEFAULT_BATCH), rows_hash)
                j.status = "resumed" if j.done else "computed"
                if j.retry:
                    j.status = f"retried {sum(len(v) for v in j.retry.values())} failed rows"
            _compute(pending, rows, n, dtype, max_seconds, workers, scheduler, quiet, say)
            # Stores are independent: assemble and verify them side by side (compression and
            # file I/O release the GIL), instead of one after the other at the end of the run.
            from concurrent.futures import ThreadPoolExecutor

            ids = m.df["id"].astype(str).tolist()
            files = m.df["audio"].astype(str).tolist()
            for j in pending:
                collect_failures(j, ids, files if j.modality == "audio" else ["(text)"] * n)
            ready = [j for j in pending if accept_failures or not j.failures]
            for j in ready:
                say(f"{j.feature}: writing and verifying {j.path.name}")
            with ThreadPoolExecutor(max(1, min(len(ready), os.cpu_count() or 1))) as pool:
                done = {j.feature: pool.submit(finalize, j, m, fmt, dtype, dataset) for j in ready}
            for j in ready:
                results[j.feature] = done[j.feature].result()
            for j in pending:
                if j not in ready:
                    j.status = "incomplete (failed rows)"
                    results[j.feature] = {"valid": None, "skipped": None, "failed": len(j.failures),
                                          "reasons": _counts(f"failed: {f[3]}" for f in j.failures)}
    for j in jobs:
        if j.status == "reused":
            from mer.extract.store import open_store

            with open_store(j.path) as r:
                v = int(r.valid.sum())
                failed = int((r.attrs.get("failed") or {}).get("rows") or 0)
            results[j.feature] = {"valid": v, "skipped": n - v, "failed": failed, "reasons": dict(_reasons(j.path))}
    if not quiet:
        _summary(jobs, results, n, dataset, time.time() - t_start, say)
    failed = [j for j in jobs if j.status.startswith("incomplete")]
    if failed:
        raise MerError("; ".join(_failure_line(j) for j in failed)
                       + ". These stores stay incomplete and the next run retries exactly these rows"
                       " (or pass --accept-failures to finalize them with the failures recorded)")
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
    todo = {j.feature: n - sum(min(j.batch_size, n - b * j.batch_size) for b in j.done) + sum(len(v) for v in j.retry.values())
            for j in pending}
    if not any(todo.values()):
        return
    if workers == 0 and not scheduler:
        runner = Local()
    else:
        preload = []
        for j in pending:
            for mod in (type(j.extractor).__module__, *j.extractor.preload):
                if mod not in preload:
                    preload.append(mod)
        runner = Dask(workers, scheduler, quiet, any(j.on_gpu for j in pending), tuple(preload))
    try:
        tasks = []
        for (bs, gpu), js in groups.items():
            for b in range(math.ceil(n / bs)):
                need = [j for j in js if b not in j.done]
                brows = rows[b * bs : (b + 1) * bs]
                if need:
                    specs = [j.spec(dtype) for j in need]
                    tasks.append(Task(f"{'-'.join(x.feature for x in need)}-b{b:06d}", b, need, (brows, specs, max_seconds, runner.threads), gpu))
                for j in js:  # rows that failed last time: exactly those, nothing else
                    idx = j.retry.get(b)
                    if idx:
                        args = ([brows[i] for i in idx], [j.spec(dtype)], max_seconds, runner.threads)
                        tasks.append(Task(f"{j.feature}-b{b:06d}-retry", b, [j], args, gpu, retry=list(idx)))
        with ExitStack() as bars:
            pbars = {}
            for j in pending:
                if todo[j.feature]:
                    bar = bars.enter_context(progress(n, j.feature, disable=quiet))
                    bar.update(n - todo[j.feature])
                    bar.set_postfix(skipped=0)
                    pbars[j.feature] = bar
            skipped = {j.feature: 0 for j in pending}

            def on_result(t: Task, res: dict) -> None:
                for j in t.jobs:
                    part = res[j.feature]
                    if t.retry:
                        part = merge_retry(read_part(j, t.batch), t.retry, part, j.outputs, dtype)
                    write_part(j, t.batch, part)
                    j.done.add(t.batch)
                    skipped[j.feature] += len(part["skips"])
                    bar = pbars.get(j.feature)
                    if bar is not None:
                        bar.update(len(t.retry) if t.retry else len(part["valid"]))
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
            say(f"{j.feature}: {j.status} {r['valid']}/{n} valid, {r['skipped']} skipped, {r.get('failed', 0)} failed -> {j.path}")
        return
    t = Table(title=f"mer extract: {dataset} ({n} utterances, {seconds:.1f} s)")
    for col in ("feature", "status", "valid", "skipped", "reasons", "store"):
        t.add_column(col)
    for j in jobs:
        r = results[j.feature]
        status = {"reused": "up to date (reused, nothing computed)", "resumed": f"resumed ({j.resumed_batches}/{j.n_batches} batches were done)"}.get(j.status, j.status)
        if r.get("failed"):
            status += f", {r['failed']} failed" + (" (accepted)" if not j.status.startswith("incomplete") else "")
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(r["reasons"].items())) or "-"
        t.add_row(j.feature, status, str(r["valid"] if r["valid"] is not None else "-"), str(r["skipped"] if r["skipped"] is not None else "-"), reasons, str(j.path))
    Console(stderr=True, width=200).print(t)


def _counts(xs) -> dict:
    out: dict = {}
    for x in xs:
        out[x] = out.get(x, 0) + 1
    return out


def _failure_line(j: Job) -> str:
    """``mfcc: 64 of 320 rows failed (missing audio: 64), e.g. Ses05F_x (/data/...wav): ...``"""
    by = ", ".join(f"{k}: {v}" for k, v in sorted(_counts(f[3] for f in j.failures).items()))
    _, uid, file, reason, detail = j.failures[0]
    n = sum(1 for _ in j.failures)
    return f"{j.feature}: {n} rows failed ({by}), e.g. {uid} ({file}): {reason}" + (f" - {detail}" if detail else "")


class open_store_attrs:
    """``with open_store_attrs(p) as attrs``: a store's attributes ({} if it cannot be read)."""

    def __init__(self, path):
        self.path = path

    def __enter__(self) -> dict:
        from mer.extract.store import open_store

        try:
            with open_store(self.path) as r:
                return dict(r.attrs)
        except MerError:
            return {}

    def __exit__(self, *exc):
        return False
