"""``openl3``: the OpenL3 audio embedding network (Cramer et al., ICASSP 2019) in PyTorch.

Architecture, as in the reference implementation (``openl3.models``, Keras + Kapre):

  48 kHz mono, 1-second windows every ``hop`` seconds (audio centred: half a window of zeros
  in front; zeros at the end so every sample is covered)
  -> Kapre Melspectrogram: STFT n_fft=2048, hop 242, periodic Hann, 'same' padding (199
     frames), power spectrum -> HTK mel filterbank with Slaney area norm (128 or 256 bands,
     0-24 kHz) -> square root (``power_melgram=1``) -> 10*log10(max(x, 1e-10)) minus its
     per-window maximum, floored at -80 dB
  -> BatchNorm
  -> 3 x [conv3x3 -> BN -> ReLU -> conv3x3 -> BN -> ReLU -> maxpool 2x2], 64/128/256 channels
  -> conv3x3 (512) -> BN -> ReLU -> conv3x3 (512) ("audio_embedding_layer", no BN/ReLU)
  -> max-pool to 512 dims (the whole map) or 6,144 dims (4 x 3 x 512, Keras flatten order)

All Keras BatchNorm layers use epsilon 1e-3 (PyTorch's default is 1e-5; it matters for parity).

Weights: there is no download, ever. Point ``--openl3.weights`` (or ``MER_OPENL3_WEIGHTS``) at
a PyTorch state_dict of :class:`OpenL3Audio` saved as ``.safetensors`` (preferred) or
``.pt``/``.pth`` (loaded with ``weights_only=True``). Convert an official Keras weight file
(``openl3_audio_<mel128|mel256>_<music|env>.h5`` from the openl3 release) once with::

    python -m mer.extract.openl3 convert openl3_audio_mel256_music.h5 openl3_mel256_music.safetensors

which maps the Keras layers by order (8 conv, 8 batch-norm), transposes the kernels and
records the input representation and content type in the file's metadata, which the loader
checks against ``--openl3.input_repr`` / ``--openl3.content_type``.

``--openl3.random_weights true`` runs the same network with seeded random weights, for tests and
benchmarks only; the store identity then says so in plain words.
"""
from __future__ import annotations

import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mer.common.errors import MerError, UsageError, require
from mer.extract.base import EXTRACTORS, ExtractorConfig, OutputSpec, Utterance
from mer.extract.neural import NeuralExtractor
from mer.extract.torchutil import dtype_name, hash_file, pooled_stats, shared_model

SAMPLE_RATE = 48000
WINDOW = SAMPLE_RATE      # 1-second windows
N_FFT = 2048
STFT_HOP = 242
N_FRAMES = -(-WINDOW // STFT_HOP)   # 199: Keras 'same' padding keeps ceil(n / stride) frames
ENV_VAR = "MER_OPENL3_WEIGHTS"
CHANNELS = (64, 128, 256, 512)
# Final max-pool sizes from openl3.models (freq x time), per input representation and size.
POOL_SIZES = {"mel128": {512: (16, 24), 6144: (4, 8)}, "mel256": {512: (32, 24), 6144: (8, 8)}}
N_MELS = {"mel128": 128, "mel256": 256}
CONTENT_TYPES = ("music", "env")
RANDOM_SEED = 0


def _torch_modules():
    torch = require("torch", "audio")
    return torch, torch.nn


def build_network(input_repr: str = "mel256", embedding_size: int = 6144):
    """The OpenL3 audio network as a torch ``nn.Module`` (weights uninitialised/random)."""
    torch, nn = _torch_modules()

    class LogMelKapre(nn.Module):
        """Kapre 0.1's Melspectrogram(power_melgram=1, return_decibel_melgram=True, htk=True)."""

        def __init__(self, n_mels: int):
            super().__init__()
            import librosa

            with warnings.catch_warnings():
                # 256 HTK bands over 1,025 FFT bins leave some low bands empty; Kapre's filterbank
                # has the same empty bands, and the published weights were trained with them.
                warnings.simplefilter("ignore", UserWarning)
                fb = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels, fmin=0.0,
                                         fmax=SAMPLE_RATE / 2, htk=True, norm="slaney")
            # Buffers, not parameters: fixed and rebuilt here, so weight files never carry them.
            self.register_buffer("mel_fb", torch.from_numpy(fb.astype(np.float32)), persistent=False)
            self.register_buffer("window", torch.hann_window(N_FFT, periodic=True), persistent=False)
            total = max((N_FRAMES - 1) * STFT_HOP + N_FFT - WINDOW, 0)
            self.pad = (total // 2, total - total // 2)   # TensorFlow 'same': extra sample at the end

        def forward(self, x):  # x: [B, 48000] -> [B, 1, n_mels, 199]
            x = torch.nn.functional.pad(x, self.pad)
            spec = torch.stft(x, N_FFT, hop_length=STFT_HOP, window=self.window, center=False, return_complex=True)
            power = spec.real.square() + spec.imag.square()
            mel = torch.matmul(self.mel_fb, power).sqrt()
            db = 10.0 * torch.log10(mel.clamp(min=1e-10))
            db = db - db.amax(dim=(1, 2), keepdim=True)
            return db.clamp(min=-80.0).unsqueeze(1)

    class OpenL3Audio(nn.Module):
        def __init__(self):
            super().__init__()
            self.input_repr = input_repr
            self.embedding_size = embedding_size
            self.frontend = LogMelKapre(N_MELS[input_repr])
            self.bn_input = nn.BatchNorm2d(1, eps=1e-3)
            layers: list = []
            cin = 1
            for b, c in enumerate(CHANNELS):
                last = b == len(CHANNELS) - 1
                layers += [nn.Conv2d(cin, c, 3, padding=1), nn.BatchNorm2d(c, eps=1e-3), nn.ReLU(inplace=True)]
                layers += [nn.Conv2d(c, c, 3, padding=1)]
                if not last:
                    layers += [nn.BatchNorm2d(c, eps=1e-3), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2)]
                cin = c
            self.features = nn.Sequential(*layers)
            self.pool = nn.MaxPool2d(POOL_SIZES[input_repr][embedding_size])

        def forward(self, x):  # x: [B, 48000] float32 -> [B, embedding_size]
            with torch.autocast(x.device.type, enabled=False):
                m = self.frontend(x.float())
            y = self.pool(self.features(self.bn_input(m)))
            # Keras flattens channels-last (freq, time, channel): keep that order for parity.
            return y.permute(0, 2, 3, 1).reshape(y.shape[0], -1)

    return OpenL3Audio()


def conv_and_bn_layers(model) -> tuple[list, list]:
    """The network's conv and batch-norm layers in forward order (the converter's map)."""
    _, nn = _torch_modules()
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    bns = [model.bn_input] + [m for m in model.features if isinstance(m, nn.BatchNorm2d)]
    return convs, bns


def random_init(model) -> None:
    """Seeded He-normal convs (Keras' he_normal) and default BN: deterministic across runs."""
    torch, nn = _torch_modules()
    g = torch.Generator().manual_seed(RANDOM_SEED)
    convs, _ = conv_and_bn_layers(model)
    with torch.no_grad():
        for c in convs:
            fan_in = c.weight[0].numel()
            c.weight.copy_(torch.randn(c.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            c.bias.zero_()


def read_weights(path: Path) -> tuple[dict, dict]:
    """(state_dict, metadata) from a .safetensors or .pt/.pth file."""
    torch, _ = _torch_modules()
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                sd = {k: f.get_tensor(k) for k in f.keys()}
            return sd, meta
        if suffix in (".pt", ".pth", ".bin"):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
            if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
                obj = obj["state_dict"]
            if not isinstance(obj, dict):
                raise MerError(f"{path}: expected a state_dict (a dict of tensors), got {type(obj).__name__}")
            return obj, {}
    except MerError:
        raise
    except Exception as e:  # noqa: BLE001 - any read failure is the file's fault
        raise MerError(f"{path}: cannot read OpenL3 weights ({str(e).splitlines()[0][:200]})") from None
    if suffix == ".h5":
        raise MerError(
            f"{path}: this is a Keras weight file; convert it once with "
            f"`python -m mer.extract.openl3 convert {path} <out>.safetensors`"
        )
    raise MerError(f"{path}: unsupported OpenL3 weight format {suffix!r}; use .safetensors, .pt or .pth")


@dataclass
class OpenL3Config(ExtractorConfig):
    input_repr: str = "mel256"     # mel128 | mel256
    content_type: str = "music"    # music | env (must match the weights)
    embedding_size: int = 6144     # 512 | 6144 (seed 004 uses 6,144)
    hop: float = 0.1               # seconds between 1-second windows
    center: bool = True            # pad half a window in front, as openl3 does by default
    weights: str = ""              # state_dict file; empty = $MER_OPENL3_WEIGHTS
    random_weights: bool = False   # TESTING ONLY: seeded random weights instead of a file
    batch_size: int = 128          # 1-second windows per forward pass (halved on GPU OOM)
    dtype: str = "auto"            # auto (fp32 on CPU, bf16/fp16 on GPU) | float32 | float16 | bfloat16


def _validate(c: OpenL3Config) -> None:
    if c.input_repr not in N_MELS:
        raise UsageError(f"--openl3.input_repr {c.input_repr!r}: choose mel128 or mel256")
    if c.content_type not in CONTENT_TYPES:
        raise UsageError(f"--openl3.content_type {c.content_type!r}: choose music or env")
    if int(c.embedding_size) not in (512, 6144):
        raise UsageError(f"--openl3.embedding_size {c.embedding_size}: choose 512 or 6144")
    if not 0 < float(c.hop) <= 10:
        raise UsageError(f"--openl3.hop {c.hop}: must be a positive number of seconds")
    if int(round(c.hop * SAMPLE_RATE)) < 1:
        raise UsageError(f"--openl3.hop {c.hop}: shorter than one sample at 48 kHz")


def weights_path(c: OpenL3Config) -> Path | None:
    w = (c.weights or os.environ.get(ENV_VAR, "")).strip()
    return Path(w).expanduser() if w else None


MISSING_WEIGHTS = (
    "openl3 needs pretrained weights and none are shipped or downloaded: pass --openl3.weights FILE "
    f"or set {ENV_VAR}=FILE (a .safetensors/.pt state_dict; convert the official Keras .h5 with "
    "`python -m mer.extract.openl3 convert IN.h5 OUT.safetensors`)"
)


@EXTRACTORS.register("openl3")
class OpenL3Extractor(NeuralExtractor):
    modality = "audio"
    Config = OpenL3Config
    sample_rate = SAMPLE_RATE
    batch_hint = 32

    def __init__(self, config: OpenL3Config | None = None, device: str = "cpu"):
        c = config or OpenL3Config()
        _validate(c)
        # Fail at once, before any audio is decoded, when there is nothing to load.
        self.weights = None if c.random_weights else weights_path(c)
        if not c.random_weights:
            if self.weights is None:
                raise MerError(MISSING_WEIGHTS)
            if not self.weights.is_file():
                raise MerError(f"{self.weights}: OpenL3 weight file not found (from --openl3.weights or ${ENV_VAR})")
        super().__init__(c, device)
        self.hop_samples = int(round(float(c.hop) * SAMPLE_RATE))
        self._hash = None

    @classmethod
    def missing(cls, config=None) -> str | None:
        c = cls.as_config(config)
        if c.random_weights:
            return None
        p = weights_path(c)
        if p is None or not p.is_file():
            return ("needs the OpenL3 weights" + ("" if p is None else f" (no file {p})") + ", which cannot be "
                    "downloaded here: convert the official Keras file (`python -m mer.extract.openl3 convert "
                    "openl3_audio_mel256_music.h5 openl3.safetensors`) and pass `--openl3.weights openl3.safetensors` "
                    f"(or set {ENV_VAR})")
        return None

    def identity(self) -> dict[str, Any]:
        prec = dtype_name(self.torch_dtype)   # "auto" is fp32 on CPU, bf16/fp16 on GPU
        if self.config.random_weights:
            return {"weights": f"RANDOM (seed {RANDOM_SEED}): NOT a pretrained OpenL3 model, for tests/benchmarks only",
                    "compute_dtype": prec}
        if self._hash is None:
            self._hash = hash_file(self.weights)
        return {"weights_file": self.weights.name, "weights_hash": self._hash,
                "frontend": "kapre-0.1 logmel, 1 s windows", "compute_dtype": prec}

    def versions(self) -> dict[str, str]:
        import librosa
        import torch

        return {"torch": torch.__version__, "librosa": librosa.__version__}

    def outputs(self) -> dict[str, OutputSpec]:
        d = int(self.config.embedding_size)
        rate = 1.0 / float(self.config.hop)
        return {
            "frames": OutputSpec("ragged", d, rate, "float32", "one embedding per 1-second window"),
            "mean": OutputSpec("fixed", d, None, "float32", "mean of the window embeddings"),
            "std": OutputSpec("fixed", d, None, "float32", "standard deviation of the window embeddings"),
        }

    # -- model
    def _load(self):
        c = self.config
        tag = "random" if c.random_weights else self.identity()["weights_hash"]
        key = ("openl3", c.input_repr, int(c.embedding_size), c.content_type, tag, self.device)
        return shared_model(key, self._load_uncached)

    def _load_uncached(self):
        c = self.config
        model = build_network(c.input_repr, int(c.embedding_size))
        if c.random_weights:
            random_init(model)
        else:
            sd, meta = read_weights(self.weights)
            for field, want in (("input_repr", c.input_repr), ("content_type", c.content_type)):
                have = meta.get(field)
                if have and have != want:
                    raise MerError(
                        f"{self.weights}: weights are for {field}={have}, but --openl3.{field} is {want}"
                    )
            missing, unexpected = model.load_state_dict(sd, strict=False)
            # num_batches_tracked is bookkeeping that converted files may lack; all else must match.
            missing = [k for k in missing if not k.endswith("num_batches_tracked")]
            if missing or unexpected:
                raise MerError(
                    f"{self.weights}: not an OpenL3 state_dict for this network "
                    f"(missing: {missing[:4]}{'...' if len(missing) > 4 else ''}; "
                    f"unexpected: {unexpected[:4]}{'...' if len(unexpected) > 4 else ''})"
                )
        model.eval().requires_grad_(False)
        return model.to(self.device)

    # -- extraction
    def windows(self, x: np.ndarray) -> np.ndarray:
        """openl3's framing: centre, pad the end to a whole number of hops, 1-second frames."""
        if self.config.center:
            x = np.pad(x, (WINDOW // 2, 0))
        n = len(x)
        if n < WINDOW:
            pad = WINDOW - n
        else:
            pad = int(np.ceil((n - WINDOW) / self.hop_samples)) * self.hop_samples - (n - WINDOW)
        if pad > 0:
            x = np.pad(x, (0, pad))
        return np.lib.stride_tricks.sliding_window_view(x, WINDOW)[:: self.hop_samples]

    def process(self, batch: list[Utterance]) -> list[dict[str, np.ndarray]]:
        if not batch:
            return []
        out = []
        for frames in self.embed_windows([u.id for u in batch], [self.windows(self._audio(u)) for u in batch]):
            mean, std = pooled_stats(frames)
            out.append({"frames": frames, "mean": mean, "std": std})
        return out


# --------------------------------------------------------------------------- Keras conversion

_BN_KEYS = ("gamma", "beta", "moving_mean", "moving_variance")


def _keras_layers(f) -> list[tuple[str, dict[str, np.ndarray]]]:
    """[(layer name, {weight short name: array})] in the file's layer order."""
    root = f["model_weights"] if "model_weights" in f else f
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in root.attrs.get("layer_names", [])]
    if not names:
        raise MerError(f"{f.filename}: no 'layer_names' attribute: not a Keras weight file")
    out = []
    for name in names:
        g = root[name]
        wnames = [n.decode() if isinstance(n, bytes) else str(n) for n in g.attrs.get("weight_names", [])]
        ws = {}
        for wn in wnames:
            short = re.sub(r":\d+$", "", wn.split("/")[-1])
            ws[short] = np.asarray(g[wn])
        if ws:
            out.append((name, ws))
    return out


def convert_keras_h5(h5_path, out_path, input_repr: str | None = None, content_type: str | None = None) -> Path:
    """Convert an official OpenL3 Keras weight file to this module's safetensors state_dict.

    The Keras layers are matched by order: 8 Conv2D layers (4-D ``kernel`` + ``bias``) and 8
    BatchNormalization layers (gamma/beta/moving mean/variance; the first is the 1-channel one
    after the spectrogram). The Kapre spectrogram layer's fixed DFT/mel weights are skipped: the
    front end is rebuilt from its parameters. Shapes are checked, with the layer in the message.
    """
    h5py = require("h5py", "store")
    torch, _ = _torch_modules()
    from safetensors.torch import save_file

    h5_path, out_path = Path(h5_path), Path(out_path)
    m = re.search(r"(mel128|mel256|linear)_(music|env)", h5_path.name)
    input_repr = input_repr or (m.group(1) if m else None)
    content_type = content_type or (m.group(2) if m else None)
    if input_repr not in N_MELS:
        raise UsageError(f"{h5_path}: say --input-repr mel128 or mel256 (linear-spectrogram models are not supported)")
    if content_type not in CONTENT_TYPES:
        raise UsageError(f"{h5_path}: say --content-type music or env")
    with h5py.File(h5_path, "r") as f:
        layers = _keras_layers(f)
    convs_k = [(n, w) for n, w in layers if "kernel" in w and w["kernel"].ndim == 4]
    bns_k = [(n, w) for n, w in layers if all(k in w for k in _BN_KEYS)]
    model = build_network(input_repr, 512)
    convs, bns = conv_and_bn_layers(model)
    if len(convs_k) != len(convs) or len(bns_k) != len(bns):
        raise MerError(
            f"{h5_path}: found {len(convs_k)} conv and {len(bns_k)} batch-norm layers, "
            f"expected {len(convs)} and {len(bns)}: not an OpenL3 audio model"
        )
    sd = {}
    names = {id(mod): n for n, mod in model.named_modules()}
    for (kn, w), mod in zip(convs_k, convs):
        k = np.transpose(w["kernel"], (3, 2, 0, 1))   # (kh, kw, in, out) -> (out, in, kh, kw)
        if k.shape != tuple(mod.weight.shape):
            raise MerError(f"{h5_path}: layer {kn} kernel {w['kernel'].shape} does not fit {tuple(mod.weight.shape)}")
        p = names[id(mod)]
        sd[f"{p}.weight"] = torch.from_numpy(np.ascontiguousarray(k, dtype=np.float32))
        sd[f"{p}.bias"] = torch.from_numpy(np.asarray(w.get("bias", np.zeros(k.shape[0])), dtype=np.float32))
    for (kn, w), mod in zip(bns_k, bns):
        if w["gamma"].shape != (mod.num_features,):
            raise MerError(f"{h5_path}: layer {kn} has {w['gamma'].shape[0]} channels, expected {mod.num_features}")
        p = names[id(mod)]
        for ours, theirs in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"), ("running_var", "moving_variance")):
            sd[f"{p}.{ours}"] = torch.from_numpy(np.asarray(w[theirs], dtype=np.float32))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(out_path), metadata={
        "format": "mer-openl3", "input_repr": input_repr, "content_type": content_type, "source": h5_path.name,
    })
    return out_path


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m mer.extract.openl3", description="OpenL3 weight tools")
    sub = ap.add_subparsers(dest="cmd", required=True)
    cv = sub.add_parser("convert", help="convert an official OpenL3 Keras .h5 weight file to .safetensors")
    cv.add_argument("h5")
    cv.add_argument("out")
    cv.add_argument("--input-repr", choices=sorted(N_MELS))
    cv.add_argument("--content-type", choices=CONTENT_TYPES)
    a = ap.parse_args(argv)
    try:
        p = convert_keras_h5(a.h5, a.out, a.input_repr, a.content_type)
    except MerError as e:
        print(f"error: {e}", file=sys.stderr)  # this module's own command line, as mer.common.cli's
        return 1
    from mer.common import console

    console.result(str(p))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
