"""Masked multimodal attention and multimodal interaction (seed 001).

Voloshina, Makhnytkina (2023), "Multimodal Emotion Recognition and Sentiment Analysis Using
Masked Attention and Multimodal Interaction", section III.B; the masked attention follows
CM-BERT (Yang, Xu, Gao, ACM MM 2020), which the paper extends.

``masked`` (3-Modal Cross-BERT / CM-BERT fusion, III.B.4). Text tokens ``X_t`` and every
audio input (one "modality" each, e.g. MFCC and eGeMAPS as two sets, playing the role of
the paper's audio and video) are brought to width ``d`` by a kernel-1 convolution (the
paper's "convolutional layer to control the dimensionality"). For each modality m an
attention matrix over the token positions is formed from its features and keys,
``A_m = ReLU(tanh(X_m W_q^m) tanh(X_m W_k^m)^T)`` (``K_m = X_m^T`` after projection), and
the fusion matrix is ``W_f = w_t A_t + sum_m w_m A_m + b`` with learned weights. The mask
matrix holds 0 at token positions and -inf at padding, so after
``W_m = softmax(W_f + mask)`` padding gets weight 0. ``Y = W_m X_t`` re-weights the text
features, followed by Add & Norm with ``X_t`` (as in CM-BERT; with ``audio_residual``,
the default, the token-aligned audio features are added to that residual too, because
mer's text features are frozen while the paper fine-tunes BERT, see Config), a masked mean over real
tokens (the features here are frozen, so there is no trained [CLS] to read) and a linear
classifier.

``attention="paper"`` (``--set attention=paper``) is the paper's own form: keys are the
features themselves (``K_m = X_m^T``), so ``A_m = ReLU(X_m X_m^T)`` on the projected
modality, with no query/key weights (``d_k`` unused). The default ``"qk"`` keeps CM-BERT's
learned tanh query/key maps above. In either form, a pooled audio vector broadcast to
every token makes the audio attention matrix constant over the real tokens of an utterance,
so it adds the same number to every entry of a softmax row and changes nothing: with pooled
audio only the text term (and, with ``audio_residual``, the residual) carries information.

Alignment of audio to tokens. CM-BERT uses word-aligned audio (one audio vector per word).
Where the manifest has word times (IEMOCAP's ``.wdseg`` forced alignments), the trainer pools
each token's audio from its word's frames before the model sees it (``mer.train.wordalign``;
the run's config.yaml says which was used, as ``audio_to_tokens``). Otherwise each
utterance's *real* audio frames are resampled to its *real* token count: token j of an utterance with ``n_t`` tokens and
``n_a`` frames gets the mean of frames ``[floor(j n_a / n_t), ceil((j+1) n_a / n_t))``, the
bins of adaptive average pooling (frames are repeated when ``n_a < n_t``). This assumes a
roughly uniform speaking rate; padding frames get weight 0. A pooled (fixed) audio vector
is broadcast to every token. A pooled text vector is read as a one-token sequence (the
attention is then trivial and the model reduces to Add & Norm + classifier).

``interaction`` (Multimodal interaction model, III.B.5, Fig. 3). Every input is one set,
mapped to ``h_m = tanh(Conv1x1(x_m))`` in ``R^d`` (ragged inputs are first mean-pooled over
real positions; the paper uses utterance vectors). The result set merges
- the original features with a learnable weight per modality: ``w_m h_m``;
- every pair (i, j): the product ``h_i * h_j``;
- every union of a pair: ``Linear([h_i ; h_j])``;
- every triplet (i, j, k), when three or more sets are given: ``h_i * h_j * h_k``;
each set with its own learnable bias vector, concatenated and classified by a linear layer.
Fig. 3 itself is not in the text we have; the products-for-combinations, concatenation-for-
union reading above is ours.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import torch
from torch import nn

from mer.common.errors import MerError
from mer.train.fusion import FUSIONS, by_modality
from mer.train.layers import (
    FusionBase,
    check_dims,
    input_as_sequence,
    input_as_vector,
    masked_mean,
    require_modalities,
    zero_pad,
)


def align_to_tokens(a: torch.Tensor, a_mask: torch.Tensor, t_mask: torch.Tensor) -> torch.Tensor:
    """Resample each utterance's real audio frames ``[B, Ta, D]`` to its real tokens -> ``[B, L, D]``.

    Token j of n_t gets the mean of frames [floor(j n_a / n_t), ceil((j+1) n_a / n_t)) of the
    n_a real frames (adaptive-average-pooling bins). Rows for padded tokens are zero. Built as
    one averaging matrix per batch, so no Python loop over utterances.
    """
    na = a_mask.sum(1).to(torch.long)[:, None, None]         # [B, 1, 1]
    nt = t_mask.sum(1).to(torch.long)[:, None, None].clamp(min=1)
    L, Ta = t_mask.shape[1], a.shape[1]
    j = torch.arange(L, device=a.device)[None, :, None]      # [1, L, 1]
    t = torch.arange(Ta, device=a.device)[None, None, :]     # [1, 1, Ta]
    start = torch.div(j * na, nt, rounding_mode="floor")
    end = torch.div((j + 1) * na + nt - 1, nt, rounding_mode="floor")   # ceil
    sel = (t >= start) & (t < end) & t_mask[:, :, None]      # real tokens only
    w = sel.to(a.dtype)
    w = w / w.sum(-1, keepdim=True).clamp(min=1)
    return torch.bmm(w, zero_pad(a, a_mask))


ATTENTION_FORMS = ("qk", "paper")


@FUSIONS.register("masked")
class MaskedAttentionFusion(FusionBase):
    """CM-BERT-style masked multimodal attention (seed 001); see the module docstring."""

    @dataclass
    class Config:
        d: int = 256              # width after the kernel-1 convolutions (paper: not given)
        d_k: int = 64             # query/key size of the per-modality attention matrices (attention=qk)
        # "qk": A = ReLU(tanh(X Wq) tanh(X Wk)^T) (CM-BERT's learned maps); "paper": A =
        # ReLU(X X^T) on the projected modality, seed 001's K = X^T with no query/key weights.
        attention: str = "qk"
        dropout: float = 0.1      # BERT's default
        # The paper fine-tunes BERT, so audio reaches the prediction by steering the text
        # encoder. mer's text features are frozen, and attention alone only re-weights text
        # tokens: audio could never add content. With audio_residual the token-aligned
        # audio features join the Add & Norm residual. False = the paper's fusion exactly.
        audio_residual: bool = True

    wants = "sequence"
    # The trainer hands this model audio already pooled per token from word times where the
    # manifest has them (mer.train.wordalign); the resampling below then passes it through.
    aligns_audio_to_tokens = True

    @classmethod
    def check_inputs(cls, inputs) -> None:
        require_modalities("masked", inputs, audio=1, text=1, exact_text=True)

    def __init__(self, inputs, n_out: int, config=None):
        super().__init__(inputs, n_out, config)
        c = self.config
        self.text = by_modality(self.inputs, "text")[0]
        self.audio = by_modality(self.inputs, "audio")
        self.proj_t = nn.Conv1d(self.text.dim, c.d, kernel_size=1)
        self.proj_a = nn.ModuleList(nn.Conv1d(s.dim, c.d, kernel_size=1) for s in self.audio)
        k = 1 + len(self.audio)
        if c.attention not in ATTENTION_FORMS:
            raise MerError(f"masked: attention={c.attention!r}; choose one of {', '.join(ATTENTION_FORMS)}")
        if c.attention == "qk":
            self.q = nn.ModuleList(nn.Linear(c.d, c.d_k, bias=False) for _ in range(k))
            self.k = nn.ModuleList(nn.Linear(c.d, c.d_k, bias=False) for _ in range(k))
        # learned weights of the modalities' attention matrices, and the bias b
        self.w = nn.Parameter(torch.full((k,), 1.0 / k))
        self.b = nn.Parameter(torch.zeros(()))
        self.norm = nn.LayerNorm(c.d)
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(c.d, n_out)
        self.last_attention: torch.Tensor | None = None

    def attention_matrix(self, i: int, X: torch.Tensor) -> torch.Tensor:
        """``A_m`` [B, L, L] of modality ``i`` (0 = text) from its projected features."""
        if self.config.attention == "paper":
            return torch.relu(X @ X.transpose(1, 2))
        return torch.relu(torch.tanh(self.q[i](X)) @ torch.tanh(self.k[i](X)).transpose(1, 2))

    @staticmethod
    def _conv(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
        return conv(x.transpose(1, 2)).transpose(1, 2)

    def forward(self, batch) -> torch.Tensor:
        check_dims(batch, self.inputs)
        xt, tm = input_as_sequence(batch, self.text)               # [B, L, Dt], [B, L]
        Xt = zero_pad(self._conv(self.proj_t, zero_pad(xt, tm)), tm)
        feats = [Xt]
        for s, conv in zip(self.audio, self.proj_a):
            x = batch[s.key]
            if s.kind == "fixed":
                xa = x[:, None, :].expand(-1, Xt.shape[1], -1)
            else:
                xa, am = input_as_sequence(batch, s)
                xa = align_to_tokens(xa, am, tm)
            feats.append(zero_pad(self._conv(conv, xa), tm))
        Wf = self.b
        for i, (wi, X) in enumerate(zip(self.w, feats)):
            Wf = Wf + wi * self.attention_matrix(i, X)
        # 0 for tokens, -inf for padding keys: padding gets attention 0 after the softmax
        Wf = Wf.masked_fill(~tm[:, None, :], float("-inf"))
        Wm = torch.softmax(Wf, dim=-1)
        self.last_attention = Wm.detach()
        Y = Wm @ Xt
        residual = Xt
        if self.config.audio_residual:
            residual = residual + sum(feats[1:])                    # zero at padded tokens
        E = self.norm(self.drop(Y) + residual)                     # Add & Norm
        return self.out(self.drop(masked_mean(E, tm)))


@FUSIONS.register("interaction")
class InteractionFusion(FusionBase):
    """Multimodal interaction model (seed 001); see the module docstring."""

    @dataclass
    class Config:
        d: int = 128              # size of every set's vector (paper: not given)
        dropout: float = 0.1
        triplets: bool = True     # add triple products when >= 3 sets are given

    wants = "pooled"

    @classmethod
    def check_inputs(cls, inputs) -> None:
        require_modalities("interaction", inputs, audio=1, text=1)
        if len(inputs) > 6:
            raise MerError(
                f"fusion 'interaction' combines every pair and triplet of inputs; {len(inputs)} "
                "inputs are too many (at most 6)"
            )

    def __init__(self, inputs, n_out: int, config=None):
        super().__init__(inputs, n_out, config)
        c = self.config
        k = len(self.inputs)
        self.proj = nn.ModuleList(nn.Conv1d(s.dim, c.d, kernel_size=1) for s in self.inputs)
        self.pairs = list(combinations(range(k), 2))
        self.triples = list(combinations(range(k), 3)) if c.triplets else []
        self.union = nn.ModuleList(nn.Linear(2 * c.d, c.d) for _ in self.pairs)
        self.modality_weight = nn.Parameter(torch.ones(k))
        n_sets = k + 2 * len(self.pairs) + len(self.triples)
        self.set_bias = nn.Parameter(torch.zeros(n_sets, c.d))     # per-set bias
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(n_sets * c.d, n_out)

    def forward(self, batch) -> torch.Tensor:
        check_dims(batch, self.inputs)
        h = [torch.tanh(conv(input_as_vector(batch, s)[:, :, None])[:, :, 0])
             for s, conv in zip(self.inputs, self.proj)]
        sets = [w * hi for w, hi in zip(self.modality_weight, h)]
        sets += [h[i] * h[j] for i, j in self.pairs]
        sets += [lin(torch.cat([h[i], h[j]], dim=-1)) for lin, (i, j) in zip(self.union, self.pairs)]
        sets += [h[i] * h[j] * h[k] for i, j, k in self.triples]
        S = torch.stack(sets, dim=1) + self.set_bias[None]          # [B, n_sets, d]
        return self.out(self.drop(S.flatten(1)))
