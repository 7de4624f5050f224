"""Cross-modal fusion with parallel self- and cross-attention (seed 004, CM-RoBERTa).

Luo, Phan, Reiss (2023), "Cross-Modal Fusion Techniques for Utterance-Level Emotion
Recognition from Text and Speech", section 3.2 and Fig. 2.

1. Encoders: each modality passes through two stacked bidirectional LSTM layers, giving
   ``H_a`` and ``H_t`` (hidden size 128 = 2 x 64, the paper's "128 hidden neurons").
   Inputs of one modality are combined first: fixed vectors are concatenated (as the
   paper concatenates openSMILE and OpenL3, ``x^a = a^LLF (+) a^OpenL3``) and projected to one
   step; every ragged input is projected per frame; the steps are joined along time, real
   steps first per utterance, and run mask-exact (``layers.MaskedRNN``). The paper runs its LSTMs over the utterances
   of a dialogue: that is ``--context dialog`` (below). With ``--context none`` the model
   classifies utterances on their own and the LSTMs run over frames/tokens (a pooled-only
   modality is then a one-step sequence, and the attention reduces to linear maps).
2. SCA unit: N = 2 stacked layers of parallel cross-attention (eqs. 1-6:
   ``dH_{a-t} = softmax(Q_a K_t^T / sqrt d) V_t`` and back, then LayerNorm and a
   feed-forward block) and self-attention (eqs. 7-9) per modality, padding masked as keys.
   The paper writes the residual joins as (+) "concatenation" inside LayerNorm; to stack
   layers at a constant width we read them as the usual residual addition.
3. Mid-level fusion (eq. 10): ``H_mid = FeedForward(BiLSTM([H_a, H_t]))`` over the joined
   audio and text steps (the first-stage LSTMs are shared, as Fig. 2 notes).
4. Residual branches: ``H^r_m = LayerNorm(Linear(x_m))`` of each modality's pooled input.
5. Concatenation of ``H^c_a, H^c_t, H^s_a, H^s_t, H_mid, H^r_a, H^r_t`` (sequences mean-pooled
   over real positions) and two fully connected layers.

``--context dialog`` (the paper's setting: "distribute the self-attention weights over the
entire dialog sequence"): each modality is one vector per utterance (the paper's inputs;
frame/token inputs are mean-pooled over real positions, then all inputs of the modality are
concatenated and projected), and the sequences the encoders, the SCA unit and the
mid-level BiLSTM run over are the utterances of a dialogue, padded dialogues masked. The
mid-level BiLSTM reads ``[H_a, H_t]`` joined per utterance (feature axis), the residual
branches act per utterance, and the concatenation at each real utterance goes through the
two FC layers: one prediction per utterance.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mer.train.fusion import FUSIONS, by_modality
from mer.train.layers import (
    FusionBase,
    MaskedRNN,
    check_dims,
    compact_cat,
    dialog_mask,
    get_mask,
    masked_mean,
    require_modalities,
    to_dialogs,
    zero_pad,
)


class _ModalityInput(nn.Module):
    """All inputs of one modality -> one projected, compacted sequence ``[B, T, hidden]``."""

    def __init__(self, specs, hidden: int):
        super().__init__()
        self.fixed = [s for s in specs if s.kind == "fixed"]
        self.ragged = [s for s in specs if s.kind == "ragged"]
        self.proj_fixed = nn.Linear(sum(s.dim for s in self.fixed), hidden) if self.fixed else None
        self.proj_ragged = nn.ModuleList(nn.Linear(s.dim, hidden) for s in self.ragged)

    def forward(self, batch):
        parts = []
        if self.proj_fixed is not None:
            v = self.proj_fixed(torch.cat([batch[s.key] for s in self.fixed], dim=-1))
            parts.append((v[:, None, :], torch.ones(v.shape[0], 1, dtype=torch.bool, device=v.device)))
        for s, lin in zip(self.ragged, self.proj_ragged):
            x = batch[s.key]
            m = get_mask(batch, s.key, x)
            parts.append((lin(zero_pad(x, m)), m))
        if len(parts) == 1:
            x, m = parts[0]
            return zero_pad(x, m), m
        return compact_cat(parts)


class _ModalityVector(nn.Module):
    """All inputs of one modality -> one projected vector per utterance ``[N, hidden]``
    (sequences mean-pooled over real positions, then concatenated with the vectors)."""

    def __init__(self, specs, hidden: int):
        super().__init__()
        self.specs = list(specs)
        self.proj = nn.Linear(sum(s.dim for s in self.specs), hidden)

    def forward(self, batch):
        parts = [batch[s.key] if s.kind == "fixed" else masked_mean(batch[s.key], get_mask(batch, s.key, batch[s.key]))
                 for s in self.specs]
        return self.proj(torch.cat(parts, dim=-1))


class _AttnBlock(nn.Module):
    """One attention layer: LayerNorm(H + Att(H, K)) then LayerNorm(. + FeedForward(.))."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.att = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ln1 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff, d))
        self.ln2 = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, h, h_mask, kv, kv_mask):
        a, _ = self.att(h, kv, kv, key_padding_mask=~kv_mask, need_weights=False)
        h = self.ln1(h + self.drop(a))
        h = self.ln2(h + self.drop(self.ff(h)))
        return zero_pad(h, h_mask)


@FUSIONS.register("cross")
class CrossModalFusion(FusionBase):
    """CM-RoBERTa fusion (seed 004); see the module docstring."""

    @dataclass
    class Config:
        hidden: int = 128         # paper: 128 hidden neurons
        layers: int = 2           # SCA: N = 2 stacked layers
        heads: int = 4            # paper: not given
        ff: int = 256             # feed-forward width inside the SCA blocks (paper: not given)
        fc: int = 128             # first of the two final FC layers
        dropout: float = 0.1      # paper: not given

    wants = "sequence"
    contexts = ("none", "dialog")
    dialog_wants = "pooled"   # the paper's inputs: one vector per utterance and modality

    @classmethod
    def check_inputs(cls, inputs) -> None:
        require_modalities("cross", inputs, audio=1, text=1)

    def __init__(self, inputs, n_out: int, config=None, context: str = "none"):
        super().__init__(inputs, n_out, config)
        self.context = context
        c = self.config
        if c.hidden % 2 or c.hidden % c.heads:
            from mer.common.errors import MerError

            raise MerError(f"cross: hidden ({c.hidden}) must be even and divisible by heads ({c.heads})")
        h = c.hidden
        inp = _ModalityVector if context == "dialog" else _ModalityInput
        self.inp_a = inp(by_modality(self.inputs, "audio"), h)
        self.inp_t = inp(by_modality(self.inputs, "text"), h)
        self.enc_a = MaskedRNN(h, h // 2, cell="lstm", layers=2, bidirectional=True, dropout=c.dropout)
        self.enc_t = MaskedRNN(h, h // 2, cell="lstm", layers=2, bidirectional=True, dropout=c.dropout)
        mk = lambda: nn.ModuleList(_AttnBlock(h, c.heads, c.ff, c.dropout) for _ in range(c.layers))  # noqa: E731
        self.cross_a, self.cross_t, self.self_a, self.self_t = mk(), mk(), mk(), mk()
        # dialog: [H_a, H_t] joined per utterance (2h features); none: joined along time (h)
        self.mid = MaskedRNN(2 * h if context == "dialog" else h, h // 2, cell="lstm", bidirectional=True)
        self.mid_ff = nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, h))
        self.res_a = nn.Sequential(nn.Linear(h, h), nn.LayerNorm(h))
        self.res_t = nn.Sequential(nn.Linear(h, h), nn.LayerNorm(h))
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Sequential(nn.Linear(7 * h, c.fc), nn.ReLU(), nn.Dropout(c.dropout), nn.Linear(c.fc, n_out))

    def _encode_sca(self, xa, ma, xt, mt):
        """BiLSTM encoders and the SCA unit over sequences (frames, or a dialogue's utterances)."""
        Ha, _ = self.enc_a(self.drop(xa), ma)
        Ht, _ = self.enc_t(self.drop(xt), mt)
        # SCA: cross- and self-attention stacks run in parallel on the encoder outputs
        ca, ct, sa, st = Ha, Ht, Ha, Ht
        for l_ca, l_ct, l_sa, l_st in zip(self.cross_a, self.cross_t, self.self_a, self.self_t):
            ca, ct = l_ca(ca, ma, ct, mt), l_ct(ct, mt, ca, ma)    # eqs. 1-6 (both from layer l-1)
            sa, st = l_sa(sa, ma, sa, ma), l_st(st, mt, st, mt)    # eqs. 7-9
        return Ha, Ht, ca, ct, sa, st

    def _forward_dialog(self, batch) -> torch.Tensor:
        dm = dialog_mask(batch, "cross")
        xa, xt = to_dialogs(self.inp_a(batch), dm), to_dialogs(self.inp_t(batch), dm)   # [D, U, h]
        Ha, Ht, ca, ct, sa, st = self._encode_sca(xa, dm, xt, dm)
        mid, _ = self.mid(torch.cat([Ha, Ht], dim=-1), dm, "dialogue")                 # eq. 10 per utterance
        z = torch.cat([ca, ct, sa, st, self.mid_ff(mid), self.res_a(xa), self.res_t(xt)], dim=-1)
        return self.head(self.drop(z[dm]))                                              # [N, n_out]

    def forward(self, batch) -> torch.Tensor:
        check_dims(batch, self.inputs)
        if self.context == "dialog":
            return self._forward_dialog(batch)
        xa, ma = self.inp_a(batch)
        xt, mt = self.inp_t(batch)
        Ha, Ht, ca, ct, sa, st = self._encode_sca(xa, ma, xt, mt)
        # mid-level fusion over the joined audio and text steps (eq. 10)
        joint, mj = compact_cat([(Ha, ma), (Ht, mt)])
        _, last = self.mid(joint, mj)
        H_mid = self.mid_ff(last)
        # residual branches keep the input structure
        ra = self.res_a(masked_mean(xa, ma))
        rt = self.res_t(masked_mean(xt, mt))
        z = torch.cat([masked_mean(ca, ma), masked_mean(ct, mt), masked_mean(sa, ma), masked_mean(st, mt),
                       H_mid, ra, rt], dim=-1)
        return self.head(self.drop(z))
