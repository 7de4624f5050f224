"""The extraction driver: ``run_extract``, read top to bottom as named stages.

    load_manifest -> per phase: plan_jobs -> reuse_complete -> compute_pending -> finalize_all -> report

- ``load_manifest``: the corpus's manifest (prepared from ``root`` first when given).
- ``phases``: normally one; with ``--text-source asr:...`` and ``asr`` among the features,
  asr runs first so that the text features can read its transcripts.
- ``plan_jobs`` (``mer.extract.work``): each feature's cache key (manifest content, extractor
  name, config and identity, dtype, row limits) and store path: a ``Job``.
- ``reuse_complete``: a complete store under that key is reused as it is. The others' locks
  are taken (``mer.extract.lock``: two runs never interleave).
- ``compute_pending``: each job's staging folder (``mer.extract.staging``) is opened, finding
  the parts an earlier run left; the missing batches and the failed rows of earlier parts
  become ``Task``s run by a runner (``mer.extract.runners``: this process or Dask workers,
  or the one passed in); each result is written as a part as it arrives.
- ``finalize_all`` (``mer.extract.staging``): a store whose rows are all valid or skipped for
  a property of the input is streamed from its parts, read back, verified and only then
  marked complete. A store with failed rows (a file missing now, an extractor exception)
  stays incomplete and the next run retries exactly those rows; with ``accept_failures`` it
  is finalized anyway, the failures recorded in the store.
- ``report`` (``mer.extract.summary``): the summary table, and the error naming the stores
  left incomplete.
"""
from __future__ import annotations

import hashlib
import time
from contextlib import ExitStack
from pathlib import Path

from mer.common import console
from mer.common import device as _device
from mer.common.errors import MerError, UsageError
from mer.extract import cache as C
from mer.extract.base import EXTRACTORS
from mer.extract.work import DEFAULT_BATCH, DEFAULT_GPU_BATCH, DEFAULT_MAX_SECONDS, Job, Options, plan_jobs


def run_extract(dataset: str, features: list[str], cache=None, root=None, configs: dict[str, dict] | None = None,
                fmt: str = "zarr", device: str = "auto", workers: int | None = None, scheduler: str | None = None,
                dtype: str = "float32", batch_size: int | None = None, quiet: bool = False,
                max_seconds: float = DEFAULT_MAX_SECONDS, manifest=None, accept_failures: bool = False,
                text_source: str | None = None, runner=None) -> dict[str, Path]:
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
    ``runner``: where the tasks run (``mer.extract.runners``: ``Local()``, ``Dask(...)``, or
    anything with their ``run``/``n_workers``/``threads``); the caller keeps and closes it.
    Default: ``choose_runner`` picks one from ``workers``/``scheduler`` and the work.
    """
    from mer.extract.runners import importing_main_in_child

    if runner is None and (workers != 0 or scheduler) and importing_main_in_child():
        # We are a new worker process importing the user's script (multiprocessing runs it
        # as __mp_main__ to rebuild its functions): starting workers from here would recurse,
        # and the parent would wait for this worker forever.
        raise MerError(
            "run_extract was called while a worker process imported the calling script: put the call under "
            "`if __name__ == \"__main__\":`, or pass workers=0 to run in this process"
        )
    features, configs = _check_request(features, configs)
    o = Options(dataset, cache, fmt, device, workers, scheduler, dtype, batch_size, max_seconds, accept_failures, quiet, runner)
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
        if any(j.modality == "audio" for j in jobs):
            check_audio_unchanged(m)
        results: dict[str, dict] = {}
        with ExitStack() as locks:
            pending = reuse_complete(jobs, o, locks)
            if pending:
                compute_pending(m, pending, o)
                from mer.extract.staging import finalize_all

                results.update(finalize_all(m, pending, o))
        from mer.extract.summary import report, reused_result

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


def check_audio_unchanged(m) -> None:
    """Refuse audio that changed after ``mer prepare``: the manifest's audio hash (and every
    store key built on it) would describe other audio than the features computed, or a
    complete store would be reused for audio it was not computed from."""
    from mer.common.manifest import changed_audio

    bad = changed_audio(m)
    if bad:
        uid, f = bad[0]
        raise MerError(f"audio changed since `mer prepare`: {f} (utterance {uid}) no longer has the content hashed in "
                       f"the manifest ({len(bad)} such file(s)); run `mer prepare` again for this corpus")


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
    runner = o.runner
    if runner is None:
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
        if o.runner is None:  # ours: a runner passed in is the caller's to close
            runner.close()
    for j in pending:
        missing = [b for b in range(j.n_batches) if b not in j.done]
        if missing:
            raise MerError(f"{j.feature}: {len(missing)} batches missing after the run (e.g. batch {missing[0]})")
