"""The parallel pool: which (seed, fold) tasks run where, on how many processes and threads.

``fold_results`` yields ``train_fold``'s result for every task in task order, from this
process or from forked workers that inherit the aligned arrays (nothing but results is
pickled). ``parallel_plan`` decides the split from the cores and the kind of model.
"""
from __future__ import annotations

from mer.train.config import TrainConfig
from mer.train.data import TrainData
from mer.train.folds import FoldResult, train_fold

_JOB: tuple | None = None   # what forked workers train: (cls, cfg, data, tasks, tc, device)


def usable_cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parallel_plan(tc: TrainConfig, n_tasks: int, device: str, sequences: bool) -> tuple[int, int]:
    """(worker processes, torch threads per process) for ``n_tasks`` folds.

    ``--jobs``/``--threads`` when given (processes never more than the tasks; forked workers
    one thread each); else, on a CPU, sequence models (``sequences``: a ragged input) run in
    this process with every core as a thread, and pooled models in one process per core.
    Measured on 2 cores (bench/RESULTS.md): a mel-CNN fold took 10.1 s with 1 thread and
    5.7 s with 2, and two processes would hold two copies of its ~1 GB peak; an MLP step is
    slower with 2 threads than with 1. A GPU gets one process (one device, and CUDA cannot
    be used after a fork)."""
    cores = usable_cores()
    if not str(device).startswith("cpu"):
        return 1, max(1, tc.threads or 1)
    jobs = tc.jobs or (1 if sequences else cores)
    jobs = max(1, min(int(jobs), n_tasks))
    if jobs > 1:
        # Forked workers use one thread: a child forked after its parent ran OpenMP with
        # several threads hangs at its own first multi-threaded op (GNU libgomp is not
        # fork-safe), and a notebook or test session may have done so before this call.
        return jobs, 1
    return 1, int(tc.threads or (cores if sequences else 1))


def fold_results(cls, cfg, data: TrainData, tasks: list, tc: TrainConfig, device: str):
    """``train_fold`` for every (seed, fold) of ``tasks``, yielded in task order.

    With more than one job the folds run in forked worker processes: they inherit the
    aligned arrays (copy-on-write, nothing is pickled but the results), train with one
    torch thread each, and return exactly what the same fold returns in this process
    (every fold seeds its own generators; a test compares ``--jobs 2`` with ``--jobs 1``).
    Where fork is unavailable (Windows, macOS's default) folds run here.
    """
    import multiprocessing as mp

    import torch

    global _JOB
    sequences = any(a.kind == "ragged" for a in data.arrays.values())
    jobs, threads = parallel_plan(tc, len(tasks), device, sequences)
    if jobs <= 1 or "fork" not in mp.get_all_start_methods():
        prev = torch.get_num_threads()
        if str(device).startswith("cpu"):
            torch.set_num_threads(threads)
        try:
            for seed, fold in tasks:
                yield train_fold(cls, cfg, data, fold, seed, tc, device)
        finally:
            torch.set_num_threads(prev)
        return
    _JOB = (cls, cfg, data, tasks, tc, device)
    _warm_imports()
    try:
        with mp.get_context("fork").Pool(jobs, initializer=_init_worker, initargs=(threads,)) as pool:
            yield from pool.imap(_run_task, range(len(tasks)))
    finally:
        _JOB = None


def _warm_imports() -> None:
    """Import, before forking, what the first optimizer step imports lazily (torch._dynamo,
    sympy: profiled at 4 s of CPU), so workers share it instead of each paying for it."""
    import torch

    p = torch.zeros(1, requires_grad=True)
    p.grad = torch.zeros(1)
    torch.optim.AdamW([p]).step()


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(int(threads))


def _run_task(i: int) -> FoldResult:
    cls, cfg, data, tasks, tc, device = _JOB
    seed, fold = tasks[i]
    return train_fold(cls, cfg, data, fold, seed, tc, device)
