"""``NeuralExtractor``: the base class of the torch extractors (bert, openl3, dvector, wav2vec).

It adds to the extractor contract (``mer.extract.base``) what every neural extractor needs:
device and dtype resolution, a model loaded once per worker and reused across batches,
OOM-retrying sub-batches, and recording of repairs for the store's report. The plumbing it
uses (devices, dtypes, OOM batching, weight hashing) is in ``mer.extract.torchutil``.
"""
from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import numpy as np

from mer.common.errors import MerError
from mer.extract.base import Extractor, Utterance
from mer.extract.torchutil import OOMBatcher, pick_device, resolve_dtype


class NeuralExtractor(Extractor):
    """Base for the torch extractors: device/dtype resolution, a lazily loaded model reused
    across batches, OOM-retrying sub-batches, and a place to record repairs.

    Engine-facing additions (all optional to use):
      ``load()``            load the model now (else the first ``process`` does)
      ``sort_key(utt)``     a length for grouping similar utterances into one batch
      ``batch_hint`` utterances per ``process`` call that keep the device busy
      ``available()``       (ok, reason): whether the extractor can run with its config here
      ``report``            set it to a mer.common.report.Report to collect repairs/notes
    """

    uses_gpu: ClassVar[bool] = True
    batch_hint: ClassVar[int] = 32

    def __init__(self, config=None, device: str = "cpu"):
        super().__init__(config, pick_device(device))
        self.report = None
        self.events: list[tuple[str, str, str, str]] = []  # (kind, id, reason, detail)
        self._model = None
        # Sub-batch items are (utterance id, payload) pairs, so OOM messages can name one.
        self._batcher = OOMBatcher(getattr(self.config, "batch_size", 32), describe=lambda item: str(item[0]))

    # -- engine helpers
    @classmethod
    def available(cls, config=None) -> tuple[bool, str]:
        return True, ""

    @staticmethod
    def sort_key(utt: Utterance) -> int:
        if utt.audio is not None:
            return int(len(utt.audio))
        return len(utt.text or "")

    @property
    def torch_dtype(self):
        return resolve_dtype(self.device, getattr(self.config, "dtype", "auto"))

    def load(self):
        if self._model is None:
            self._model = self._load()
        return self._model

    def setup(self) -> None:
        """The engine's hook, called once per worker before the first batch."""
        self.load()

    @abstractmethod
    def _load(self):
        """Load and return the model (each subclass loads its own)."""

    # -- recording repairs: into the engine's Report when it gave us one, always into events
    def _record(self, kind: str, uid: str, reason: str, detail: str = "") -> None:
        self.events.append((kind, uid, reason, detail))
        if self.report is not None:
            getattr(self.report, kind)(uid, self.name, reason, detail)

    def pop_events(self) -> list[tuple[str, str, str, str]]:
        """Repairs/notes recorded since the last call, as (kind, utterance id, reason, detail),
        kind being "repair" or "note": for an engine that gathers them per batch."""
        ev, self.events = self.events, []
        return ev

    def _audio(self, utt: Utterance) -> np.ndarray:
        if utt.audio is None:
            raise MerError(f"{utt.id}: no audio given to the {self.name} extractor")
        if self.sample_rate and utt.sample_rate and int(utt.sample_rate) != int(self.sample_rate):
            raise MerError(
                f"{utt.id}: audio is at {utt.sample_rate} Hz, the {self.name} extractor needs {self.sample_rate} Hz"
            )
        x = np.asarray(utt.audio, dtype=np.float32)
        if x.ndim != 1:
            raise MerError(f"{utt.id}: {self.name} expects mono audio, got shape {x.shape}")
        if len(x) == 0:
            raise MerError(f"{utt.id}: empty audio")
        if not np.isfinite(x).all():
            raise MerError(f"{utt.id}: audio contains NaN or infinite samples")
        return x


def from_local(ext, *loaders):
    """``loader.from_pretrained`` on ``ext``'s local model folder for each loader, quietly and
    offline; a folder that cannot be loaded is one line naming the extractor's ``--<name>.model``
    option (bert, wav2vec and asr load this way)."""
    from mer.extract.torchutil import quiet_transformers

    d = str(ext.model_dir)
    try:
        with quiet_transformers():
            return [f.from_pretrained(d, local_files_only=True) for f in loaders]
    except OSError as e:
        raise MerError(f"--{ext.name}.model {ext.config.model}: cannot load from {d}: {str(e).splitlines()[0]}") from None
