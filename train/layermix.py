"""Learned layer mixing (SUPERB, Yang et al. 2021): a store extracted with
``--bert.layer all`` or ``--wav2vec.layer all`` holds every hidden state of the encoder
stacked along the feature axis; the model sees ``sum_l softmax(w)_l * h_l`` with one learned
weight per layer and input, trained with the fusion model.

``MixedInputs`` wraps any fusion model: it mixes each stacked input of the batch down to one
layer's width and hands the batch on, so no fusion needs to know about layers. The weights
start equal (logits 0); the run directory gets their softmax per fold as ``layer_weights.png``
and in ``metrics.json`` (``layer_weights``).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

# State-dict names of the mixing parameters: ``mix.<n>.raw`` (the n-th stacked input of the
# model's specs, in order; dots in input keys cannot be module names).
PREFIX = "mix."
# The logits are LOGIT_SCALE * raw. Adam moves a parameter by about lr per step whatever its
# scale, so the scale makes the layer weights move ten times faster than the model's weights:
# at the default lr 1e-3, a few hundred steps could otherwise shift a logit by only ~0.2,
# leaving the weights near uniform however clearly one layer carries the label.
LOGIT_SCALE = 10.0


class LayerMix(nn.Module):
    def __init__(self, layers: int, dim: int):
        super().__init__()
        self.layers, self.dim = int(layers), int(dim)
        self.raw = nn.Parameter(torch.zeros(self.layers))

    def weights(self) -> torch.Tensor:
        return torch.softmax(LOGIT_SCALE * self.raw, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [..., L * H] -> [..., L, H] -> weighted sum over L
        stacked = x.reshape(*x.shape[:-1], self.layers, self.dim)
        return torch.einsum("...lh,l->...h", stacked, self.weights().to(stacked.dtype))


class MixedInputs(nn.Module):
    """``inner`` sees every stacked input mixed; its optional hooks (loss, predict_proba,
    sweep) are passed through so the trainer treats the wrapper as the model itself."""

    def __init__(self, inner: nn.Module, specs):
        super().__init__()
        self.inner = inner
        mixed = [s for s in specs if getattr(s, "layers", 1) > 1]
        self.keys = [s.key for s in mixed]
        self.mix = nn.ModuleList([LayerMix(s.layers, s.dim) for s in mixed])
        for hook in ("loss", "predict_proba", "sweep"):
            if hasattr(inner, hook):
                object.__setattr__(self, hook, getattr(inner, hook))

    def forward(self, batch: dict) -> torch.Tensor:
        batch = dict(batch)
        for key, m in zip(self.keys, self.mix):
            batch[key] = m(batch[key])
        return self.inner(batch)

    def layer_weights(self) -> dict[str, list[float]]:
        return {k: m.weights().detach().cpu().tolist() for k, m in zip(self.keys, self.mix)}


def wrap(model: nn.Module, specs) -> nn.Module:
    """The model itself when no input is a layer stack, else wrapped in ``MixedInputs``."""
    if any(getattr(s, "layers", 1) > 1 for s in specs):
        return MixedInputs(model, specs)
    return model


def weights_from_state(state: dict, specs) -> dict[str, list[float]]:
    """Softmax layer weights per input key from a saved state dict (empty if none)."""
    mixed = [s for s in specs if getattr(s, "layers", 1) > 1]
    out = {}
    for i, s in enumerate(mixed):
        t = state.get(f"{PREFIX}{i}.raw")
        if t is not None:
            z = LOGIT_SCALE * np.asarray(t, np.float64)
            w = np.exp(z - z.max())
            out[s.key] = (w / w.sum()).tolist()
    return out
