"""``NeuralExtractor``: the base class of the torch extractors (bert, openl3, dvector, wav2vec).

It adds to the extractor contract (``mer.extract.base``) what every neural extractor needs:
device and dtype resolution, a model loaded once per worker and reused across batches,
OOM-retrying sub-batches, and recording of repairs for the store's report. The plumbing it
uses (dtypes, OOM batching, weight hashing) is in ``mer.extract.torchutil``; the device is
``mer.common.device.choose``.

``HFExtractor`` adds what the Hugging Face encoders (bert, wav2vec) share: the model folder,
its config read without the weights, the layer option (``parse_layer``), the identity hash,
and loading once per process. ``NeuralExtractor.embed_windows`` is the windowed forward pass
of the fixed-window encoders (openl3's 1 s frames, dvector's 1.6 s partials).
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np

from mer.common.device import choose
from mer.common.errors import MerError, UsageError, require
from mer.extract.base import Extractor, Utterance
from mer.extract.torchutil import OOMBatcher, dtype_name, hash_model_dir, inference, length_sorted, resolve_dtype, shared_model


class NeuralExtractor(Extractor):
    """Base for the torch extractors: device/dtype resolution, a lazily loaded model reused
    across batches, OOM-retrying sub-batches, and a place to record repairs.

    Engine-facing additions (all optional to use):
      ``load()``            load the model now (else the first ``process`` does)
      ``sort_key(utt)``     a length for grouping similar utterances into one batch
      ``batch_hint`` utterances per ``process`` call that keep the device busy
      ``missing(config)``   None, or what is not installed here and which option takes it
      ``report``            set it to a mer.common.report.Report to collect repairs/notes
    """

    uses_gpu: ClassVar[bool] = True
    batch_hint: ClassVar[int] = 32

    def __init__(self, config=None, device: str = "cpu"):
        super().__init__(config, choose(device))
        self.report = None
        self.events: list[tuple[str, str, str, str]] = []  # (kind, id, reason, detail)
        self._model = None
        # Sub-batch items are (utterance id, payload) pairs, so OOM messages can name one.
        self._batcher = OOMBatcher(getattr(self.config, "batch_size", 32), describe=lambda item: str(item[0]))

    # -- engine helpers
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

    def in_length_order(self, fn, items: list, lengths: Sequence[int]) -> list:
        """``fn`` (a list of items -> one result each) over ``items`` sorted by length, so a
        padded batch wastes little; the results come back in the items' order."""
        order = length_sorted(lengths)
        done = fn([items[i] for i in order])
        out: list = [None] * len(items)
        for pos, i in enumerate(order):
            out[i] = done[pos]
        return out

    def embed_windows(self, ids: Sequence[str], windows: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The model over fixed-size windows: ``windows[i]`` is utterance ``ids[i]``'s stack of
        windows ``[W_i, ...]``; returns its ``[W_i, D]`` float32 embeddings. All the windows of
        a batch go through the model together, in sub-batches halved on GPU out-of-memory."""
        items = [(uid, w) for uid, ws in zip(ids, windows) for w in ws]
        emb = self._batcher(self._window_forward, items)
        out, pos = [], 0
        for ws in windows:
            out.append(np.stack(emb[pos : pos + len(ws)]).astype(np.float32))
            pos += len(ws)
        return out

    def _window_forward(self, items: list[tuple[str, np.ndarray]]) -> list[np.ndarray]:
        import torch

        model = self.load()
        x = torch.from_numpy(np.stack([w for _, w in items]).astype(np.float32, copy=False)).to(self.device)
        with inference(self.device, self.torch_dtype):
            y = model(x)
        return list(y.float().cpu().numpy())

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


def parse_layer(layer: Any, option: str, names: tuple[str, ...], meaning: str) -> str | int:
    """``--<x>.layer``: one of ``names`` or an integer index into the hidden states (also given
    as a string, e.g. from the CLI). ``meaning`` says what index 0 is, for the error."""
    if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
        return int(layer)
    s = str(layer).strip().lower()
    if s in names:
        return s
    try:
        return int(s)
    except ValueError:
        raise UsageError(f"{option} {layer!r}: use {', '.join(names)} or a layer index ({meaning})") from None


def hf_missing(model: str, option: str, what: str) -> str | None:
    """None when the Hugging Face model ``model`` is here (a folder, or in the local cache);
    else how to get it onto this machine (nothing is ever downloaded at run time)."""
    from mer.extract.torchutil import resolve_hf_model

    try:
        resolve_hf_model(model, option)
    except MerError:
        return (f"needs the {what} encoder {model}, which is not installed here: download it on a machine with "
                f"internet (`huggingface-cli download {model}`), copy the folder here and point "
                f"`{option} /path/to/{model.split('/')[-1]}` at it")
    return None


@dataclass
class Loaded:
    """A loaded Hugging Face model and what prepares its input (a tokenizer for text, a
    feature extractor for speech)."""

    processor: Any
    model: Any


class HFExtractor(NeuralExtractor):
    """A Hugging Face encoder in a local folder (bert, wav2vec). Subclasses set ``model_dir``
    and ``layer`` in ``__init__``, and define ``_check_config`` and ``_load_uncached``."""

    model_dir: Any
    layer: str | int

    def _init_model(self, model_dir) -> None:
        self.model_dir = model_dir
        self._hf_config = None
        self._hash = None

    @property
    def hf_config(self):
        """The model's config.json, read without loading the weights and checked once."""
        if self._hf_config is None:
            transformers = require("transformers", "text")
            cfg = transformers.AutoConfig.from_pretrained(str(self.model_dir), local_files_only=True)
            self._check_config(cfg)
            n = getattr(cfg, "num_hidden_layers", None)
            if isinstance(self.layer, int) and n is not None and not -(n + 1) <= self.layer <= n:
                raise UsageError(f"--{self.name}.layer {self.layer}: {self.config.model} has hidden states 0..{n}")
            self._hf_config = cfg
        return self._hf_config

    def _check_config(self, cfg) -> None:
        """Refuse a model this extractor cannot use (raise MerError/UsageError)."""

    @property
    def n_states(self) -> int:
        """Hidden states a forward pass returns: the embedding output plus one per layer."""
        return int(self.hf_config.num_hidden_layers) + 1

    @property
    def weights_hash(self) -> str:
        if self._hash is None:
            self._hash = hash_model_dir(self.model_dir)
        return self._hash

    def versions(self) -> dict[str, str]:
        import torch
        import transformers

        return {"torch": torch.__version__, "transformers": transformers.__version__}

    def _load(self):
        key = (self.name, str(self.model_dir), self.identity()["weights_hash"], self.device, dtype_name(self.torch_dtype))
        return shared_model(key, self._load_uncached)

    @abstractmethod
    def _load_uncached(self):
        """Load the model (``from_local``), in eval mode on ``self.device``."""

    def select_layer(self, out):
        """The hidden states ``self.layer`` asks for (``select_hidden``)."""
        return select_hidden(out, self.layer)


def select_hidden(out, layer):
    """The hidden states ``layer`` asks for, from a forward pass's output, in float32:
    ``last``, an index, ``avg`` (mean of layers 1..L), ``last4`` or ``all`` (concatenated
    along the vector, in layer order). Extraction and fine-tuning (mer.train.finetune) both
    select through here, so a tuned encoder's layers are the extracted store's."""
    import torch

    if layer == "last":
        h = out.last_hidden_state
    elif layer == "avg":
        h = torch.stack(list(out.hidden_states[1:]), 0).float().mean(0)
    elif layer == "last4":
        h = torch.cat(list(out.hidden_states[-4:]), dim=-1)
    elif layer == "all":
        h = torch.cat([s.float() for s in out.hidden_states], dim=-1)
    else:
        h = out.hidden_states[layer]
    return h.float()
