"""The training configuration: one dataclass, validated once, when it is made.

Every choice the CLI offers comes from the tuples here (``OPTIMIZERS``, ``MONITORS``,
``PRECISIONS``, ``NORMALIZE``) or from ``mer.train.fusion.CONTEXTS``, so an option and its
check can never disagree. Nothing heavy is imported: ``mer train --help`` reads this module.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

from mer.common.errors import UsageError
from mer.train.fusion import CONTEXTS

# Optimizers by name (--optimizer choices come from here). Adam's weight_decay adds an L2
# penalty to the gradient, as seeds 002 and 004 describe; AdamW decays weights directly.
OPTIMIZERS = {
    "adamw": lambda params, lr, wd: __import__("torch").optim.AdamW(params, lr=lr, weight_decay=wd),
    "adam": lambda params, lr, wd: __import__("torch").optim.Adam(params, lr=lr, weight_decay=wd),
    "sgd": lambda params, lr, wd: __import__("torch").optim.SGD(params, lr=lr, weight_decay=wd, momentum=0.9),
}
# Validation metrics early stopping can watch; "auto": ua (classification), ccc (regression:
# the mean over targets, what dimensional-emotion work reports).
MONITORS = ("auto", "ua", "accuracy", "weighted_f1", "macro_f1", "ccc", "loss")
# Mixed precision (torch.autocast); whether the device can do it is checked where it is known.
PRECISIONS = ("fp32", "bf16", "fp16")
# "fold": z-scoring with training-row statistics only; "speaker": each speaker first (speakernorm).
NORMALIZE = ("fold", "speaker")
# The split each fold is scored on: "test", or "valid" (mer tune's trials; test rows left out).
SCORE_ON = ("test", "valid")
# --batch-size 0 (auto): training rows / AUTO_STEPS, clipped to AUTO_BATCH (see batch_for).
AUTO_STEPS = 32
AUTO_BATCH = (8, 64)
# Learning-rate schedules after the warm-up (mer.train.finetune.schedule).
SCHEDULES = ("constant", "linear", "cosine")


@dataclass
class TrainConfig:
    epochs: int = 60
    # Rows per batch; 0 = auto: about AUTO_STEPS optimizer steps per epoch (training rows /
    # AUTO_STEPS, between AUTO_BATCH[0] and AUTO_BATCH[1]), resolved per fold (batch_for).
    # Why: with a fixed 64, a 220-row fold gets 4 steps an epoch and the head has not converged
    # when early stopping ends it; it then lost to a logistic regression on its own pooled
    # features (bench/bench_baseline_lr.py, issue 21). Recipes set the papers' sizes exactly.
    batch_size: int = 0
    lr: float = 1e-3
    optimizer: str = "adamw"      # a name in OPTIMIZERS
    weight_decay: float = 1e-4    # AdamW: decoupled decay; Adam/SGD: an L2 term in the gradient (the papers' "L2")
    patience: int = 10            # epochs without validation improvement before stopping
    monitor: str = "auto"         # "ua" | "accuracy" | "weighted_f1" | "macro_f1" | "ccc" | "loss"; auto: ua (classification), ccc (regression)
    valid_fraction: float = 0.1   # carved from training rows when the protocol has no validation split
    # Carved validation slices of single utterances or whole dialogues; "auto": dialogues for
    # --context dialog (the model sees a dialogue's other utterances), utterances otherwise.
    valid_by: str = "auto"
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
    # Which split a fold is scored on: "test" (training runs), or "valid" for search trials
    # (mer tune): each fold's test rows are left out entirely and its validation rows are
    # scored instead, so a search never reads a test fold (mer.train.protocols.without_test).
    score_on: str = "test"
    # Optimizer steps: gradients of this many batches are summed before each step (the
    # effective batch is accumulate x batch_size rows); a learning-rate schedule over the
    # steps: linear warm-up over the first `warmup` fraction, then constant/linear/cosine
    # decay (mer.train.finetune.schedule; constant with no warm-up = no schedule at all).
    accumulate: int = 1
    warmup: float = 0.0
    schedule: str = "constant"
    # End-to-end fine-tuning (mer.train.finetune): the features whose encoder runs inside the
    # model on raw input (e.g. ("bert",)), which model (None: the extractor's default, the
    # packaged MiniLM for bert), its layer selection as in extraction, its learning rate,
    # how many of its lowest layers stay frozen (with the embeddings), and the token cap.
    finetune: tuple = ()
    encoder_model: str | None = None
    encoder_layer: str = "last"
    encoder_lr: float = 2e-5
    freeze_layers: int = 0
    max_tokens: int = 128
    grad_checkpointing: bool = False
    # Layer-wise learning-rate decay of the encoder: its top layer at encoder_lr, each lower
    # layer layer_decay times the one above, the embeddings lowest (1.0: one rate for all).
    layer_decay: float = 1.0
    # Epochs the encoder stays frozen at the start (the head trains alone), then it trains
    # (minus its freeze_layers); 0: from the first step.
    unfreeze_after: int = 0
    # Audio per fine-tuned input (--finetune wav2vec): the first max_seconds are kept and
    # the cut ones counted (None: whole utterances), as max_tokens for transcripts.
    max_seconds: float | None = None

    def __post_init__(self):
        # Every bad value fails here, before any data is read, with the option's name.
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"--optimizer {self.optimizer}: unknown; choose from {', '.join(OPTIMIZERS)}")
        if self.monitor not in MONITORS:
            raise UsageError(f"--monitor {self.monitor}: choose from {', '.join(MONITORS)}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"--precision {self.precision}: choose from {', '.join(PRECISIONS)}")
        if self.normalize not in NORMALIZE:
            raise UsageError(f"--normalize {self.normalize!r}: fold or speaker")
        if self.score_on not in SCORE_ON:
            raise UsageError(f"score_on {self.score_on!r}: choose from {', '.join(SCORE_ON)}")
        if self.context not in CONTEXTS:
            raise UsageError(f"--context {self.context}: unknown; choose from {', '.join(CONTEXTS)}")
        from mer.train.protocols import VALID_BY

        if self.valid_by not in VALID_BY:
            raise UsageError(f"--valid-by {self.valid_by}: choose {', '.join(VALID_BY)}")

        if self.batch_size < 0:
            raise UsageError(f"--batch-size {self.batch_size}: rows per batch, or 0 for auto")
        if self.accumulate < 1:
            raise UsageError(f"--accumulate {self.accumulate}: must be at least 1")
        if not 0.0 <= self.warmup < 1.0:
            raise UsageError(f"--warmup {self.warmup}: a fraction of the optimizer steps, 0 <= warmup < 1")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"--schedule {self.schedule}: choose from {', '.join(SCHEDULES)}")
        self.finetune = tuple(self.finetune or ())
        if self.freeze_layers < 0 or self.max_tokens < 2 or self.encoder_lr <= 0:
            raise UsageError(f"--freeze-layers {self.freeze_layers} / --max-tokens {self.max_tokens} / "
                             f"--encoder-lr {self.encoder_lr}: need >= 0 / >= 2 / > 0")
        if not 0.0 < self.layer_decay <= 1.0:
            raise UsageError(f"--layer-decay {self.layer_decay}: a factor per layer, 0 < F <= 1")
        if (self.unfreeze_after or self.layer_decay != 1.0) and not self.finetune:
            raise UsageError("--unfreeze-after / --layer-decay apply to a fine-tuned encoder: add --finetune")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise UsageError(f"--max-seconds {self.max_seconds}: seconds of audio kept per input, > 0")
        if not 0 <= self.unfreeze_after < max(1, self.epochs):
            raise UsageError(f"--unfreeze-after {self.unfreeze_after}: epochs before the encoder trains, "
                             f"0 <= K < --epochs {self.epochs}")

    def batch_for(self, n_train: int) -> int:
        """Rows per batch for a fold of ``n_train`` training rows: ``batch_size``, or with 0
        (auto) n_train / AUTO_STEPS clipped to AUTO_BATCH, so a small corpus still gets enough
        optimizer steps an epoch and a large one keeps batches of 64."""
        if self.batch_size:
            return self.batch_size
        lo, hi = AUTO_BATCH
        return int(min(hi, max(lo, n_train // AUTO_STEPS)))

    @property
    def valid_groups(self) -> str:
        """How carved validation slices are drawn: ``dialog`` or ``utterance``."""
        if self.valid_by != "auto":
            return self.valid_by
        return "dialog" if self.context == "dialog" else "utterance"


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
