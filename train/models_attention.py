"""Attention fusion (seed 002) and weighted attentive fusion (seed 000).

``attention`` - Makhmudov, Kultimuratov, Cho (2024), "Enhancing Multimodal Emotion
Recognition through Attention Mechanisms in BERT and CNN Architectures", section 3.3.
Every input is brought to the same size ``n`` (paper: 250) by its branch, the columns are
stacked into ``F = [F_1, ..., F_k]`` in ``R^{n x k}`` (k = 2 in the paper: speech, text; here
one column per chosen input) and fused by equations (1)-(3):

    L = tanh(P F)             (1)   P in R^{n x n}
    v = softmax(w^T L)        (2)   w in R^n, v in R^k
    M = F v^T                 (3)   M in R^n

then an FC layer and the softmax classifier. Branches (section 3.1, 3.2):
- fixed (pooled) inputs: an FC layer to ``n`` (the paper's "FC layer of size n");
- ragged audio (mel-spectrogram frames, or any frame-level audio feature): the mel CNN of
  ``mer.train.layers.MelCNN`` (parallel (10,2) / (2,8) convolutions, 4 conv layers to 80
  channels, BN + ReLU, max-pooling), mask-aware, then an FC to ``n``;
- ragged text (BERT tokens): FC(100) -> Bi-GRU(100) over the real tokens (``layers.MaskedRNN``) -> FC to ``n``.

With ``--context dialog`` (conversation-level, as the paper runs it: the Bi-GRU "encode[s]
all utterances, capturing past and future dialogue information"), the text module is
FC(100) -> Bi-GRU(100) over the utterances of the dialogue -> FC to ``n``, one BERT vector
per utterance (tokens mean-pooled over real tokens first); the speech CNN and the fusion
(1)-(3) stay per utterance, and the classifier predicts every utterance.

``weighted`` - Nouisser, Khediri, Kherallah, Charfi (2025), "ATFSC: Audio-Text Fusion for
Sentiment Classification", section 4. Frozen BERT text features and an MFCC 2-D CNN
(conv + BN + ReLU) are projected to ``d``, merged by weighted attentive fusion with
learnable modality weights, normalised with BertLayerNorm (LayerNorm, eps 1e-12), and
classified by one linear layer (+ softmax in the loss). The paper does not spell out the
weighting; we use ``alpha = softmax_m(b_m + u^T tanh(W h_m))``: ``b_m`` are the learnable
per-modality weights, the second term makes them attentive (per utterance); with
``attentive=False`` only the learnable weights remain. Ragged text is mean-pooled over real
tokens (the paper classifies utterance-level BERT features).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mer.train.fusion import FUSIONS
from mer.train.layers import (
    FusionBase,
    MelCNN,
    dialog_mask,
    to_dialogs,
    MfccCNN,
    MaskedRNN,
    check_dims,
    check_left_aligned,
    get_mask,
    masked_mean,
    require_modalities,
)


class _TextGRUBranch(nn.Module):
    """Seed 002 text module: FC(100) -> Bi-GRU(hidden 100) -> FC, over the real tokens only."""

    def __init__(self, d_in: int, d_out: int, fc: int, gru: int, dropout: float):
        super().__init__()
        self.fc_in = nn.Linear(d_in, fc)
        self.gru = MaskedRNN(fc, gru, cell="gru", bidirectional=True)
        self.drop = nn.Dropout(dropout)
        self.fc_out = nn.Linear(self.gru.out_dim, d_out)

    def forward(self, x, mask):
        _, last = self.gru(self.drop(torch.relu(self.fc_in(x))), mask)
        return self.fc_out(self.drop(last))


class _DialogTextGRU(_TextGRUBranch):
    """Seed 002 text module over a dialogue: FC(100) -> Bi-GRU(100) across the utterances -> FC.

    The same layers as the within-utterance branch (so its weights load either way); only the
    sequence the GRU runs over differs."""

    def forward(self, v, dmask):
        """``v`` [N, d_in] utterance vectors, ``dmask`` [D, U] -> [N, d_out]."""
        h = to_dialogs(self.drop(torch.relu(self.fc_in(v))), dmask)
        out, _ = self.gru(h, dmask, "dialogue")
        return self.fc_out(self.drop(out[dmask]))


@FUSIONS.register("attention")
class AttentionFusion(FusionBase):
    """Attention fusion of seed 002, equations (1)-(3); see the module docstring."""

    @dataclass
    class Config:
        n: int = 250              # common size of all modality vectors (paper: best at 250)
        fc: int = 100             # FC after the fused vector (paper: size not given)
        text_fc: int = 100        # text module: BERT -> FC(100)
        text_gru: int = 100       # text module: Bi-GRU hidden size 100
        cnn_first: int = 8        # mel CNN: channels of each parallel first conv (8 + 8 = 16)
        cnn_channels: tuple = (32, 48, 64, 80)
        dropout: float = 0.3      # paper: dropout 0.3 (text module)

    wants = "sequence"

    @classmethod
    def check_inputs(cls, inputs) -> None:
        require_modalities("attention", inputs, audio=1, text=1)

    contexts = ("none", "dialog")

    def __init__(self, inputs, n_out: int, config=None, context: str = "none"):
        super().__init__(inputs, n_out, config)
        c = self.config
        self.context = context
        branches = []
        for s in self.inputs:
            if context == "dialog" and s.modality == "text":
                branches.append(_DialogTextGRU(s.dim, c.n, c.text_fc, c.text_gru, c.dropout))
            elif s.kind == "fixed":
                branches.append(nn.Linear(s.dim, c.n))
            elif s.modality == "audio":
                branches.append(MelCNN(s.dim, c.n, channels=tuple(c.cnn_channels), first=c.cnn_first,
                                       dropout=c.dropout))
            else:
                branches.append(_TextGRUBranch(s.dim, c.n, c.text_fc, c.text_gru, c.dropout))
        self.branches = nn.ModuleList(branches)
        self.P = nn.Linear(c.n, c.n, bias=False)     # P_Mf in R^{n x n}
        self.w = nn.Linear(c.n, 1, bias=False)       # w_Mf in R^n
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Sequential(nn.Linear(c.n, c.fc), nn.ReLU(), nn.Dropout(c.dropout), nn.Linear(c.fc, n_out))
        self.last_weights: torch.Tensor | None = None   # v of the last batch, for inspection

    def modality_vectors(self, batch) -> torch.Tensor:
        """``F`` as ``[B, k, n]`` (one row per input)."""
        check_dims(batch, self.inputs)
        dmask = dialog_mask(batch, "attention") if self.context == "dialog" else None
        cols = []
        for s, br in zip(self.inputs, self.branches):
            x = batch[s.key]
            if isinstance(br, _DialogTextGRU):
                v = x if s.kind == "fixed" else masked_mean(x, get_mask(batch, s.key, x))
                cols.append(br(v, dmask))
            elif s.kind == "fixed":
                cols.append(br(x))
            else:
                m = get_mask(batch, s.key, x)
                if isinstance(br, _TextGRUBranch):
                    check_left_aligned(m, s.key)
                cols.append(br(x, m))
        return torch.stack(cols, dim=1)

    def forward(self, batch) -> torch.Tensor:
        F_ = self.modality_vectors(batch)                  # [B, k, n]
        L = torch.tanh(self.P(F_))                         # (1)  [B, k, n]
        v = torch.softmax(self.w(L).squeeze(-1), dim=1)    # (2)  [B, k]
        M = (F_ * v[..., None]).sum(dim=1)                 # (3)  [B, n]
        self.last_weights = v.detach()
        return self.head(self.drop(M))


@FUSIONS.register("weighted")
class WeightedFusion(FusionBase):
    """Weighted attentive fusion of seed 000 (ATFSC); see the module docstring."""

    @dataclass
    class Config:
        d: int = 256              # common projection size (paper: not given)
        cnn_channels: tuple = (32, 64)
        attentive: bool = True    # per-utterance attention on top of the learnable weights
        dropout: float = 0.1      # BERT's default hidden dropout
        eps: float = 1e-12        # BertLayerNorm epsilon

    wants = "sequence"

    @classmethod
    def check_inputs(cls, inputs) -> None:
        require_modalities("weighted", inputs, audio=1, text=1)

    def __init__(self, inputs, n_out: int, config=None):
        super().__init__(inputs, n_out, config)
        c = self.config
        branches = []
        for s in self.inputs:
            if s.kind == "ragged" and s.modality == "audio":
                branches.append(MfccCNN(s.dim, c.d, channels=tuple(c.cnn_channels)))
            else:   # fixed vectors and (mean-pooled) BERT tokens
                branches.append(nn.Linear(s.dim, c.d))
        self.branches = nn.ModuleList(branches)
        self.modality_weight = nn.Parameter(torch.zeros(len(self.inputs)))   # b_m, learnable
        self.att = nn.Sequential(nn.Linear(c.d, c.d), nn.Tanh(), nn.Linear(c.d, 1, bias=False)) if c.attentive else None
        self.norm = nn.LayerNorm(c.d, eps=c.eps)
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(c.d, n_out)
        self.last_weights: torch.Tensor | None = None

    def forward(self, batch) -> torch.Tensor:
        check_dims(batch, self.inputs)
        hs = []
        for s, br in zip(self.inputs, self.branches):
            x = batch[s.key]
            if s.kind == "fixed":
                hs.append(br(x))
            elif isinstance(br, MfccCNN):
                hs.append(br(x, get_mask(batch, s.key, x)))
            else:
                hs.append(br(masked_mean(x, get_mask(batch, s.key, x))))
        H = torch.stack(hs, dim=1)                                  # [B, k, d]
        scores = self.modality_weight[None, :].expand(H.shape[0], -1)
        if self.att is not None:
            scores = scores + self.att(H).squeeze(-1)
        a = torch.softmax(scores, dim=1)
        self.last_weights = a.detach()
        fused = self.norm((H * a[..., None]).sum(dim=1))
        return self.out(self.drop(fused))
