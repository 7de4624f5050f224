"""The work of an extraction run, in one module: what a feature is (``Spec``), where its store
stands (``Job``), and the unit a runner executes (``Task``).

- ``Spec``: what a worker needs to rebuild one feature's extractor: plain, picklable data
  (it crosses to Dask workers). ``run_batch`` takes a list of them; a dict with the same keys
  is accepted too (``Spec.of``), for callers that build one by hand.
- ``Job``: one feature of a run: its extractor, cache key, store path and staging state
  (which batches are done, which rows to retry); ``spec()`` is its Spec.
- ``Task``: one batch of manifest rows and the Specs of the Jobs that still need it. A
  runner (``mer.extract.runners``) runs ``mer.extract.worker.run_batch`` on it (in this
  process or on a worker) and hands the result back with the task, whose ``jobs`` say which
  parts to write.

``Options`` holds a run's settings; ``plan_jobs`` makes a Job per feature (its cache key and
store path); ``plan_tasks`` cuts the pending Jobs into Tasks: jobs with the same batch size and device
share tasks (one decode per utterance for all of them); rows that failed in an earlier run
become tasks of exactly those rows.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mer.common.errors import UsageError
from mer.extract import cache as C
from mer.extract.base import DEFAULT_DTYPE, DEFAULT_MAX_SECONDS, EXTRACTORS, Extractor, make_config

# Utterances per task (and per resumable part). A constant, not a function of the corpus
# size, so a worker's memory does not grow with the corpus (bench/RESULTS.md shows it flat
# from 175 to 2,120 utterances). Small enough to keep two CPU workers evenly busy on a
# corpus of a few hundred utterances; bigger on a GPU, where a task is one forward pass.
DEFAULT_BATCH = 16
DEFAULT_GPU_BATCH = 64


@dataclass
class Options:
    """The settings of one run, checked once (see ``run_extract`` for their meaning)."""

    dataset: str
    cache: object = None
    fmt: str = "zarr"
    device: str = "auto"
    workers: int | None = None
    scheduler: str | None = None
    dtype: str = DEFAULT_DTYPE
    batch_size: int | None = None
    max_seconds: float = DEFAULT_MAX_SECONDS
    accept_failures: bool = False
    quiet: bool = False
    runner: object = None           # given by the caller (else chosen per phase, see run_tasks)

    def __post_init__(self):
        from mer.extract.store import DTYPES, STORES

        if self.fmt not in STORES:
            raise UsageError(f"--format {self.fmt!r}: choose one of {', '.join(STORES.names())}")
        if self.dtype not in DTYPES:
            raise UsageError(f"--dtype {self.dtype!r}: choose {' or '.join(DTYPES)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")


@dataclass(frozen=True)
class Spec:
    """One feature as a worker rebuilds it (see the module doc)."""

    feature: str
    module: str | None
    qualname: str | None          # the class inside ``module`` (for extractors registered at run time)
    config: dict
    device: str
    dtype: str
    outputs: dict[str, dict]
    sample_rate: int | None
    modality: str
    # What the worker's loaded instance must match beyond the config (a .conf file's content,
    # a weights hash): an edited file must never reuse a stale instance.
    identity: Any = None

    @classmethod
    def of(cls, x: "Spec | dict") -> "Spec":
        """A Spec from a Spec, or from a dict with its fields (``class`` for ``qualname``)."""
        if isinstance(x, Spec):
            return x
        return cls(feature=x["feature"], module=x.get("module"), qualname=x.get("class", x.get("qualname")),
                   config=x["config"], device=x["device"], dtype=x["dtype"], outputs=x["outputs"],
                   sample_rate=x.get("sample_rate"), modality=x["modality"], identity=x.get("identity"))

    def to_dict(self) -> dict:
        return asdict(self)


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
    batch_size: int = 0             # set by open_staging (a resumed run keeps its parts' size)
    done: set = field(default_factory=set)
    n_batches: int = 0
    resumed_batches: int = 0
    limits: dict = field(default_factory=dict)     # e.g. {"max_seconds": 600.0}: in the key
    retry: dict = field(default_factory=dict)      # batch -> row indices that failed last time
    failures: list = field(default_factory=list)   # (row, id, file, reason, detail) after the run
    _identity: dict | None = None

    @property
    def staging(self) -> Path:
        return Path(str(self.path) + C.PARTIAL)

    @property
    def identity(self) -> dict:
        if self._identity is None:
            self._identity = self.extractor.identity()
        return self._identity

    def spec(self, dtype: str) -> Spec:
        e = self.extractor
        return Spec(feature=self.feature, module=type(e).__module__, qualname=type(e).__qualname__,
                    config=e.config.to_dict(), device=e.device, dtype=dtype, outputs=self.outputs,
                    sample_rate=getattr(e, "sample_rate", None), modality=self.modality, identity=self.identity)

    def rows_to_do(self, n: int) -> int:
        """Rows this run still computes: those of the batches not done, and the failed ones."""
        done = sum(min(self.batch_size, n - b * self.batch_size) for b in self.done)
        return n - done + sum(len(v) for v in self.retry.values())


@dataclass
class Task:
    """A batch of manifest rows, and the features to compute on them."""

    name: str
    batch: int
    jobs: list[Job]                  # the Jobs whose parts this task fills
    rows: list[dict]                 # manifest rows (mer.extract.worker.manifest_rows)
    specs: list[Spec]
    max_seconds: float
    threads: int | None              # torch threads per worker (None: leave as it is)
    gpu: bool
    parent: "Task | None" = None     # set on the one-utterance pieces of a split batch
    index: int = 0
    alone: bool = False              # was the only task in flight when submitted
    retry: list = field(default_factory=list)   # row indices in the batch, when re-running failed rows

    def pieces(self) -> list["Task"]:
        """One task per utterance (for a batch whose worker died), in submission order."""
        return [Task(f"{self.name}-u{k}", self.batch, self.jobs, [self.rows[k]], self.specs, self.max_seconds,
                     self.threads, self.gpu, parent=self, index=k) for k in range(len(self.rows))]


def plan_tasks(pending: list[Job], rows: list[dict], dtype: str, max_seconds: float, threads: int | None) -> list[Task]:
    """The tasks that complete ``pending``: the batches not done yet, and the rows that failed
    last time (exactly those, nothing else)."""
    n = len(rows)
    groups: dict[tuple, list[Job]] = {}
    for j in pending:
        groups.setdefault((j.batch_size, j.on_gpu), []).append(j)
    tasks = []
    for (bs, gpu), js in groups.items():
        for b in range(math.ceil(n / bs)):
            brows = rows[b * bs : (b + 1) * bs]
            need = [j for j in js if b not in j.done]
            if need:
                tasks.append(Task(f"{'-'.join(x.feature for x in need)}-b{b:06d}", b, need, brows,
                                  [j.spec(dtype) for j in need], max_seconds, threads, gpu))
            for j in js:
                idx = j.retry.get(b)
                if idx:
                    tasks.append(Task(f"{j.feature}-b{b:06d}-retry", b, [j], [brows[i] for i in idx], [j.spec(dtype)],
                                      max_seconds, threads, gpu, retry=list(idx)))
    return tasks


def plan_jobs(m, features: list[str], configs: dict, o: Options) -> list[Job]:
    """A Job per feature of manifest ``m``: its extractor, cache key, outputs and store path."""
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
