"""One trainer for every fusion model: folds x seeds, early stopping, evaluation, run dirs.

``run_train`` loads each feature store once (``FeatureCache``), aligns the requested inputs
to the labelled utterances, and for every (feature set, fusion) trains one model per fold
and seed. Early stopping watches the fold's validation split (carved from training
material by ``mer.train.protocols``); the test split is used once, after training.
Fusion hooks from ``mer.train.fusion`` (``loss``, ``predict_proba``, ``sweep``) are used
when a model defines them.
"""
from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from mer.common.device import choose as pick_device
from mer.common.errors import MerError, UsageError
from mer.common.report import Report
from mer.train.data import (
    Batcher,
    FeatureCache,
    FeatureSet,
    Normalizer,
    TrainData,
    build_data,
    parse_features,
    resolve_inputs,
)
# Built by name from the fusion registry (re-exported: callers import them from here too).
from mer.train.fusion import build_model, check_context, fusion_wants, model_config  # noqa: F401


@dataclass
class TrainConfig:
    epochs: int = 60
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adamw"      # a name in OPTIMIZERS
    weight_decay: float = 1e-4    # AdamW: decoupled decay; Adam/SGD: an L2 term in the gradient (the papers' "L2")
    patience: int = 10            # epochs without validation improvement before stopping
    monitor: str = "auto"         # "ua" | "accuracy" | "weighted_f1" | "macro_f1" | "ccc" | "loss"; auto: ua (classification), ccc (regression)
    valid_fraction: float = 0.1   # carved from training rows when the protocol has no validation split
    balanced: bool = False        # class-weighted cross-entropy (weights from the training rows)
    max_len: int | None = None    # cap on frames/tokens per ragged input (None: no cap); the first max_len are kept
    bucket: bool = True           # batch rows of similar length together (mer.train.data.Batcher)
    batch_frames: int = 4096      # with bucket: at most this many padded frames per batch (0: no cap)
    grad_clip: float = 5.0        # max global gradient norm; 0 = no clipping
    context: str = "none"         # "none": utterances on their own; "dialog": batches of whole dialogues (mer.train.dialog)
    device: str = "auto"
    # How the cores are used (``parallel_plan``). jobs: worker processes over folds and seeds;
    # threads: torch threads per process. 0 = auto: models over frame/token sequences get one
    # process with every core as a thread (their large tensors parallelise inside an op, 1.4-1.8x
    # on 2 cores, at one process's memory); pooled-vector models get one process per core with
    # one thread each (their steps are too small for threads). Results equal --jobs 1 at the same
    # --threads.
    threads: int = 0
    jobs: int = 0
    # Mixed precision (torch.autocast): "fp32" (off), "bf16" (CPU or CUDA), "fp16" (CUDA only,
    # with a gradient scaler). Masked batch statistics and the loss stay in float32.
    precision: str = "fp32"
    # Which store of a feature to use when several configurations were extracted:
    # {feature: {config field: value}}, e.g. {"bert": {"layer": "all"}} (--store bert.layer=all).
    stores: dict = field(default_factory=dict)
    # Text from ASR transcripts instead of the corpus's: "asr:<asr store path or model>".
    text_source: str | None = None
    # "fold": z-scoring with training-row statistics only (always done); "speaker": before it,
    # each speaker's audio standardised with that speaker's own utterances, test ones included,
    # labels unused (mer.train.speakernorm).
    normalize: str = "fold"


# Optimizers by name (--optimizer choices come from here). Adam's weight_decay adds an L2
# penalty to the gradient, as seeds 002 and 004 describe; AdamW decays weights directly.
OPTIMIZERS = {
    "adamw": lambda params, lr, wd: __import__("torch").optim.AdamW(params, lr=lr, weight_decay=wd),
    "adam": lambda params, lr, wd: __import__("torch").optim.Adam(params, lr=lr, weight_decay=wd),
    "sgd": lambda params, lr, wd: __import__("torch").optim.SGD(params, lr=lr, weight_decay=wd, momentum=0.9),
}


def make_optimizer(name: str, params, lr: float, weight_decay: float):
    if name not in OPTIMIZERS:
        raise UsageError(f"--optimizer {name}: unknown; choose from {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](params, lr, weight_decay)


def config_fields(cls) -> list[str]:
    Config = getattr(cls, "Config", None)
    return [f.name for f in fields(Config)] if Config is not None else []


def check_options(fusion_classes: dict, options: dict | None) -> None:
    """``--set`` keys must name a config field of at least one fusion of the command (a key
    may apply to some of several fusions trained together, never to none)."""
    known = {n: config_fields(c) for n, c in fusion_classes.items()}
    valid = sorted({k for ks in known.values() for k in ks})
    bad = [k for k in (options or {}) if k not in valid]
    if bad:
        per = "; ".join(f"{n}: {', '.join(ks) or '(none)'}" for n, ks in known.items())
        raise UsageError(f"--set {', '.join(bad)}: no such config field (valid for {per})")


def parse_list(v, what: str) -> list[str]:
    items = [x.strip() for x in (v.split(",") if isinstance(v, str) else v) if str(x).strip()]
    if not items:
        raise UsageError(f"{what}: nothing named")
    return items


@dataclass
class FoldResult:
    seed: int
    fold: str
    metrics: dict
    rows: np.ndarray            # test rows into the data
    proba: np.ndarray           # [n, C] probabilities, or [n] regression predictions
    history: list[dict]
    state: dict                 # model state_dict (cpu tensors) of the best epoch
    norm: Normalizer
    best_epoch: int
    sweeps: list = field(default_factory=list)
    seconds: float = 0.0


def check_balanced(cls, fname: str, tc: TrainConfig, regression: bool) -> None:
    """``--balanced`` applies to every classification model: the default loss takes class
    weights, and a model with its own ``loss`` must accept ``class_counts``; else refuse."""
    import inspect

    if not tc.balanced:
        return
    if regression:
        raise UsageError("--balanced weights classes; this is a regression scheme (drop --balanced)")
    own = getattr(cls, "loss", None)
    if own is not None and "class_counts" not in inspect.signature(own).parameters:
        raise UsageError(f"--balanced: fusion {fname} has its own loss, which takes no class weights (drop --balanced)")


def _default_loss(model, data: TrainData, train_rows, tc: TrainConfig, device):
    import functools

    import torch
    from torch import nn

    from mer.train.layers import balanced_weights

    counts = np.bincount(data.y[train_rows], minlength=len(data.classes)) if not data.regression else None
    if hasattr(model, "loss"):
        return functools.partial(model.loss, class_counts=counts) if tc.balanced else model.loss
    if data.regression:
        return lambda logits, y: nn.functional.mse_loss(logits.squeeze(-1), y.float())
    weight = None
    if tc.balanced:
        weight = torch.tensor(balanced_weights(counts), dtype=torch.float32, device=device)
    return lambda logits, y: nn.functional.cross_entropy(logits, y, weight=weight)


def _proba(model, logits):
    import torch

    if hasattr(model, "predict_proba"):
        return model.predict_proba(logits)
    return torch.softmax(logits, -1)


def evaluate(model, batcher: Batcher, rows, loss_fn, regression: bool, batch_size: int = 64, precision: str = "fp32"):
    """(mean loss, outputs, logits) on ``rows`` (outputs in the order of ``rows``); outputs are
    probabilities or predictions. Batches of ``batch_size`` rows grouped by length: one batch
    of a whole split held every padded feature map at once (6 GB for 30 validation rows of
    the mel CNN; bench/RESULTS.md)."""
    import torch

    rows = np.asarray(rows, np.int64)
    pos = {int(r): i for i, r in enumerate(rows)}
    model.eval()
    outs, logit_list, where, total, n = [], [], [], 0.0, 0
    with torch.no_grad():
        for r, b, y in batcher.iterate(rows, batch_size):
            with autocast(precision, batcher.device):
                logits = model(b).float()
            total += float(loss_fn(logits, y)) * len(r)
            n += len(r)
            logit_list.append(logits.detach())
            outs.append((logits.squeeze(-1) if regression else _proba(model, logits)).detach().cpu().numpy())
            where.append([pos[int(i)] for i in r])
    back = np.argsort(np.concatenate(where)) if where else np.zeros(0, np.int64)
    order = torch.from_numpy(back).to(logit_list[0].device) if logit_list else None
    return total / max(n, 1), np.concatenate(outs)[back], torch.cat(logit_list)[order]


def _peak_rss_mb() -> float:
    import resource
    import sys

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024   # bytes on macOS, KiB elsewhere


def _score(metrics: dict, loss: float, monitor: str):
    # Larger is better; the validation loss breaks ties between equal accuracies. An
    # undefined metric (CCC of a constant prediction, early in training) ranks lowest: as
    # NaN it would compare false with everything, and the first epoch would stay "best".
    if monitor == "loss":
        return (-loss,)
    v = metrics[monitor]
    return (v if np.isfinite(v) else -np.inf, -loss)


def calibrate_on_validation(model, batcher: Batcher, fold, data: TrainData, loss_fn) -> dict:
    """Models with a ``calibrate(logits, y)`` hook (hierarchical ``threshold=auto``) fit
    their decision settings on the fold's validation rows, never the test rows; what they
    chose goes into the fold's metrics."""
    if not hasattr(model, "calibrate"):
        return {}
    import torch

    _, _, v_logits = evaluate(model, batcher, fold.valid, loss_fn, data.regression)
    return model.calibrate(v_logits, torch.from_numpy(data.y[fold.valid]).to(v_logits.device)) or {}


PRECISIONS = ("fp32", "bf16", "fp16")


def autocast(precision: str, device: str):
    """The autocast context of ``--precision`` on ``device`` (a no-op for fp32)."""
    import contextlib

    import torch

    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision}: choose from {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    kind = "cuda" if str(device).startswith("cuda") else "cpu"
    if precision == "fp16" and kind != "cuda":
        raise UsageError("--precision fp16 needs a CUDA device (fp16 matrix products are slow or missing on CPUs); use bf16")
    return torch.autocast(kind, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def train_fold(cls, cfg, data: TrainData, fold, seed: int, tc: TrainConfig, device: str) -> FoldResult:
    import torch

    from mer.train.metrics import classification_metrics, regression_metrics

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    norm = Normalizer.fit(data, fold.train)
    batcher = Batcher(data, norm, device, tc.max_len, tc.bucket, tc.batch_frames)
    if tc.context == "dialog":   # batches of whole dialogues; batch_size counts dialogues
        from mer.train.dialog import DialogBatcher

        batcher = DialogBatcher(batcher, data.meta)
    # regression: one output per target (classes holds a multi-target scheme's target names)
    n_out = max(1, len(data.classes)) if data.regression else len(data.classes)
    model = build_model(cls, data.specs, n_out, cfg, None if data.regression else data.classes,
                        tc.context, regression=data.regression).to(device)
    opt = make_optimizer(tc.optimizer, [p for p in model.parameters() if p.requires_grad], tc.lr, tc.weight_decay)
    loss_fn = _default_loss(model, data, fold.train, tc, device)
    # CCC is what dimensional-emotion work reports, so regression stops on it by default.
    monitor = tc.monitor if tc.monitor != "auto" else ("ccc" if data.regression else "ua")
    if monitor != "loss" and (monitor == "ccc") != bool(data.regression):
        raise UsageError(f"--monitor {monitor}: not a metric of this {'regression' if data.regression else 'classification'} scheme")
    amp = lambda: autocast(tc.precision, device)  # noqa: E731
    # fp16 gradients underflow without loss scaling; bf16 has float32's range and needs none
    scaler = torch.amp.GradScaler("cuda") if tc.precision == "fp16" else None

    def metrics_of(out, rows):
        y = data.y[rows]
        if data.regression:
            return regression_metrics(y, out, data.classes or None)
        return classification_metrics(y, out.argmax(1), data.classes)

    history, best, best_state, best_epoch = [], None, None, -1
    for epoch in range(tc.epochs):
        model.train()
        tot, correct, n = 0.0, 0, 0
        for r, b, y in batcher.iterate(fold.train, tc.batch_size, shuffle=True, rng=rng):
            if len(r) < 2 and n > 0:
                continue  # a last batch of one row breaks batch norm; it is shuffled anew next epoch
            with amp():
                logits = model(b).float()
            loss = loss_fn(logits, y)
            if not torch.isfinite(loss):
                raise MerError(f"{cls.__name__}: training loss became {float(loss)} in epoch {epoch + 1} (fold {fold.name}); lower --lr")
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)   # clip the true gradients
            else:
                loss.backward()
            if tc.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            tot += loss.item() * len(r)
            n += len(r)
            if not data.regression:
                with torch.no_grad():  # through predict_proba: some models pack several heads into logits
                    correct += int((_proba(model, logits).argmax(-1) == y).sum())
        v_loss, v_out, _ = evaluate(model, batcher, fold.valid, loss_fn, data.regression, tc.batch_size, tc.precision)
        vm = metrics_of(v_out, fold.valid)
        # rows trained on and this process's peak RSS so far: the benchmark's throughput, and
        # memory that stays flat across epochs and folds (bench/bench_train_seq.py)
        h = {"epoch": epoch + 1, "train_loss": tot / max(n, 1), "valid_loss": v_loss, "train_rows": n,
             "peak_rss_mb": round(_peak_rss_mb(), 1)}
        if data.regression:
            h.update(valid_mae=vm["mae"], valid_ccc=vm["ccc"])
        else:
            h.update(train_accuracy=correct / max(n, 1), valid_accuracy=vm["accuracy"], valid_ua=vm["ua"])
        history.append(h)
        score = _score(vm, v_loss, monitor)
        if best is None or score > best:
            best, best_epoch = score, epoch + 1
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch + 1 - best_epoch >= tc.patience:
            break
    model.load_state_dict(best_state)
    chosen = calibrate_on_validation(model, batcher, fold, data, loss_fn)
    t_loss, t_out, t_logits = evaluate(model, batcher, fold.test, loss_fn, data.regression, tc.batch_size, tc.precision)
    m = metrics_of(t_out, fold.test)
    m.update(test_loss=t_loss, best_epoch=best_epoch, epochs_run=len(history), **chosen)
    sweeps = []
    if hasattr(model, "sweep"):
        import torch as _t

        sweeps = model.sweep(t_logits, _t.from_numpy(data.y[fold.test]).to(t_logits.device))
    # after calibrate: the state carries what it chose (e.g. hierarchical's threshold)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    return FoldResult(seed, fold.name, m, np.asarray(fold.test), t_out, history, state, norm, best_epoch,
                      sweeps, time.perf_counter() - t0)


# ----------------------------------------------------------------------------- parallel folds
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


# ----------------------------------------------------------------------------- the command
def load_labels(dataset: str, scheme_name: str | None, cache=None, manifest=None):
    """(manifest, scheme, labels, classes) for a dataset (manifest: path, Manifest or None)."""
    from mer.common import manifest as mf
    from mer.common.schemes import scheme

    man = manifest if isinstance(manifest, mf.Manifest) else mf.load(dataset, cache, manifest)
    sch = scheme(dataset, scheme_name)
    labels, classes = sch.apply(man.df)
    return man, sch, labels, classes


def run_train(dataset: str, features, fusions, protocol: str | None = None, scheme: str | None = None,
              seeds=(0,), cache=None, out=None, epochs: int | None = None, device: str = "auto",
              manifest=None, feature_sets: dict[str, FeatureSet] | None = None, options: dict | None = None,
              config: TrainConfig | None = None, run_id: str | None = None, command: str | None = None,
              plots: bool = True, quiet: bool = False, recipe: dict | None = None,
              store_configs: dict[str, dict] | None = None) -> list[Path]:
    """Train every (feature set, fusion) pair; returns the run directories written.

    ``features``: one comma list (``"bert,mfcc"``) or a list of them (several feature
    sets); ``fusions``: comma list or list of registered names; ``options``: fusion config
    overrides by field name (``{"hidden": "128"}``); ``feature_sets``: in-memory stores by
    feature name (tests, benchmarks), used instead of the cache.
    """
    if run_id is not None:
        from mer.common.paths import check_name

        check_name(run_id, "--run-id")  # a name inside --out, never a path out of it
    tc = copy.deepcopy(config) if config is not None else TrainConfig()
    if epochs is not None:
        tc.epochs = int(epochs)
    tc.device = device or tc.device
    dev = pick_device(tc.device)
    return _run_train(dataset, features, fusions, protocol, scheme, seeds, cache, out, manifest, feature_sets,
                      options, tc, dev, run_id, command, plots, quiet, recipe, store_configs)


def _run_train(dataset, features, fusions, protocol, scheme, seeds, cache, out, manifest, feature_sets, options, tc, dev,
               run_id, command, plots, quiet, recipe=None, store_configs=None) -> list[Path]:
    from mer.common.progress import progress
    from mer.train.fusion import FUSIONS
    from mer.train.protocols import make_folds, protocol_spec
    from mer.train.rundir import write_run

    feature_lists = [features] if isinstance(features, str) else list(features)
    requests = [parse_features(f) for f in feature_lists]
    fusion_names = parse_list(fusions, "--fusion")
    classes_of = {n: FUSIONS.get(n) for n in fusion_names}  # unknown names fail before any work
    check_options(classes_of, options)
    if tc.optimizer not in OPTIMIZERS:
        raise UsageError(f"--optimizer {tc.optimizer}: unknown; choose from {', '.join(OPTIMIZERS)}")
    autocast(tc.precision, dev)   # an unknown or impossible --precision fails before any work
    seeds = [int(s) for s in (parse_list(seeds, "--seeds") if isinstance(seeds, str) else seeds)]
    n_runs = len(requests) * len(fusion_names)
    if run_id and n_runs > 1:
        raise UsageError("--run-id names one run; this command trains several (drop --run-id)")

    if tc.normalize not in ("fold", "speaker"):
        raise UsageError(f"--normalize {tc.normalize!r}: fold or speaker")
    man, sch, labels, classes = load_labels(dataset, scheme, cache, manifest)
    if tc.text_source:  # same rows, transcripts (and their word times) from an asr store
        from mer.extract.asr import apply_text_source

        man = apply_text_source(man, tc.text_source, cache, say=(lambda s: None) if quiet else
                                (lambda s: print(s, file=sys.stderr)))
    for n, c in classes_of.items():
        check_balanced(c, n, tc, sch.is_regression)
        check_context(c, n, tc.context)
    _check_modalities(man, requests, feature_sets)
    # find_store checks each store against this manifest's modality hashes.
    where = {f: {**(store_configs or {}).get(f, {}), **(tc.stores or {}).get(f, {})}
             for f in set(store_configs or {}) | set(tc.stores or {})}   # a recipe's stores, then --store
    fcache = FeatureCache(dataset, cache, man, sets=feature_sets, where=where)
    out_root = Path(out) if out else Path("runs")
    written: list[Path] = []
    data_cache: dict[tuple, tuple[TrainData, Report]] = {}
    skipped: list[str] = []
    for reqs in requests:
        for fname in fusion_names:
            cls = classes_of[fname]
            cfg = model_config(cls, options)
            sources = resolve_inputs(reqs, fcache, fusion_wants(cls, tc.context))
            why = _unbuildable(cls, cfg, sources, n_classes=max(1, len(classes)) if sch.is_regression else len(classes),
                               classes=None if sch.is_regression else classes, context=tc.context,
                               regression=sch.is_regression)
            absent = [man.lacks(m) for m in ("audio", "text") if man.lacks(m)]
            if why is not None and absent:
                why += f"; {absent[0]}, so {fname} cannot run on it"
            if why is not None:
                # One pair of a grid (attention on text alone, say) must not stop the others.
                if n_runs == 1:
                    raise MerError(why)
                note = f"skipped {fname} [{','.join(r.text for r in reqs)}]: {why}"
                skipped.append(note)
                if not quiet:
                    print(f"note: {note}", file=sys.stderr)
                continue
            dkey = tuple(sources)
            if dkey not in data_cache:  # fusions that want the same inputs share the aligned arrays
                rep = Report(f"training data: {dataset}, scheme {sch.name}, features {','.join(r.text for r in reqs)}")
                for raw, n in sch.unlabelled(man.df, labels).items():  # e.g. MELD emo6: the fear rows
                    rep.counts[f"without a label under the scheme: {sch.source} {raw}"] = n
                data_cache[dkey] = (build_data(man.df, labels, classes, sources, fcache, sch.is_regression, rep), rep)
            data, rep = data_cache[dkey]
            if tc.normalize == "speaker":
                skey = (dkey, "speaker")
                if skey not in data_cache:
                    from mer.train.speakernorm import speaker_normalized

                    normed, info = speaker_normalized(data)
                    rep.counts["speakers normalised separately (--normalize speaker)"] = info["speakers"]
                    if info["without_speaker"]:
                        rep.counts["utterances without a speaker id, not speaker-normalised"] = info["without_speaker"]
                    data_cache[skey] = (normed, rep)
                data = data_cache[skey][0]
                dkey = skey
            if getattr(cls, "aligns_audio_to_tokens", False):
                # masked: audio pooled per token from word times where the manifest has them
                akey = (dkey, "audio_to_tokens")
                if akey not in data_cache:
                    from mer.train.wordalign import word_aligned

                    data_cache[akey] = (word_aligned(data, fcache), rep)
                data = data_cache[akey][0]
            rep = copy.deepcopy(rep)
            spec = protocol_spec(dataset, protocol, data.meta)
            strat = None if data.regression else data.y
            results: list[FoldResult] = []
            t0 = time.perf_counter()
            fold_sets = {s: make_folds(spec, data.meta, strat, s, rep, tc.valid_fraction) for s in seeds}
            total = sum(len(v) for v in fold_sets.values())
            label = f"{fname} [{'+'.join(s.key for s in sources)}]"
            tasks = [(s, fold) for s in seeds for fold in fold_sets[s]]
            with progress(total, f"train {label}", unit="fold", disable=quiet) as bar:
                for r in fold_results(cls, cfg, data, tasks, tc, dev):
                    results.append(r)
                    bar.set_postfix_str(_postfix(results[-1], data.regression))
                    bar.update(1)
            seconds = time.perf_counter() - t0
            run_dir = write_run(
                out_root, run_id, dataset=dataset, manifest=man, scheme=sch, protocol=spec, seeds=seeds,
                fusion=fname, model_cfg=cfg, train_cfg=tc, requests=reqs, sources=sources, fcache=fcache,
                data=data, results=results, report=rep, seconds=seconds, command=command, plots=plots,
                recipe=recipe,
            )
            written.append(run_dir)
            if not quiet:
                import json

                written_metrics = json.loads((run_dir / "metrics.json").read_text())
                mean = written_metrics["mean"]
                shown = ", ".join(f"{k} {v:.4f}" for k, v in mean.items() if isinstance(v, float))
                print(f"{run_dir}: {shown}")
                if "paper_fold" in written_metrics:  # e.g. si: seed 003's test-female fold beside the mean
                    pf = written_metrics["paper_fold"]
                    print(f"  paper's fold {pf['fold']}: " + ", ".join(f"{k} {v:.4f}" for k, v in pf["mean"].items() if isinstance(v, float)))
    if skipped:
        if not written:
            raise MerError(f"none of the {n_runs} (feature set, fusion) pairs can be built: " + "; ".join(skipped))
        if not quiet:
            print(f"{len(written)} of {n_runs} runs written; {len(skipped)} skipped:", file=sys.stderr)
            for n in skipped:
                print(f"  {n}", file=sys.stderr)
    return written


def _check_modalities(man, requests, feature_sets) -> None:
    """Refuse, before any work, a feature of a modality the corpus does not have (bert on a
    path,label CSV): its store cannot exist, and "no store" would not say why."""
    from mer.extract.base import EXTRACTORS

    known = set(EXTRACTORS.names())
    for reqs in requests:
        for r in reqs:
            if feature_sets and r.feature in feature_sets:
                mod = feature_sets[r.feature].modality
            elif r.feature in known:
                mod = EXTRACTORS.get(r.feature).modality
            else:
                continue  # not a registered extractor: find_store will say what is missing
            why = man.lacks(mod)
            if why:
                raise UsageError(f"--features {r.text}: {r.feature} is a {mod} feature, and {why}")


def _unbuildable(cls, cfg, sources, n_classes: int, classes, context: str = "none", regression: bool = False) -> str | None:
    """Why a fusion cannot be built on these inputs (its own check, e.g. "needs at least 1 audio
    feature"), or None. Builds the model once on the input specs, which costs milliseconds."""
    from mer.train.data import input_specs

    try:
        build_model(cls, input_specs(sources), n_classes, cfg, classes, context, regression=regression)
    except MerError as e:
        return str(e)
    return None


def _postfix(r: FoldResult, regression: bool) -> str:
    m = r.metrics
    return f"{r.fold}: mae {m['mae']:.3f} ccc {m['ccc']:.3f}" if regression else f"{r.fold}: ua {m['ua']:.3f} wa {m['accuracy']:.3f}"
