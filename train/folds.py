"""One fold of one seed: train with early stopping on the fold's validation split, then
evaluate once on its test split (``train_fold``), and the evaluation helpers around it.

The fold loop reads top to bottom: ``train_fold`` sets up (``_Fold``), runs ``_epoch`` until
the validation score stops improving, and finishes (``_finish``)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from mer.common.errors import MerError, UsageError
from mer.train.callbacks import epoch_end
from mer.train.config import PRECISIONS, TrainConfig, make_optimizer
from mer.train.data import Batcher, Normalizer, TrainData
from mer.train.fusion import build_model


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



@dataclass
class _Fold:
    """What one fold trains with (built once by ``_setup``)."""

    model: "object"
    batcher: "object"
    opt: "object"
    loss_fn: "object"
    norm: Normalizer
    monitor: str
    scaler: "object"
    rng: np.random.Generator
    sched: "object" = None      # learning-rate schedule stepped per optimizer step (or None)
    pending: int = 0            # batches whose gradients are summed, not yet stepped (--accumulate)


def _setup(cls, cfg, data: TrainData, fold, seed: int, tc: TrainConfig, device: str) -> _Fold:
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    norm = Normalizer.fit(data, fold.train)
    batcher = Batcher(data, norm, device, tc.max_len, tc.bucket, tc.batch_frames)
    if tc.context == "dialog":   # batches of whole dialogues, about batch_size utterances each
        from mer.train.dialog import DialogBatcher

        batcher = DialogBatcher(batcher, data.meta)
    # regression: one output per target (classes holds a multi-target scheme's target names)
    n_out = max(1, len(data.classes)) if data.regression else len(data.classes)
    from mer.train.finetune import attach, param_groups, schedule

    model = build_model(cls, data.specs, n_out, cfg, None if data.regression else data.classes,
                        tc.context, regression=data.regression)
    model = attach(model, data.specs, tc).to(device)   # --finetune: encoders in front of their inputs
    if tc.grad_checkpointing:
        for enc in getattr(model, "encoder", {}).values():
            enc.model.gradient_checkpointing_enable()
    # One group per learning rate (--lr, --encoder-lr); without encoders, the one group
    # holds exactly the parameters the optimizer always had.
    opt = make_optimizer(tc.optimizer, param_groups(model, tc), tc.lr, tc.weight_decay)
    sched = schedule(opt, tc, lambda: _batches_per_epoch(batcher, fold.train, tc.batch_size))
    loss_fn = _default_loss(model, data, fold.train, tc, device)
    # CCC is what dimensional-emotion work reports, so regression stops on it by default.
    monitor = tc.monitor if tc.monitor != "auto" else ("ccc" if data.regression else "ua")
    if monitor != "loss" and (monitor == "ccc") != bool(data.regression):
        raise UsageError(f"--monitor {monitor}: not a metric of this {'regression' if data.regression else 'classification'} scheme")
    # fp16 gradients underflow without loss scaling; bf16 has float32's range and needs none
    scaler = torch.amp.GradScaler("cuda") if tc.precision == "fp16" else None
    return _Fold(model, batcher, opt, loss_fn, norm, monitor, scaler, rng, sched)


def _batches_per_epoch(batcher, rows, batch_size: int) -> int:
    """Batches in one training pass (what a learning-rate schedule counts steps with)."""
    return len(batcher.order(rows, batch_size, False, None))


def _metrics_of(data: TrainData, out, rows) -> dict:
    from mer.train.metrics import classification_metrics, regression_metrics

    y = data.y[rows]
    if data.regression:
        return regression_metrics(y, out, data.classes or None)
    return classification_metrics(y, out.argmax(1), data.classes)


def _backward(f: _Fold, loss, tc: TrainConfig) -> None:
    """Add ``loss``'s gradients (scaled for fp16; divided by --accumulate so a step sees the
    mean over its batches); step once ``tc.accumulate`` batches are in."""
    if f.pending == 0:
        f.opt.zero_grad(set_to_none=True)
    if tc.accumulate > 1:
        loss = loss / tc.accumulate
    if f.scaler is not None:
        f.scaler.scale(loss).backward()
    else:
        loss.backward()
    f.pending += 1
    if f.pending >= tc.accumulate:
        _step(f, tc)


def _step(f: _Fold, tc: TrainConfig) -> None:
    """One optimizer step on the gradients summed so far (unscaled for fp16, clipped)."""
    import torch

    if f.scaler is not None:
        f.scaler.unscale_(f.opt)   # clip the true gradients
    if tc.grad_clip:
        torch.nn.utils.clip_grad_norm_(f.model.parameters(), tc.grad_clip)
    if f.scaler is not None:
        f.scaler.step(f.opt)
        f.scaler.update()
    else:
        f.opt.step()
    if f.sched is not None:
        f.sched.step()
    f.pending = 0


def _epoch(f: _Fold, cls, data: TrainData, fold, epoch: int, tc: TrainConfig, device: str) -> dict:
    """One pass over the training rows, then the validation figures: the epoch's history row."""
    import torch

    f.model.train()
    if tc.unfreeze_after:   # --unfreeze-after K: the head trains alone for the first K epochs
        f.model.hold_encoders(epoch < tc.unfreeze_after)
    tot, correct, n, batches = 0.0, 0, 0, 0
    for r, b, y in f.batcher.iterate(fold.train, tc.batch_size, shuffle=True, rng=f.rng):
        if len(r) < 2 and n > 0:
            continue  # a last batch of one row breaks batch norm; it is shuffled anew next epoch
        with autocast(tc.precision, device):
            logits = f.model(b).float()
        loss = f.loss_fn(logits, y)
        if not torch.isfinite(loss):
            raise MerError(f"{cls.__name__}: training loss became {float(loss)} in epoch {epoch + 1} (fold {fold.name}); lower --lr")
        _backward(f, loss, tc)
        tot += loss.item() * len(r)
        n += len(r)
        batches += 1
        if not data.regression:
            with torch.no_grad():  # through predict_proba: some models pack several heads into logits
                correct += int((_proba(f.model, logits).argmax(-1) == y).sum())
    if f.pending:   # the epoch's last, partial accumulation
        _step(f, tc)
    v_loss, v_out, _ = evaluate(f.model, f.batcher, fold.valid, f.loss_fn, data.regression, tc.batch_size, tc.precision)
    vm = _metrics_of(data, v_out, fold.valid)
    # rows trained on and this process's peak RSS so far: the benchmark's throughput, and
    # memory that stays flat across epochs and folds (bench/bench_train_seq.py)
    # effective_batch: utterances per optimizer step, after the frame budget shrank batches of
    # long utterances and --accumulate summed several (what a paper's "batch size" means)
    h = {"epoch": epoch + 1, "train_loss": tot / max(n, 1), "valid_loss": v_loss, "train_rows": n,
         "effective_batch": round(n / max(1, batches) * tc.accumulate, 2), "peak_rss_mb": round(_peak_rss_mb(), 1)}
    if data.regression:
        h.update(valid_mae=vm["mae"], valid_ccc=vm["ccc"])
    else:
        h.update(train_accuracy=correct / max(n, 1), valid_accuracy=vm["accuracy"], valid_ua=vm["ua"])
    h["_score"] = _score(vm, v_loss, f.monitor)
    return h


def train_fold(cls, cfg, data: TrainData, fold, seed: int, tc: TrainConfig, device: str) -> FoldResult:
    """Train with early stopping on ``fold.valid``; the best epoch's model is evaluated on
    ``fold.test``."""
    # --batch-size 0: resolved here, from this fold's training rows (recorded per epoch as effective_batch)
    tc = replace(tc, batch_size=tc.batch_for(len(fold.train)))
    if hasattr(cls, "fit_fold"):   # classical baselines fit in one call, no epochs (mer.train.models_sklearn)
        return cls.fit_fold(cfg, data, fold, seed, tc, device)
    t0 = time.perf_counter()
    f = _setup(cls, cfg, data, fold, seed, tc, device)
    history, best, best_state, best_epoch = [], None, None, -1
    for epoch in range(tc.epochs):
        h = _epoch(f, cls, data, fold, epoch, tc, device)
        score = h.pop("_score")
        history.append(h)
        epoch_end(seed, fold.name, h)   # mer tune's pruner sees every epoch (mer.train.callbacks)
        if best is None or score > best:
            best, best_epoch = score, epoch + 1
            best_state = {k: v.detach().clone() for k, v in f.model.state_dict().items()}
        elif epoch + 1 - max(best_epoch, tc.unfreeze_after) >= tc.patience:
            break   # patience counts from the encoder's release at the earliest (--unfreeze-after)
    f.model.load_state_dict(best_state)
    return _finish(f, data, fold, seed, tc, history, best_epoch, t0)


def _finish(f: _Fold, data: TrainData, fold, seed: int, tc: TrainConfig, history: list, best_epoch: int,
            t0: float) -> FoldResult:
    """Calibrate on validation rows (models that have the hook), test once, keep the state."""
    import torch

    model = f.model
    chosen = calibrate_on_validation(model, f.batcher, fold, data, f.loss_fn)
    t_loss, t_out, t_logits = evaluate(model, f.batcher, fold.test, f.loss_fn, data.regression, tc.batch_size, tc.precision)
    m = _metrics_of(data, t_out, fold.test)
    m.update(test_loss=t_loss, best_epoch=best_epoch, epochs_run=len(history), batch_size=tc.batch_size, **chosen)
    sweeps = []
    if hasattr(model, "sweep"):
        sweeps = model.sweep(t_logits, torch.from_numpy(data.y[fold.test]).to(t_logits.device))
    # after calibrate: the state carries what it chose (e.g. hierarchical's threshold)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    return FoldResult(seed, fold.name, m, np.asarray(fold.test), t_out, history, state, f.norm, best_epoch,
                      sweeps, time.perf_counter() - t0)
