"""Baseline fusions: ``concat`` (early fusion) and ``late`` (decision-level fusion).

Both take any number of inputs, so unimodal baselines are the same models with one
feature: ``--features bert --fusion concat`` is the text-only MLP, ``--features mfcc`` the
audio-only one. Ragged inputs are reduced by a masked mean (padding never counts), so
these models also run on sequence outputs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mer.train.fusion import FUSIONS, InputSpec
from mer.train.layers import input_as_vector as pooled
from mer.train.layers import mlp


@dataclass
class ConcatConfig:
    hidden: int = 256
    layers: int = 1          # hidden layers of the MLP (0 = a linear classifier)
    dropout: float = 0.3
    input_dropout: float = 0.1


@FUSIONS.register("concat")
class ConcatFusion(nn.Module):
    """Early fusion: pooled vectors of every input concatenated, then an MLP."""

    Config = ConcatConfig
    wants = "pooled"

    def __init__(self, inputs: list[InputSpec], n_out: int, config: ConcatConfig | None = None):
        super().__init__()
        self.inputs, self.config = list(inputs), config or ConcatConfig()
        c = self.config
        self.drop_in = nn.Dropout(c.input_dropout)
        self.net = mlp(sum(i.dim for i in self.inputs), c.hidden, n_out, c.dropout, layers=c.layers)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.net(self.drop_in(torch.cat([pooled(batch, i) for i in self.inputs], dim=-1)))


@dataclass
class LateConfig:
    hidden: int = 128
    layers: int = 1
    dropout: float = 0.3
    combine: str = "mean"     # "mean": plain average of probabilities; "weighted": learned softmax weights
    aux_weight: float = 1.0   # weight of each branch's own loss (each classifier also learns alone)


@FUSIONS.register("late")
class LateFusion(nn.Module):
    """Late fusion: one classifier per modality, combined at the decision level.

    Classification: the output is log of the (weighted) mean of the branch probabilities,
    so softmax of it is that mean. Regression: the (weighted) mean of branch predictions.
    """

    Config = LateConfig
    wants = "pooled"

    def __init__(self, inputs: list[InputSpec], n_out: int, config: LateConfig | None = None,
                 regression: bool | None = None):
        super().__init__()
        self.inputs, self.config, self.n_out = list(inputs), config or LateConfig(), n_out
        # n_out targets (multi-target regression) or classes; one output is regression
        self.regression = (n_out == 1) if regression is None else bool(regression)
        c = self.config
        if c.combine not in ("mean", "weighted"):
            raise ValueError(f"late fusion: combine must be 'mean' or 'weighted', not {c.combine!r}")
        self.modalities = sorted({i.modality for i in self.inputs})
        self.groups = {m: [i for i in self.inputs if i.modality == m] for m in self.modalities}
        self.branches = nn.ModuleDict({
            m: mlp(sum(i.dim for i in g), c.hidden, n_out, c.dropout, layers=c.layers) for m, g in self.groups.items()
        })
        self.weight_logits = nn.Parameter(torch.zeros(len(self.modalities)), requires_grad=c.combine == "weighted")
        self._branch_out: list[torch.Tensor] = []

    def modality_weights(self) -> torch.Tensor:
        return torch.softmax(self.weight_logits, 0)

    def forward(self, batch: dict) -> torch.Tensor:
        outs = [self.branches[m](torch.cat([pooled(batch, i) for i in g], -1)) for m, g in self.groups.items()]
        self._branch_out = outs  # read by loss(): the per-branch auxiliary terms
        w = self.modality_weights()
        if self.regression:
            return sum(wi * o for wi, o in zip(w, outs))
        logp = torch.stack([torch.log_softmax(o, -1) for o in outs], 0)        # [M, B, C]
        return torch.logsumexp(logp + torch.log(w)[:, None, None], dim=0)      # log sum_m w_m p_m

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.regression:
            f = lambda o: nn.functional.mse_loss(o.squeeze(-1), y.float())  # noqa: E731
        else:
            # log_softmax is the identity on the combined log-probabilities, so one f serves both.
            f = lambda o: nn.functional.nll_loss(torch.log_softmax(o, -1), y)  # noqa: E731
        total = f(logits)
        if self.config.aux_weight and len(self._branch_out) > 1:
            total = total + self.config.aux_weight * sum(f(o) for o in self._branch_out) / len(self._branch_out)
        return total
