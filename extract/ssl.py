"""``wav2vec``: hidden states of a self-supervised speech model (wav2vec 2.0, HuBERT, WavLM).

``--wav2vec.model`` is a local Hugging Face model directory or a model id already in the
user's Hugging Face cache (e.g. facebook/wav2vec2-base, facebook/hubert-large-ll60k,
microsoft/wavlm-base-plus); nothing is downloaded and there is no default, since no such
weights can be packaged. Any ``AutoModel`` whose config is wav2vec2 / hubert / wavlm /
data2vec-audio / unispeech(-sat) / wav2vec2-conformer works.

Input: 16 kHz mono, normalised as the model's ``preprocessor_config.json`` says (zero mean,
unit variance per utterance when ``do_normalize``; without that file, the setting of
``Wav2Vec2FeatureExtractor``'s default, normalised).

Batching: models whose convolutional front end uses layer norm (``feat_extract_norm="layer"``:
wav2vec2-large-lv60, HuBERT, WavLM) take an attention mask, so utterances of different lengths
are padded together. Models with group norm (wav2vec2-base) have no attention mask and their
outputs change with padding, so they only batch utterances of identical length: slower, exact.

``layer``: ``last`` (``last_hidden_state``), an integer index into the hidden states (0 = the
input to the first transformer layer, L = the last; negative counts from the end), or ``avg``:
the mean of the transformer layers' outputs 1..L, or ``all``: every hidden state 0..L stacked
along the vector (``(L+1) * H`` per frame, layer 0 first; outputs record ``layers: L+1``), for
the learned softmax layer weights of SUPERB in training. Such a store is L+1 times the size of
a one-layer store: about 2 MB per second of audio for a base model (13 x 768 x 50 Hz x 4 bytes),
about 86 GB for IEMOCAP's 12 hours.

Outputs: ``frames`` ragged [T, H] at the model's frame rate (50 Hz for the usual 320-sample
stride), ``mean`` and ``std`` fixed [H] over those frames.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from mer.common.errors import MerError, require
from mer.extract.base import EXTRACTORS, ExtractorConfig, OutputSpec, Utterance
from mer.extract.neural import HFExtractor, Loaded, from_local, hf_missing
from mer.extract.neural import parse_layer as _parse_layer
from mer.extract.torchutil import dtype_name, inference, pooled_stats, resolve_hf_model

SAMPLE_RATE = 16000
# A wav2vec2 built from a small config with seeded random weights: no speech encoder's weights
# can be installed offline, so this is what `--substitute` fine-tunes in the w2v-st-i recipe
# (it shows that the recipe's pipeline runs, nothing about wav2vec 2.0's figures). Written once
# under the cache root (models/), the same weights on every machine.
TINY_MODEL = "tiny-wav2vec2-random"
TINY_CONFIG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                   conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                   feat_extract_norm="layer", do_stable_layer_norm=True)


def tiny_wav2vec2_dir():
    """The folder of ``TINY_MODEL`` (built on first use from ``TINY_CONFIG``, seed 0)."""
    import os
    import tempfile
    from pathlib import Path

    from mer.common.paths import cache_root

    d = cache_root() / "models" / f"{TINY_MODEL}-v1"
    if (d / "config.json").is_file():
        return d
    import torch
    import transformers

    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=d.parent, prefix=".tmp-"))
    with torch.random.fork_rng(devices=[]):   # the caller's random state is left as it was
        torch.manual_seed(0)
        transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**TINY_CONFIG)).save_pretrained(tmp)
    transformers.Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(tmp)
    try:
        os.replace(tmp, d)   # atomic: a concurrent builder's folder wins, this one is dropped
    except OSError:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return d


def resolve_speech_model(model: str):
    if model == TINY_MODEL:
        return tiny_wav2vec2_dir()
    return resolve_hf_model(model, "--wav2vec.model")


SUPPORTED = {"wav2vec2", "hubert", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat", "wav2vec2-conformer"}


def parse_layer(layer: Any) -> str | int:
    return _parse_layer(layer, "--wav2vec.layer", ("last", "avg", "all"), "0 = transformer input")


@dataclass
class Wav2VecConfig(ExtractorConfig):
    model: str = ""                # HF model id in the local cache, or a local directory (required)
    layer: str = "last"            # last | avg | all | integer index into hidden states
    batch_size: int = 8            # utterances per forward pass (halved on GPU OOM)
    dtype: str = "auto"            # auto (fp32 on CPU, bf16/fp16 on GPU) | float32 | float16 | bfloat16


@EXTRACTORS.register("wav2vec")
class Wav2VecExtractor(HFExtractor):
    modality = "audio"
    Config = Wav2VecConfig
    sample_rate = SAMPLE_RATE
    batch_hint = 16

    def __init__(self, config: Wav2VecConfig | None = None, device: str = "cpu"):
        c = config or Wav2VecConfig()
        if not c.model:
            raise MerError(
                "wav2vec needs a model: pass --wav2vec.model <local directory or Hugging Face id in your cache> "
                "(e.g. facebook/wav2vec2-base after `huggingface-cli download facebook/wav2vec2-base`)"
            )
        self.layer = parse_layer(c.layer)
        super().__init__(c, device)
        self._init_model(resolve_speech_model(c.model))

    @classmethod
    def missing(cls, config=None) -> str | None:
        model = str(cls.as_config(config).model or "")
        if not model:
            return "no model given (--wav2vec.model: a local directory or a Hugging Face id in your cache)"
        if model == TINY_MODEL:
            return None
        return hf_missing(model, "--wav2vec.model", "speech")

    def _check_config(self, cfg) -> None:
        if cfg.model_type not in SUPPORTED:
            raise MerError(
                f"--wav2vec.model {self.config.model}: model type {cfg.model_type!r} is not a supported speech "
                f"encoder ({', '.join(sorted(SUPPORTED))})"
            )

    @property
    def frame_rate(self) -> float:
        return SAMPLE_RATE / float(np.prod(self.hf_config.conv_stride))

    @property
    def uses_mask(self) -> bool:
        return getattr(self.hf_config, "feat_extract_norm", "group") == "layer"

    def _preproc(self) -> dict:
        p = self.model_dir / "preprocessor_config.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    @property
    def normalize(self) -> bool:
        return bool(self._preproc().get("do_normalize", True))

    def identity(self) -> dict[str, Any]:
        return {
            "model": self.config.model,
            "model_type": self.hf_config.model_type,
            "weights_hash": self.weights_hash,
            "normalize_input": self.normalize,
            "padded_batches": self.uses_mask,
            # "auto" means fp32 on CPU and bf16/fp16 on GPU: the resolved precision is part of the key.
            "compute_dtype": dtype_name(self.torch_dtype),
        }

    def outputs(self) -> dict[str, OutputSpec]:
        k = self.n_states if self.layer == "all" else 1
        h = int(self.hf_config.hidden_size) * k
        return {
            "frames": OutputSpec("ragged", h, self.frame_rate, "float32", f"hidden states, layer {self.layer}", layers=k),
            "mean": OutputSpec("fixed", h, None, "float32", "mean over frames", layers=k),
            "std": OutputSpec("fixed", h, None, "float32", "standard deviation over frames", layers=k),
        }

    def _load_uncached(self) -> Loaded:
        transformers = require("transformers", "text")
        _ = self.hf_config  # validates the model type first
        (model,) = from_local(self, transformers.AutoModel)
        pp = self._preproc()
        fe = transformers.Wav2Vec2FeatureExtractor(
            feature_size=1,
            sampling_rate=SAMPLE_RATE,
            padding_value=float(pp.get("padding_value", 0.0)),
            do_normalize=self.normalize,
            return_attention_mask=self.uses_mask,
        )
        if int(pp.get("sampling_rate", SAMPLE_RATE)) != SAMPLE_RATE:
            raise MerError(f"--wav2vec.model {self.config.model}: expects {pp['sampling_rate']} Hz input; only 16 kHz models are supported")
        model.eval().requires_grad_(False)
        model.to(device=self.device, dtype=self.torch_dtype)
        return Loaded(fe, model)

    def _min_samples(self) -> int:
        """Shortest input giving one frame: the receptive field of the conv front end."""
        cfg = self.hf_config
        n = 1
        for k, s in reversed(list(zip(cfg.conv_kernel, cfg.conv_stride))):
            n = (n - 1) * s + k
        return n

    def _forward(self, items: list[tuple[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        import torch

        m = self.load()
        waves = [w for _, w in items]
        enc = m.processor(waves, sampling_rate=SAMPLE_RATE, padding=True, return_tensors="pt",
                   return_attention_mask=self.uses_mask)
        inputs = {"input_values": enc["input_values"].to(self.device, self.torch_dtype)}
        if self.uses_mask:
            inputs["attention_mask"] = enc["attention_mask"].to(self.device)
        with inference(self.device, self.torch_dtype):
            out = m.model(**inputs, output_hidden_states=self.layer != "last", return_dict=True)
        h = self.select_layer(out).cpu().numpy()
        lengths = m.model._get_feat_extract_output_lengths(torch.tensor([len(w) for w in waves])).tolist()
        res = []
        for i, n in enumerate(lengths):
            frames = np.ascontiguousarray(h[i, : int(n)], dtype=np.float32)
            mean, std = pooled_stats(frames)
            res.append({"frames": frames, "mean": mean, "std": std})
        return res

    def process(self, batch: list[Utterance]) -> list[dict[str, np.ndarray]]:
        if not batch:
            return []
        items = []
        min_n = self._min_samples()
        for u in batch:
            x = self._audio(u)
            if len(x) < min_n:
                self._record("repair", u.id, "audio shorter than one frame",
                             f"{len(x)} samples zero-padded to {min_n} (the model's receptive field)")
                x = np.pad(x, (0, min_n - len(x)))
            items.append((u.id, x))
        return self.in_length_order(self._run_sorted, items, [len(x) for _, x in items])

    def _run_sorted(self, sorted_items: list[tuple[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        if self.uses_mask:
            return self._batcher(self._forward, sorted_items)
        # Group-norm models: padding would change the result, so batch equal lengths only.
        done = []
        start = 0
        while start < len(sorted_items):
            end = start + 1
            while end < len(sorted_items) and len(sorted_items[end][1]) == len(sorted_items[start][1]):
                end += 1
            done.extend(self._batcher(self._forward, sorted_items[start:end]))
            start = end
        return done
