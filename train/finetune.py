"""End-to-end fine-tuning (``mer train --finetune bert``): the named encoder runs inside the
model, with gradients, on that modality's raw input, while every other input still comes
from its store.

How it fits the frozen-feature trainer without a second data path:
- ``tokenized_set`` (text; ``AudioFinetuner.inputs`` for audio) turns the manifest's transcripts into an in-memory ``FeatureSet`` for the
  feature: its ``token_ids`` are a ragged [T, 1] output (batched, bucketed by length and
  masked like any token sequence), and its metadata declare the outputs the encoder will
  produce (``tokens``, ``mean``, with the extractor's width and layer count), so the fusion
  gets the same ``InputSpec``s it would get from an extracted store.
- ``data_spec`` is the spec the data layer fills for such an input (the token ids, under the
  model input's key); the ids are marked ``raw`` so per-fold z-scoring leaves them alone.
- ``Finetuned`` wraps the fusion model (with its layer mixing, if any): per finetuned input it
  runs the encoder on the ids and mask, selects layers as extraction does
  (``mer.extract.neural.select_hidden``: last, last4 concatenated, all stacked for the learned
  mix) and pools over real tokens (pooled inputs) or hands on the token vectors with their
  mask (sequence fusions).

The fold's state dict therefore holds the tuned encoder (``encoder.<feature>.*``) next to the
fusion (``inner.*``), saved as safetensors with every fold; the run directory also keeps the
encoder's config and tokenizer (``encoder/<feature>/``) so ``mer predict`` rebuilds it from the
run alone. ``--finetune wav2vec`` does the same with the corpus's audio: waveforms decoded
and resampled by the extractor's loader, a ragged [samples, 1] input whose batch budget counts
encoder frames (``Arrays.step``), normalised inside the model as the feature extractor does.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mer.common.errors import MerError, UsageError
from mer.common.registry import Registry

# Encoders that can be fine-tuned, by extractor name (--finetune choices come from here).
FINETUNERS: Registry[type] = Registry("fine-tunable encoder")
# Prefixes of the fine-tuned model's state dict: the encoders, and the fusion it wraps.
ENCODER_PREFIX = "encoder."
INNER_PREFIX = "inner."
# Texts tokenised per call (the tokenizer's own batching; memory is a few MB).
TOKENIZE_BATCH = 512


@dataclass(frozen=True)
class EncoderSpec:
    """What is fine-tuned for one feature: recorded in the run's config.yaml (``finetune``)."""

    feature: str
    model: str
    layer: str | int
    max_tokens: int
    freeze_layers: int = 0
    layer_decay: float = 1.0       # --layer-decay (param_groups)
    unfreeze_after: int = 0        # --unfreeze-after: epochs the encoder stays frozen first
    max_seconds: float | None = None   # --max-seconds: audio kept per input (the first N s; None: all)

    def record(self, hf_config, weights_hash: str, tuned: int, frozen: int) -> dict:
        return {"feature": self.feature, "model": self.model, "model_type": hf_config.model_type,
                "weights_hash": weights_hash, "layer": self.layer, "max_tokens": self.max_tokens,
                "layers": int(hf_config.num_hidden_layers), "frozen_layers": self.freeze_layers,
                "layer_decay": self.layer_decay, "unfreeze_after": self.unfreeze_after,
                "parameters_tuned": tuned, "parameters_frozen": frozen}


@FINETUNERS.register("bert")
class TextFinetuner:
    """A BERT-family encoder (any ``AutoModel`` with a tokenizer) on tokenised transcripts.
    Built through the bert extractor, so model resolution, layer names and checks are the
    extractor's (``--bert.model``, ``--bert.layer``, ``--bert.max_tokens``)."""

    modality = "text"
    step = 1   # input values per model frame (the batch budget counts tokens)

    def __init__(self, spec: EncoderSpec):
        from mer.extract.text import BertConfig, BertExtractor

        self.spec = spec
        self.ext = BertExtractor(BertConfig(model=spec.model, layer=str(spec.layer), max_tokens=spec.max_tokens))
        n = int(self.ext.hf_config.num_hidden_layers)
        if not 0 <= spec.freeze_layers <= n:
            raise UsageError(f"--freeze-layers {spec.freeze_layers}: {spec.model} has {n} layers (0..{n})")
        self._tok = None

    @property
    def tokenizer(self):
        if self._tok is None:
            import transformers

            from mer.extract.neural import from_local

            (self._tok,) = from_local(self.ext, transformers.AutoTokenizer)
        return self._tok

    def outputs(self) -> dict[str, dict]:
        """The store-like metadata of what the encoder gives: the extractor's own outputs."""
        outs = self.ext.outputs()
        meta = {n: {"kind": o.kind, "dim": int(o.dim), "layers": int(getattr(o, "layers", 1) or 1)}
                for n, o in outs.items() if n in ("tokens", "mean")}
        meta["token_ids"] = {"kind": "ragged", "dim": 1, "layers": 1}
        return meta

    def tokenize(self, texts: list[str]) -> tuple[list[np.ndarray], int]:
        """Token ids of each text ([T, 1] float32: ids below 2**24 are exact) and how many
        texts were cut to max_tokens."""
        tok, cap = self.tokenizer, self.spec.max_tokens
        out, cut = [], 0
        for a in range(0, len(texts), TOKENIZE_BATCH):
            part = texts[a : a + TOKENIZE_BATCH]
            full = tok(part, truncation=False)["input_ids"]
            for ids in full:
                if len(ids) > cap:
                    cut += 1
            enc = tok(part, truncation=True, max_length=cap)["input_ids"]
            out += [np.asarray(ids, np.float32).reshape(-1, 1) for ids in enc]
        return out, cut

    def module(self):
        """A fresh encoder module with the pretrained weights (one load per process, copied
        per fold so every fold starts from the same weights)."""
        import copy

        return TextEncoder(copy.deepcopy(_pretrained(self.ext)), self.spec.layer, self.spec.freeze_layers)

    def inputs(self, manifest_df, dataset: str | None = None, cache=None):
        return tokenized_set(self.spec.feature, self, manifest_df, dataset, cache)

    def record(self, module) -> dict:
        tuned = sum(p.numel() for p in module.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
        return {**self.spec.record(self.ext.hf_config, self.ext.weights_hash, tuned, frozen), "modality": "text"}

    def save_assets(self, folder: Path) -> None:
        """Config and tokenizer (no weights: those are in every fold's safetensors)."""
        folder.mkdir(parents=True, exist_ok=True)
        self.ext.hf_config.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))


@FINETUNERS.register("wav2vec")
class AudioFinetuner:
    """A wav2vec 2.0 / HuBERT / WavLM encoder on the corpus's audio, decoded and resampled to
    16 kHz by the extractor's own loader (``mer.common.audio.load``, spans included).
    Built through the wav2vec extractor (model resolution, supported types, layer names)."""

    modality = "audio"

    def __init__(self, spec: EncoderSpec):
        from mer.extract.ssl import Wav2VecConfig, Wav2VecExtractor

        self.spec = spec
        self.ext = Wav2VecExtractor(Wav2VecConfig(model=spec.model, layer=str(spec.layer)))
        n = int(self.ext.hf_config.num_hidden_layers)
        if not 0 <= spec.freeze_layers <= n:
            raise UsageError(f"--freeze-layers {spec.freeze_layers}: {spec.model} has {n} layers (0..{n})")
        # the batch budget (--batch-frames) counts encoder frames, not samples
        self.step = int(np.prod(self.ext.hf_config.conv_stride))

    def outputs(self) -> dict[str, dict]:
        outs = self.ext.outputs()
        meta = {n: {"kind": o.kind, "dim": int(o.dim), "layers": int(getattr(o, "layers", 1) or 1),
                    "frame_rate": o.frame_rate} for n, o in outs.items() if n in ("frames", "mean")}
        meta["samples"] = {"kind": "ragged", "dim": 1, "layers": 1}
        return meta

    def inputs(self, manifest_df, dataset: str | None = None, cache=None):
        """Every row's waveform; a row that cannot be decoded is marked invalid and counted.
        With a ``dataset``, read from (or written to) the input cache (mer.train.inputcache)."""
        from mer.train.data import FeatureSet
        from mer.train.inputcache import versions

        enc = _cached(lambda: self.decode(manifest_df), manifest_df, dataset, cache, self.spec.feature, "samples",
                      "audio_hash", {"sample_rate": self.ext.sample_rate, "max_seconds": self.spec.max_seconds,
                                     "min_samples": int(self.ext._min_samples())},
                      {"decoder": "mer.common.audio.load", **versions("soundfile", "soxr", "av", "numpy")},
                      "decoded audio")
        return FeatureSet(self.spec.feature, "audio", enc.ids, self.outputs(), ragged={"samples": (enc.values, enc.offsets)},
                          valid=enc.valid, key=f"finetune:{self.ext.weights_hash[:16]}",
                          config={"finetune": True, "model": self.spec.model},
                          attrs={"finetune": True, "undecodable": list(enc.counts.get("undecodable", [])),
                                 "cropped": int(enc.counts.get("cropped", 0))})

    def decode(self, manifest_df):
        """Decode and resample every row (``mer.common.audio.load``, the extractor's loader),
        cut to --max-seconds: an ``inputcache.Encoded``."""
        from mer.common.audio import load
        from mer.train.inputcache import Encoded

        ids = manifest_df["id"].astype(str).to_numpy()
        waves, valid, failed, cropped = [], np.ones(len(ids), bool), [], 0
        for i, r in enumerate(manifest_df.itertuples(index=False)):
            try:
                x = load(r.audio, self.ext.sample_rate, _num(getattr(r, "start", None)), _num(getattr(r, "end", None)))
                x, cut = crop(np.asarray(x, np.float32).reshape(-1), self.spec.max_seconds, self.ext.sample_rate)
                cropped += cut
                if len(x) < self.ext._min_samples():
                    raise MerError(f"{len(x)} samples, shorter than one frame")
            except Exception as e:  # noqa: BLE001 - any decode failure skips the row, named in the report
                valid[i], x = False, np.zeros(0, np.float32)
                failed.append(f"{ids[i]}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            waves.append(x.reshape(-1, 1))
        offsets = np.zeros(len(ids) + 1, np.int64)
        np.cumsum([len(w) for w in waves], out=offsets[1:])
        values = np.concatenate(waves) if waves else np.zeros((0, 1), np.float32)
        # a failed decode may be passing (a file being copied): such a result is not cached
        return Encoded(ids, values, offsets, valid, {"undecodable": failed, "cropped": cropped}, keep=not failed)

    def module(self):
        import copy

        return AudioEncoder(copy.deepcopy(_pretrained(self.ext)), self.spec.layer, self.spec.freeze_layers,
                            self.ext.normalize, self.ext.uses_mask)

    def record(self, module) -> dict:
        tuned = sum(p.numel() for p in module.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
        return {**self.spec.record(self.ext.hf_config, self.ext.weights_hash, tuned, frozen), "modality": "audio",
                "sample_rate": self.ext.sample_rate, "max_seconds": self.spec.max_seconds, "normalize": self.ext.normalize, "uses_mask": self.ext.uses_mask}

    def save_assets(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.ext.hf_config.save_pretrained(str(folder))


def crop(x: np.ndarray, max_seconds: float | None, sample_rate: int) -> tuple[np.ndarray, int]:
    """The first ``max_seconds`` of a waveform (as --max-tokens keeps the first tokens: the
    encoder's memory grows with the input's length) and 1 if it was cut, else 0."""
    if max_seconds is None or len(x) <= int(round(max_seconds * sample_rate)):
        return x, 0
    return x[: int(round(max_seconds * sample_rate))], 1


def _num(v):
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)


_PRETRAINED: dict = {}


def _pretrained(ext):
    key = (str(ext.model_dir), ext.weights_hash)
    if key not in _PRETRAINED:
        import transformers

        from mer.extract.neural import from_local

        (model,) = from_local(ext, transformers.AutoModel)
        _PRETRAINED[key] = model.float()
    return _PRETRAINED[key]


def _blocks(hf_model):
    """The transformer layers of a BERT-family model (bottom first), for --freeze-layers."""
    for path in ("encoder.layer", "encoder.layers", "layers", "transformer.layer"):
        obj = hf_model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None:
            return list(obj)
    raise MerError(f"{type(hf_model).__name__}: cannot find its transformer layers to freeze")


def _torch_module():
    from torch import nn

    return nn.Module


class TextEncoder(_torch_module()):
    """The encoder with its lowest ``freeze`` layers (and the embeddings) frozen."""

    def __init__(self, hf_model, layer, freeze: int = 0):
        super().__init__()
        self.model, self.layer = hf_model, layer
        if freeze:
            emb = getattr(hf_model, "embeddings", None)
            if emb is not None:
                emb.requires_grad_(False)
            for block in _blocks(hf_model)[:freeze]:
                block.requires_grad_(False)

    def forward(self, x, mask):
        """Token ids ``x`` [B, T, 1] (float) and their mask -> (hidden states, the same mask)."""
        from mer.extract.neural import select_hidden

        ids = x[..., 0].round().long()
        out = self.model(input_ids=ids, attention_mask=mask.long(), output_hidden_states=self.layer != "last",
                         return_dict=True)
        return select_hidden(out, self.layer), mask


class AudioEncoder(_torch_module()):
    """A wav2vec 2.0 / HuBERT / WavLM encoder on padded 16 kHz waveforms: each waveform
    normalised over its real samples as the feature extractor does (when the model's
    preprocessor says so), the attention mask passed to models that take one (layer-norm
    front ends; group-norm ones see zero padding, as in the extractor's equal-length batches
    only approximately); frames past each input's end are masked out."""

    def __init__(self, hf_model, layer, freeze: int = 0, normalize: bool = True, uses_mask: bool = True):
        super().__init__()
        self.model, self.layer, self.normalize, self.uses_mask = hf_model, layer, bool(normalize), bool(uses_mask)
        # LayerDrop (wav2vec2's config default 0.1 in training) skips whole layers at random, and
        # a skipped layer leaves its hidden state out: the stack for last4/all would change size.
        if getattr(hf_model.config, "layerdrop", 0.0):
            hf_model.config.layerdrop = 0.0
        if freeze:   # the convolutional front end with the lowest layers
            for name in ("feature_extractor", "feature_projection"):
                part = getattr(hf_model, name, None)
                if part is not None:
                    part.requires_grad_(False)
            for block in _blocks(hf_model)[:freeze]:
                block.requires_grad_(False)

    def forward(self, x, mask):
        import torch

        from mer.extract.neural import select_hidden

        wave, m = x[..., 0], mask.to(x.dtype)
        if self.normalize:   # Wav2Vec2FeatureExtractor: (x - mean) / sqrt(var + 1e-7) over real samples
            n = m.sum(1, keepdim=True).clamp(min=1)
            mu = (wave * m).sum(1, keepdim=True) / n
            var = (((wave - mu) * m) ** 2).sum(1, keepdim=True) / n
            wave = (wave - mu) / torch.sqrt(var + 1e-7) * m
        kw = {"attention_mask": mask.long()} if self.uses_mask else {}
        out = self.model(input_values=wave, output_hidden_states=self.layer != "last", return_dict=True, **kw)
        h = select_hidden(out, self.layer)
        lengths = self.model._get_feat_extract_output_lengths(mask.sum(1))
        frames = torch.arange(h.shape[1], device=h.device)[None, :] < lengths[:, None]
        return h, frames


class Finetuned(_torch_module()):
    """A fusion model with encoders in front of the inputs they make (see the module doc)."""

    def __init__(self, inner, encoders: dict, specs):
        from torch import nn

        super().__init__()
        self.inner = inner
        self.encoder = nn.ModuleDict(encoders)
        self.routes = [(s.key, s.feature, s.kind) for s in specs if s.feature in encoders]
        # What --freeze-layers left trainable: what --unfreeze-after holds and then releases
        # (a plain list, not registered: the parameters are the encoders' own).
        self.tunable = [p for p in self.encoder.parameters() if p.requires_grad]
        for hook in ("loss", "predict_proba", "sweep", "calibrate"):
            if hasattr(inner, hook):
                object.__setattr__(self, hook, getattr(inner, hook))

    def hold_encoders(self, frozen: bool) -> None:
        """Freeze (``--unfreeze-after``'s first epochs) or release the encoders' tunable
        parameters. Frozen, they get no gradient, so the optimizer leaves them (and their
        moments and weight decay) untouched, and the backward pass stops at the encoders."""
        for p in self.tunable:
            p.requires_grad_(not frozen)

    def forward(self, batch: dict):
        batch = dict(batch)
        for key, feature, kind in self.routes:
            h, mask = self.encoder[feature](batch[key], batch[key + ".mask"])
            if kind == "fixed":   # mean over real tokens/frames, as the extractor's "mean" output
                m = mask.unsqueeze(-1).to(h.dtype)
                batch[key] = (h * m).sum(1) / m.sum(1).clamp(min=1)
                del batch[key + ".mask"]
            else:
                batch[key], batch[key + ".mask"] = h, mask
        return self.inner(batch)


def inner_state(state: dict) -> dict:
    """The wrapped fusion's part of a fine-tuned state dict (its own key names)."""
    if not any(k.startswith(ENCODER_PREFIX) for k in state):
        return state
    return {k[len(INNER_PREFIX):]: v for k, v in state.items() if k.startswith(INNER_PREFIX)}


# ----------------------------------------------------------------------------- the run's side
def finetuners(tc) -> dict[str, "TextFinetuner"]:
    """One finetuner per ``--finetune`` feature, built from the run's options (checked here,
    before any data is read)."""
    out = {}
    for feat in tc.finetune:
        if feat not in FINETUNERS:
            raise UsageError(f"--finetune {feat}: cannot be fine-tuned here; choose from {', '.join(FINETUNERS.names())}"
                             )
        model = tc.encoder_model or _default_model(feat)
        if not model:
            raise UsageError(f"--finetune {feat}: name the encoder with --encoder-model (a local folder or a cached id)")
        spec = EncoderSpec(feat, model, tc.encoder_layer, tc.max_tokens,
                           tc.freeze_layers, tc.layer_decay, tc.unfreeze_after, tc.max_seconds)
        out[feat] = FINETUNERS.get(feat)(spec)
    return out


def _default_model(feature: str) -> str:
    from mer.extract.base import EXTRACTORS

    return EXTRACTORS.get(feature).Config().model


def tokenized_set(feature: str, tuner: TextFinetuner, manifest_df, dataset: str | None = None, cache=None):
    """The in-memory feature set of a fine-tuned text input (see the module doc): rows
    without a transcript are marked invalid (the data report counts them). With a
    ``dataset``, the token ids come from (or go to) the input cache (mer.train.inputcache)."""
    import transformers

    from mer.train.data import FeatureSet

    enc = _cached(lambda: _tokenize_rows(tuner, manifest_df), manifest_df, dataset, cache, feature, "token_ids",
                  "text_hash", {"max_tokens": tuner.spec.max_tokens},
                  {"model_files": tuner.ext.weights_hash, "transformers": transformers.__version__}, "tokenised transcripts")
    return FeatureSet(feature, tuner.modality, enc.ids, tuner.outputs(), ragged={"token_ids": (enc.values, enc.offsets)},
                      valid=enc.valid, key=f"finetune:{tuner.ext.weights_hash[:16]}",
                      config={"finetune": True, "model": tuner.spec.model, "max_tokens": tuner.spec.max_tokens},
                      attrs={"finetune": True, "truncated": int(enc.counts.get("truncated", 0)),
                             "without_text": int(enc.counts.get("without_text", 0))})


def _tokenize_rows(tuner: TextFinetuner, manifest_df):
    """Every row's token ids (an empty text for rows without one, marked invalid)."""
    from mer.train.inputcache import Encoded

    ids = manifest_df["id"].astype(str).to_numpy()
    text = manifest_df["text"] if "text" in manifest_df.columns else None
    valid = np.array([text is not None and isinstance(t, str) and t.strip() != "" for t in
                      (text if text is not None else [None] * len(ids))], bool)
    toks, cut = tuner.tokenize([str(t) if v else "" for t, v in zip(text if text is not None else ids, valid)])
    lengths = np.array([len(t) for t in toks], np.int64)
    offsets = np.zeros(len(toks) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = np.concatenate(toks) if toks else np.zeros((0, 1), np.float32)
    return Encoded(ids, values, offsets, valid, {"truncated": int(cut), "without_text": int((~valid).sum())})


def _cached(build, manifest_df, dataset, cache, feature, name, hash_column, settings, identity, what):
    """``build()``, through the input cache when the run names its ``dataset``."""
    if dataset is None:
        return build()
    from mer.common.manifest import content_hashes
    from mer.train.inputcache import cached

    return cached(build, dataset=dataset, cache=cache, feature=feature, name=name,
                  manifest_hash=content_hashes(manifest_df)[hash_column], settings=settings, identity=identity,
                  what=what, ids=manifest_df["id"].astype(str).to_numpy())


def data_spec(spec):
    """The spec the data layer fills for a fine-tuned input: its token ids, under the model
    input's key (so the batch arrives where the wrapper looks)."""
    from mer.train.fusion import InputSpec

    return InputSpec(spec.key, "ragged", 1, spec.modality, 1, spec.feature,
                     "token_ids" if spec.modality == "text" else "samples")


def attach(model, specs, tc, tuners: dict | None = None):
    """The fusion ``model`` with fresh pretrained encoders for ``tc.finetune`` (the model
    itself when nothing is fine-tuned)."""
    if not tc.finetune:
        return model
    tuners = tuners if tuners is not None else finetuners(tc)
    return Finetuned(model, {f: t.module() for f, t in tuners.items()}, specs)


def param_groups(model, tc) -> list[dict]:
    """Encoder parameters at ``--encoder-lr``, the rest at ``--lr`` (frozen ones left out).

    With ``--layer-decay F`` < 1 the encoder gets one group per depth (``layer_depths``): its
    top layer at ``--encoder-lr``, each layer below at F times the one above, the embeddings
    (or the convolutional front end) lowest, as in ELECTRA/BEiT-style fine-tuning."""
    depth = {}
    if getattr(tc, "layer_decay", 1.0) != 1.0:
        for enc in getattr(model, "encoder", {}).values():
            depth.update(layer_depths(enc.model))
    enc, rest = {}, []
    for name, p in model.named_parameters():
        if p.requires_grad:
            if name.startswith(ENCODER_PREFIX):
                enc.setdefault(depth.get(id(p), 0), []).append(p)
            else:
                rest.append(p)
    groups = [{"params": rest, "lr": tc.lr}]
    for d in sorted(enc):
        groups.append({"params": enc[d], "lr": tc.encoder_lr * getattr(tc, "layer_decay", 1.0) ** d, "depth": d})
    return groups


# The input side of an encoder, below its first transformer layer: BERT's embeddings;
# wav2vec2/HuBERT/WavLM's convolutional front end, its projection, the mask embedding and
# the convolutional position embedding.
_INPUT_SIDE = ("embeddings", "feature_extractor", "feature_projection", "masked_spec_embed", "encoder.pos_conv_embed")


def layer_depths(hf_model) -> dict[int, int]:
    """``id(parameter) -> depth`` for --layer-decay: 0 for the top transformer layer, k for
    the k-th below it, the number of layers for the input side (``_INPUT_SIDE``); anything
    else (a pooler, a final layer norm) counts as top (depth 0)."""
    blocks = _blocks(hf_model)
    n = len(blocks)
    out = {}
    for i, block in enumerate(blocks):
        for p in block.parameters():
            out[id(p)] = n - 1 - i
    for name, p in hf_model.named_parameters():
        if id(p) not in out and any(name == s or name.startswith(s + ".") for s in _INPUT_SIDE):
            out[id(p)] = n
    return out


def schedule(opt, tc, steps_per_epoch):
    """A LambdaLR over optimizer steps: linear warm-up over ``--warmup`` (a fraction of all
    steps), then constant, linear or cosine decay to 0; None when it would be constant 1
    (the default: the optimizer's behaviour is then exactly as without a schedule)."""
    import math

    import torch

    if tc.schedule == "constant" and not tc.warmup:
        return None
    if callable(steps_per_epoch):   # counted only when a schedule needs it
        steps_per_epoch = steps_per_epoch()
    total = max(1, tc.epochs * max(1, math.ceil(steps_per_epoch / max(1, tc.accumulate))))
    warm = int(round(tc.warmup * total))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        p = min(1.0, (step - warm) / max(1, total - warm))
        if tc.schedule == "linear":
            return max(0.0, 1.0 - p)
        if tc.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * p))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


# ----------------------------------------------------------------------------- a saved run
def saved_encoder(run, record: dict):
    """An untrained encoder of the run's architecture, from ``encoder/<feature>/config.json``
    (the fold's safetensors then fill its weights); nothing is downloaded or executed."""
    import transformers

    folder = Path(run) / record["assets"]
    if not (folder / "config.json").is_file():
        raise MerError(f"{run}: fine-tuned run without {record['assets']}/config.json (copied incompletely?)")
    cfg = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    if record.get("modality") == "audio":
        return AudioEncoder(transformers.AutoModel.from_config(cfg), record["layer"], 0, record["normalize"],
                            record["uses_mask"])
    return TextEncoder(transformers.AutoModel.from_config(cfg), record["layer"])


def saved_tokenizer(run, record: dict):
    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(Path(run) / record["assets"]), local_files_only=True)


def decode_saved(record: dict, items) -> list[np.ndarray]:
    """Waveforms as training decoded them (``mer predict``); an item without audio is an error."""
    from mer.common.audio import load

    out = []
    for it in items:
        if not it.audio:
            raise UsageError(f"{it.id}: the run fine-tuned {record['feature']!r} on audio; give --audio")
        x = np.asarray(load(it.audio, int(record["sample_rate"]), it.start, it.end), np.float32).reshape(-1)
        x, _ = crop(x, record.get("max_seconds"), int(record["sample_rate"]))   # as training cut it
        out.append(x.reshape(-1, 1))
    return out


def tokenize_saved(run, record: dict, texts: list[str], item_ids: list[str]) -> list[np.ndarray]:
    """Token ids as training made them (same tokenizer, same cap), for ``mer predict``."""
    tok = saved_tokenizer(run, record)
    out = []
    for uid, t in zip(item_ids, texts):
        if t is None or not str(t).strip():
            raise UsageError(f"{uid}: the run fine-tuned {record['feature']!r} on transcripts; give --text")
        ids = tok([str(t)], truncation=True, max_length=int(record["max_tokens"]))["input_ids"][0]
        out.append(np.asarray(ids, np.float32).reshape(-1, 1))
    return out
