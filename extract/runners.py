"""Where batches run: in this process, or on Dask workers (a local cluster or yours).

A runner takes ``Task``s (``mer.extract.work``: a batch of rows and the specs of the features
to compute on them) and hands each result to ``on_result`` as it arrives, with a bounded number in flight so
memory does not grow with the corpus. ``Dask`` also isolates crashes: a batch whose worker
process died is split into one task per utterance, run one at a time, so the one utterance
that kills workers is skipped as "worker crashed" and its neighbours are kept.
"""
from __future__ import annotations

import logging
import os
import sys
import uuid

import numpy as np

from mer.common.errors import MerError
from mer.extract.work import Task
from mer.extract.worker import pack, run_batch

def importing_main_in_child() -> bool:
    """True while multiprocessing (spawn/forkserver) re-imports the main script in a child."""
    f = sys._getframe(1)
    spawn = os.path.join("multiprocessing", "spawn.py")
    while f is not None:
        if f.f_code.co_name in ("_fixup_main_from_path", "_fixup_main_from_name") and f.f_code.co_filename.endswith(spawn):
            return True
        f = f.f_back
    return False


def choose_runner(n_tasks: int, workers: int | None, scheduler: str | None, quiet: bool, need_gpu: bool,
                  preload: tuple[str, ...] = ()) -> "Local | Dask":
    """Dask when asked for (``scheduler``, ``workers`` >= 1) or when parallel workers finish
    sooner; else this process. Starting a local cluster costs about 1.5 s (issue 17's
    profile), which one task or one core cannot win back: then the work runs here, unless the
    user set ``workers`` (a crash-isolating worker process is then what they asked for)."""
    if scheduler:
        return Dask(workers, scheduler, quiet, need_gpu, preload)
    if workers == 0 or (workers is None and (n_tasks <= 1 or (os.cpu_count() or 1) == 1)):
        return Local()
    return Dask(workers, scheduler, quiet, need_gpu, preload)


class Local:
    """Runs tasks in this process (``workers=0``, or work one process finishes sooner): no
    cluster, for debugging and small jobs."""

    n_workers = 1
    threads = None

    def __init__(self):
        self.gpu_resources = False

    def run(self, tasks, on_result, max_in_flight):
        for t in tasks:
            on_result(t, run_batch(t.rows, t.specs, t.max_seconds, t.threads))

    def close(self):
        pass


class Dask:
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

                    get_mp_context().set_forkserver_preload(["distributed", "mer.extract.worker", *preload])
                # Worker processes inherit an ignored SIGINT (signal dispositions survive fork
                # and exec): Ctrl-C reaches only this process, which closes the cluster, instead
                # of every worker printing its own KeyboardInterrupt traceback (about 70 lines).
                import signal

                old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
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
                finally:
                    signal.signal(signal.SIGINT, old_int)
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
        suspects: list[Task] = []  # one-utterance pieces of batches whose worker died
        futs = {}
        ac = as_completed()
        split: dict[int, dict] = {}  # id(parent task) -> one result slot per utterance

        def submit(t, alone=False):
            t.alone = alone
            kw = {"resources": {"GPU": 1}} if (t.gpu and self.gpu_resources) else {}
            # A fresh key per submission: a shared cluster may hold another run's results.
            f = self.client.submit(run_batch, t.rows, t.specs, t.max_seconds, t.threads, key=f"mer-{t.name}-{uuid.uuid4().hex[:12]}", pure=False, retries=1, **kw)
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
                on_result(t.parent, merge_results(slots))

        refill()
        while futs:
            f = next(ac)
            t = futs.pop(f.key)
            try:
                res = f.result()
            except KilledWorker as e:
                if len(t.rows) > 1:
                    split[id(t)] = [None] * len(t.rows)
                    suspects.extend(t.pieces()[::-1])  # pop() from the end: first utterance first
                    refill()
                    continue
                if not t.alone:  # maybe a bystander of another task's crash: try it alone
                    suspects.append(t)
                    refill()
                    continue
                why = f"{t.rows[0]['id']} killed the worker process ({str(e)[:160]})"
                res = {sp.feature: pack(1, {}, [(0, "worker crashed", why)], sp.outputs, sp.dtype) for sp in t.specs}
            except Exception as e:
                raise MerError(f"batch {t.name} failed on a worker: {type(e).__name__}: {e} (finished batches are kept; run again to resume)") from None
            f.release()
            done(t, res)
            refill()

    def close(self):
        import sys

        if isinstance(sys.exc_info()[1], KeyboardInterrupt):
            # closing under Ctrl-C: the cluster's shutdown chatter (cancelled tasks, closed
            # comms) would bury the one line `mer` prints; the batches done are on disk
            for name in ("distributed", "tornado", "asyncio"):
                logging.getLogger(name).setLevel(logging.CRITICAL)
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()


def merge_results(pieces: list[dict]) -> dict:
    """Join the per-utterance results of a split batch into one batch result."""
    out = {}
    for feat in pieces[0]:
        parts = [p[feat] for p in pieces]
        m = {"valid": np.concatenate([p["valid"] for p in parts]),
             "skips": [(k + i, r, d) for k, p in enumerate(parts) for i, r, d in p["skips"]],
             "failures": [(k + i, r, d) for k, p in enumerate(parts) for i, r, d in p.get("failures", [])],
             "events": [e for p in parts for e in p.get("events", [])]}
        for key in parts[0]:
            if key not in ("valid", "skips", "failures", "events"):
                m[key] = np.concatenate([p[key] for p in parts])
        out[feat] = m
    return out


