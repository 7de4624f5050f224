"""The extractor interface and its registry.

An extractor turns a batch of decoded utterances into named outputs. Each output is either
``fixed`` (one vector per utterance, stored ``[N, D]``) or ``ragged`` (a ``[T_i, D]``
sequence per utterance, stored flat as ``values [sum T, D]`` + ``offsets [N+1]``).

Extractors register with ``@EXTRACTORS.register("name")`` and carry a dataclass ``Config``;
its fields become CLI options ``--<name>.<field>`` and are saved in the store, and the
store's cache key hashes (manifest modality hash, name, config, ``identity()``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import numpy as np

from mer.common.registry import Registry

EXTRACTORS: Registry[type["Extractor"]] = Registry(
    "feature", package="mer.extract", marker="EXTRACTORS.register", name_attr="name"
)


# `mer extract` without --features: these, minus any that cannot run here (OpenL3 without
# weights, say), each left out with a one-line notice. wav2vec needs a model to be named.
DEFAULT_FEATURES = ("mfcc", "mel", "egemaps", "bert", "dvector", "openl3")

# Config fields that change how fast features are computed, never their values: they are
# saved in the store but left out of its cache key, so a new batch size reuses the store.
RUNTIME_FIELDS = frozenset({"batch_size"})
# What a plain `mer extract` builds with, beside the extractor's config: audio rows longer
# than this are skipped (in the key), values stored as this dtype. extract/cache.py compares
# stores against them to find the default one.
DEFAULT_MAX_SECONDS = 600.0
DEFAULT_DTYPE = "float32"


def default_features(configs: dict[str, dict] | None = None) -> tuple[list[str], list[str]]:
    """(features to extract, notices about the ones left out) for a run without --features."""
    chosen, notices = [], []
    for name in DEFAULT_FEATURES:
        cls = EXTRACTORS.get(name)
        ok, why = cls.available(make_config(cls, (configs or {}).get(name)))
        if not ok:
            notices.append(why)
            continue
        chosen.append(name)
    return chosen, notices


def make_config(cls: type["Extractor"], values: dict | None):
    """The extractor's Config with ``values`` (CLI strings or Python values) applied;
    unknown fields are a UsageError listing the valid ones."""
    from mer.common.config import make_config as _make

    return _make(cls.Config, values, owner=cls.name, option=f"--{cls.name}.{{}}")


@dataclass(frozen=True)
class OutputSpec:
    kind: str          # "fixed" | "ragged"
    dim: int
    frame_rate: float | None = None   # frames per second for audio sequences, None for tokens
    dtype: str = "float32"            # storage dtype of values
    description: str = ""
    # Hidden states stacked along D (``--bert.layer all``): the vector is ``layers`` blocks of
    # ``dim // layers`` values, layer 0 first; training mixes them with learned weights.
    layers: int = 1


@dataclass
class Utterance:
    """What an extractor sees for one utterance."""

    id: str
    audio: np.ndarray | None = None   # mono float32 at the extractor's sample_rate
    sample_rate: int | None = None
    text: str | None = None


@dataclass
class ExtractorConfig:
    """Base for extractor configs: plain, JSON-able fields only."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def option_fields(cls):
        return fields(cls)


class InputError(ValueError):
    """Raised by ``process()`` when an utterance cannot give this feature because of what it
    is (too short for the deltas, no functionals from openSMILE): the row is skipped and the
    store may still be complete. Any other exception is a failure a rerun retries."""

    def __init__(self, message: str, reason: str = "too short"):
        super().__init__(message)
        self.reason = reason


class Extractor(ABC):
    """The extractor contract. Required: ``modality``, ``Config``, ``outputs()``,
    ``process()`` (and ``sample_rate`` for audio). Everything else has a default here.

    ``name`` is set by ``@EXTRACTORS.register("name")`` (written once, there)."""

    name: ClassVar[str]
    modality: ClassVar[str]            # "audio" | "text"
    Config: ClassVar[type[ExtractorConfig]]
    sample_rate: int | None = None     # audio extractors: the rate they want their input at
    uses_gpu: ClassVar[bool] = False   # True: run on a GPU worker when one is available
    # A CPU extractor that can also run on --device cuda (mfcc, mel): the engine moves it to
    # the GPU only when the user asks for one.
    device_capable: ClassVar[bool] = False
    # Modules local workers import once, before forking (heavy libraries: torch, opensmile).
    preload: ClassVar[tuple[str, ...]] = ()
    # Optional hint for the engine: utterances per process() call that suit this extractor
    # (None: the engine's --batch-size). Big models want small batches on small GPUs.
    batch_hint: ClassVar[int | None] = None

    @classmethod
    def missing(cls, config: ExtractorConfig | dict | None = None) -> str | None:
        """None when this extractor can run here with ``config`` (its Config, a dict of its
        fields, or None for the defaults); else an actionable message: what is not installed,
        where to get it and which option takes it. Recipes ask it of each feature they use,
        and `mer extract` without --features leaves out the ones that cannot run."""
        return None

    @classmethod
    def available(cls, config: ExtractorConfig | dict | None = None) -> tuple[bool, str]:
        """(ok, why not): ``missing`` as a pair, the reason prefixed "<name> left out"."""
        why = cls.missing(config)
        return (True, "") if why is None else (False, f"{cls.name} left out: {why}")

    @classmethod
    def as_config(cls, config: ExtractorConfig | dict | None):
        """``config`` as this extractor's Config (None: the defaults; a dict: its fields)."""
        if config is None or isinstance(config, dict):
            return make_config(cls, config)
        return config

    def __init__(self, config: ExtractorConfig | None = None, device: str = "cpu"):
        self.config = config or self.Config()
        self.device = device

    def setup(self) -> None:
        """Load weights/models once. The engine calls this once per worker process, before the
        first process(), and keeps the instance for every later batch of that worker."""

    def identity(self) -> dict[str, Any]:
        """Everything beyond the config that changes the output (model weights hash, ...)."""
        return {}

    def versions(self) -> dict[str, str]:
        """Library versions to record in the store attributes."""
        return {}

    def pop_events(self) -> list[tuple[str, str, str, str]]:
        """Repairs/notes since the last call, as (kind "repair"|"note", utterance id, reason,
        detail); the engine writes them to the store's report. None by default."""
        return []

    @abstractmethod
    def outputs(self) -> dict[str, OutputSpec]:
        """Output name -> OutputSpec; every extractor defines its own."""

    @abstractmethod
    def process(self, batch: list[Utterance]) -> list[dict[str, np.ndarray]]:
        """One dict per utterance: output name -> array ([D] for fixed, [T, D] for ragged)."""
