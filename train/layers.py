"""Shared, mask-aware building blocks for the fusion models.

Every block here takes the batch convention of ``mer.train.fusion``: a ragged input is a
zero-padded ``[B, T, D]`` tensor with a bool mask ``[B, T]`` (True = real frame/token).
The rule every block follows is that padded positions can never reach an output: they are
overwritten with zeros (``torch.where``, so even inf/NaN padding is harmless) before any
operation that mixes time steps, recurrent layers see each row's real steps only (``MaskedRNN``), attention uses
``-inf`` key masks, batch statistics are computed over real positions only, and pooling
weighs real positions only. The tests change padded values and compare outputs.

``wants`` (class attribute of every fusion model) tells the data layer which output of a
feature to load when the user names only the feature and it offers both (e.g.
``bert.pooled`` and ``bert.tokens``; see ``mer.train.data.resolve_inputs``):
- ``"pooled"``: utterance vectors; ragged inputs are still accepted and mean-pooled over
  their real frames inside the model;
- ``"sequence"``: frame/token sequences where the feature has them; fixed inputs are still
  accepted (a paper branch for vectors, or a length-1 sequence).
Every model here accepts both kinds for every input, so the attribute is a preference,
never a requirement. The values allowed and the default are ``mer.train.fusion.WANTS`` and
``DEFAULT_WANTS``.

torch is imported at module level: this module is only imported by the fusion models,
which the registry loads lazily (never at CLI start-up).
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from mer.common.errors import MerError
from mer.train.fusion import DEFAULT_WANTS

def balanced_weights(counts):
    """Class weights N / (K * n_c) (classes absent from training get 0), as sklearn's 'balanced'."""
    import numpy as np

    counts = np.asarray(counts, np.float64)
    return np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max(len(counts), 1), 0.0)


# --------------------------------------------------------------------------- masks, pooling

def get_mask(batch: dict, key: str, x: torch.Tensor) -> torch.Tensor:
    """The bool mask of a ragged input, checked loudly (shape, and no empty sequence)."""
    mk = key + ".mask"
    if mk not in batch:
        raise MerError(f"ragged input {key!r} comes without its mask {mk!r} in the batch")
    m = batch[mk].to(device=x.device, dtype=torch.bool)
    if m.shape != x.shape[:2]:
        raise MerError(f"mask {mk!r} has shape {tuple(m.shape)}, input has {tuple(x.shape[:2])}")
    empty = (~m.any(dim=1)).nonzero().flatten()
    if len(empty):
        # An empty sequence has nothing to attend to; the data layer must drop it (and say so)
        # rather than let the model invent a frame.
        raise MerError(f"input {key!r}: batch rows {empty.tolist()} have no real frames/tokens")
    return m


def dialog_mask(batch: dict, name: str) -> torch.Tensor:
    """The ``[D, U]`` dialogue mask of a conversation-level batch (mer.train.dialog)."""
    from mer.train.dialog import DIALOG_MASK

    m = batch.get(DIALOG_MASK)
    if m is None:
        raise MerError(f"{name}: built for --context dialog, but the batch holds no dialogues ({DIALOG_MASK!r})")
    return m


def to_dialogs(h: torch.Tensor, dmask: torch.Tensor) -> torch.Tensor:
    """Utterance rows ``[N, d]`` (dialogue by dialogue, in time order) -> ``[D, U, d]``,
    zeros at padded utterances (``N == dmask.sum()``)."""
    if h.shape[0] != int(dmask.sum()):
        raise MerError(f"dialogue batch: {h.shape[0]} utterances for a mask of {int(dmask.sum())} real ones")
    out = h.new_zeros(*dmask.shape, h.shape[-1])
    out[dmask] = h
    return out


def zero_pad(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero the padded positions of ``x`` ``[B, T, ...]`` (``where``: NaN/inf-safe)."""
    m = mask.view(*mask.shape, *([1] * (x.dim() - 2)))
    return torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` ``[B, T, D]`` over real positions -> ``[B, D]``."""
    x = zero_pad(x, mask)
    n = mask.sum(dim=1, keepdim=True).clamp(min=1).to(x.dtype)
    return x.sum(dim=1) / n


def lengths(mask: torch.Tensor) -> torch.Tensor:
    return mask.sum(dim=1)


def check_left_aligned(mask: torch.Tensor, key: str) -> None:
    """Packed RNNs need real positions first; the data layer pads at the end."""
    L = lengths(mask)
    expect = torch.arange(mask.shape[1], device=mask.device)[None, :] < L[:, None]
    if not torch.equal(expect, mask):
        raise MerError(f"input {key!r}: mask is not left-aligned (padding must come after real frames)")


def compact_cat(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate several masked sequences along time, real positions first, per row.

    ``parts``: ``(x [B, T_i, H], mask [B, T_i])``. Returns ``(x [B, sum T_i, H], mask)`` with
    every row's real positions (in part order) moved to the front, so the result can be
    packed for an RNN. A fixed vector enters as a length-1 part with an all-True mask.
    """
    x = torch.cat([zero_pad(p, m) for p, m in parts], dim=1)
    m = torch.cat([m for _, m in parts], dim=1)
    # stable sort on "is padding" keeps the real positions in order and moves them first
    order = torch.argsort((~m).to(torch.int8), dim=1, stable=True)
    x = torch.gather(x, 1, order[..., None].expand(-1, -1, x.shape[-1]))
    m = torch.gather(m, 1, order)
    return x, m


# --------------------------------------------------------------------------- recurrent encoders

class MaskedRNN(nn.Module):
    """A (Bi)LSTM/GRU over padded, masked sequences whose outputs equal a packed run's.

    ``forward(x, mask)`` returns ``(outputs [B, T, H*dirs] zero at padding, last [B, H*dirs])``
    where ``last`` concatenates the final hidden state of each direction of the top layer,
    taken at each row's own last real step.

    Why not ``pack_padded_sequence``: on CPU PyTorch runs a packed sequence one time step at a
    time, projecting each step's input separately, while a dense call projects the whole
    sequence in one matrix product (oneDNN): forward + backward of an LSTM 40->128 over 26 x 310
    frames took 829 ms packed and 85 ms dense here (bench/RESULTS.md). Dense calls are exact
    at real positions (a test compares with the packed run) because every direction runs over
    sequences whose real steps come first: the forward direction reaches a row's padding only
    after its last real step, and the backward direction is the forward recurrence over each
    row reversed within its own length (padding stays at the end), reversed back afterwards.
    Each (layer, direction) is one call with the ``nn.LSTM``/``nn.GRU`` parameters, so state
    dicts keep their names (``rnn.weight_ih_l0_reverse``, ...) and old checkpoints load.
    """

    def __init__(self, d_in: int, hidden: int, *, cell: str = "lstm", layers: int = 1,
                 bidirectional: bool = True, dropout: float = 0.0):
        super().__init__()
        cls = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = cls(d_in, hidden, num_layers=layers, batch_first=True,
                       bidirectional=bidirectional, dropout=dropout if layers > 1 else 0.0)
        self.cell, self.layers = cell, layers
        self.dirs = 2 if bidirectional else 1
        self.out_dim = hidden * self.dirs

    def _run(self, seq: torch.Tensor, layer: int, reverse: bool) -> torch.Tensor:
        """One direction of one layer over ``seq`` [B, T, D] (zero initial state) -> [B, T, H]."""
        sfx = f"_l{layer}" + ("_reverse" if reverse else "")
        w = [getattr(self.rnn, f"{k}{sfx}") for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        seq = seq.to(w[0].dtype)   # under autocast a Linear before may hand bf16/fp16 steps
        h0 = seq.new_zeros(1, seq.shape[0], self.rnn.hidden_size)
        # The recurrence runs in the weights' dtype with autocast off: CPU autocast casts
        # torch.lstm to bf16, and oneDNN has no bf16 LSTM kernel on CPUs without native bf16
        # (AMD EPYC without avx512_bf16: "could not create a primitive descriptor for the LSTM
        # forward propagation primitive"). fp32 here works on every CPU, and the recurrence is
        # a small share of these models' arithmetic.
        with torch.autocast(seq.device.type, enabled=False):
            if self.cell == "lstm":
                return torch.lstm(seq, (h0, h0), w, True, 1, 0.0, self.training, False, True)[0]
            return torch.gru(seq, h0, w, True, 1, 0.0, self.training, False, True)[0]

    def forward(self, x: torch.Tensor, mask: torch.Tensor, name: str = "sequence"):
        check_left_aligned(mask, name)
        B, T = mask.shape
        L = lengths(mask).clamp(min=1)
        t = torch.arange(T, device=x.device)[None, :]
        # time index of each row reversed within its length; padded steps stay where they are
        rev = torch.where(t < L[:, None], L[:, None] - 1 - t, t)
        rev = rev[..., None]
        rows, last = torch.arange(B, device=x.device), L - 1
        h = zero_pad(x, mask)
        for layer in range(self.layers):
            if layer and self.training and self.rnn.dropout:   # nn.LSTM's dropout between layers
                h = F.dropout(h, self.rnn.dropout, True)
            outs, finals = [], []
            for d in range(self.dirs):
                seq = h if d == 0 else torch.gather(h, 1, rev.expand(-1, -1, h.shape[-1]))
                o = self._run(seq, layer, bool(d))
                finals.append(o[rows, last])          # the state after the row's last real step
                outs.append(o if d == 0 else torch.gather(o, 1, rev.expand(-1, -1, o.shape[-1])))
            h = zero_pad(torch.cat(outs, dim=-1) if self.dirs > 1 else outs[0], mask)
        return h, torch.cat(finals, dim=-1)


# --------------------------------------------------------------------------- mask-aware 2-D CNN

class _MaskedBNReLU(torch.autograd.Function):
    """Training-mode BatchNorm + ReLU + re-masking over ``[B, C, T, F]`` in one autograd node.

    Mathematically the same as the composition of masked statistics, ``(x - mean) / std *
    weight + bias``, ReLU and zeroing the padded time steps; written out by hand because
    autograd's version of that composition made about twenty full-size passes (forward and
    backward) over the feature maps, each a fresh allocation: profiled at 3/4 of the mel
    CNN's time, against 1/4 for the convolutions themselves (bench/RESULTS.md). Here the
    forward makes 5 passes and the backward 7, mostly in place.
    """

    @staticmethod
    def forward(ctx, x, m, n, weight, bias, eps):
        # m: [B, 1, T, 1] float mask; n: number of real positions per channel (B*T_real*F)
        xm = x * m
        mean = xm.sum(dim=(0, 2, 3)) / n
        xc = x - mean[None, :, None, None]                 # reused as the output buffer below
        xm = torch.mul(xc, m, out=xm)
        var = xm.square_().sum(dim=(0, 2, 3)) / n
        del xm
        invstd = torch.rsqrt(var + eps)
        scale = (weight * invstd)[None, :, None, None]
        y = xc.mul_(scale).add_(bias[None, :, None, None]).relu_().mul_(m)
        ctx.save_for_backward(x, m, mean, invstd, weight, y)
        ctx.n = n
        return y, mean, var

    @staticmethod
    def backward(ctx, gy, _gmean, _gvar):
        x, m, mean, invstd, weight, y = ctx.saved_tensors
        n = ctx.n
        # gradient at the BN output: through ReLU (y > 0) and the mask (y is 0 on padding)
        g = torch.where(y > 0, gy, torch.zeros((), dtype=gy.dtype, device=gy.device))
        xhat = (x - mean[None, :, None, None]).mul_(invstd[None, :, None, None])
        dbias = g.sum(dim=(0, 2, 3))
        dweight = (g * xhat).sum(dim=(0, 2, 3))
        # dx = w * invstd * (g - dbias/n - xhat * dweight/n), on real positions only
        dx = xhat.mul_((dweight / n)[None, :, None, None]).neg_().add_(g).sub_((dbias / n)[None, :, None, None])
        dx.mul_((weight * invstd)[None, :, None, None]).mul_(m)
        return dx, None, None, dweight, dbias, None


class MaskedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over ``[B, C, T, F]`` whose batch statistics use real time steps only.

    Plain BatchNorm would count the zero padding into the mean and variance while training,
    so a batch's statistics would depend on how much padding it holds. ``forward`` returns
    the normalised maps; ``forward_relu`` also applies ReLU and zeroes the padded time steps
    (what ``MaskedConv2d`` needs), in one fused, hand-differentiated step.
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if not self.training:
            return super().forward(x)
        w = mask[:, None, :, None].to(x.dtype).expand_as(x)          # [B, C, T, F]
        n = w.sum(dim=(0, 2, 3)).clamp(min=1)                          # per channel
        xz = torch.where(w > 0, x, torch.zeros((), dtype=x.dtype, device=x.device))
        mean = xz.sum(dim=(0, 2, 3)) / n
        var = (((xz - mean[None, :, None, None]) ** 2) * w).sum(dim=(0, 2, 3)) / n
        self._track(mean, var, n[0])
        y = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps)
        return y * self.weight[None, :, None, None] + self.bias[None, :, None, None]

    def forward_relu(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask[:, None, :, None]
        if not self.training:
            return torch.where(m, F.relu(super().forward(x)), torch.zeros((), dtype=x.dtype, device=x.device))
        n = float(max(int(mask.sum()) * x.shape[-1], 1))
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()   # under --precision bf16/fp16 the statistics are still summed in float32
        y, mean, var = _MaskedBNReLU.apply(x, m.to(x.dtype), n, self.weight, self.bias, self.eps)
        self._track(mean.detach(), var.detach(), torch.tensor(n, dtype=x.dtype, device=x.device))
        return y

    @torch.no_grad()
    def _track(self, mean, var, n) -> None:
        self.num_batches_tracked += 1
        unbiased = var * n / (n - 1).clamp(min=1)
        self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
        self.running_var.mul_(1 - self.momentum).add_(self.momentum * unbiased)


class MaskedConv2d(nn.Module):
    """Conv2d ('same' padding, stride 1) + masked BatchNorm + ReLU over ``[B, C, T, F]``.

    Padded time steps are zeroed before the convolution, so a real frame next to the padding
    sees zeros exactly as it would at the end of an unpadded utterance, and zeroed again
    after the ReLU. ``zeroed=True`` says the caller's input is already zero on padding
    (every block's output is), which saves a full pass.
    """

    def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int]):
        super().__init__()
        kt, kf = kernel
        # 'same' padding: odd kernels (3x3) let the convolution pad (no padded copy of the
        # input is made and saved for backward: a full-size map per layer); even kernels such
        # as (10, 2) need explicit asymmetric padding.
        self.pad = ((kf - 1) // 2, kf - 1 - (kf - 1) // 2, (kt - 1) // 2, kt - 1 - (kt - 1) // 2)
        symmetric = kt % 2 == 1 and kf % 2 == 1
        self.conv = nn.Conv2d(c_in, c_out, kernel, bias=False, padding=(kt // 2, kf // 2) if symmetric else 0)
        if symmetric:
            self.pad = None
        self.bn = MaskedBatchNorm2d(c_out)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, zeroed: bool = False) -> torch.Tensor:
        if not zeroed:
            x = torch.where(mask[:, None, :, None], x, torch.zeros((), dtype=x.dtype, device=x.device))
        # channels-last: oneDNN's convolutions run 1.5-1.7x faster on it than on NCHW here
        # (measured forward + backward, 16->32 and 32->48 channels); the values are the same
        # up to float rounding, and the mask-aware ops below work on either layout.
        if self.pad is not None:
            x = F.pad(x, self.pad)
        x = x.contiguous(memory_format=torch.channels_last)
        return self.bn.forward_relu(self.conv(x), mask)


def masked_maxpool2(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """2x2 max-pooling of post-ReLU maps ``[B, C, T, F]`` with the mask pooled alongside.

    Time uses ceil mode, so an odd last frame keeps its own window; padded positions hold 0
    and post-ReLU values are >= 0, so a window that mixes a real frame with padding returns
    the real frame's value. The frequency axis has no padding; it is halved (rounding up)
    while it has at least 2 bins.
    """
    kf = 2 if x.shape[-1] >= 2 else 1
    x = F.max_pool2d(x, kernel_size=(2, kf), stride=(2, kf), ceil_mode=True)
    m = F.max_pool1d(mask[:, None, :].to(x.dtype), kernel_size=2, stride=2, ceil_mode=True)[:, 0] > 0
    return x, m


def masked_time_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``[B, C, T, F]`` over real time steps -> ``[B, C, F]``."""
    w = mask[:, None, :, None].to(x.dtype)
    xz = torch.where(mask[:, None, :, None], x, torch.zeros((), dtype=x.dtype, device=x.device))
    return xz.sum(dim=2) / w.sum(dim=2).clamp(min=1)


class MelCNN(nn.Module):
    """Speech branch of seed 002 (Makhmudov et al.), mask-aware.

    Input ``[B, T, F]`` (time x mel bins) is read as a 1-channel image ``[B, 1, T, F]``.
    Two parallel first convolutions with kernels (10, 2) (along time) and (2, 8) (along
    frequency), 8 channels each, concatenated to 16 channels; then 4 conv layers 3x3 with
    16 -> 32 -> 48 -> 64 -> 80 channels ("doubled, then +16 up to 80"); BN + ReLU after every
    conv; 2x2 max-pooling after conv layers 1 and 2; then the paper's FC layer. The paper fed
    fixed-size spectrograms and flattened; for ragged time we take the masked mean over time
    (frequency kept) and flatten ``80 x ceil(F/4)`` into the FC.
    """

    def __init__(self, n_freq: int, d_out: int, channels=(32, 48, 64, 80), first=8, dropout=0.0):
        super().__init__()
        self.branch_t = MaskedConv2d(1, first, (10, 2))
        self.branch_f = MaskedConv2d(1, first, (2, 8))
        chans = [2 * first, *channels]
        self.convs = nn.ModuleList(MaskedConv2d(a, b, (3, 3)) for a, b in zip(chans[:-1], chans[1:]))
        self.pool_after = {0, 1}               # conv layers 1 and 2 are followed by max-pooling
        f = n_freq
        for i in range(len(channels)):
            if i in self.pool_after and f >= 2:
                f = (f + 1) // 2
        self.fc = nn.Linear(chans[-1] * f, d_out)
        self.drop = nn.Dropout(dropout)
        self.out_dim = d_out

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = zero_pad(x, mask)[:, None]                      # [B, 1, T, F]
        x = torch.cat([self.branch_t(x, mask, zeroed=True), self.branch_f(x, mask, zeroed=True)], dim=1)
        for i, conv in enumerate(self.convs):
            x = conv(x, mask, zeroed=True)   # every block's (and pool's) output is 0 on padding
            if i in self.pool_after:
                x, mask = masked_maxpool2(x, mask)
        h = masked_time_mean(x, mask).flatten(1)            # [B, C * F']
        return self.fc(self.drop(h))


class MfccCNN(nn.Module):
    """Audio branch of seed 000 (ATFSC): a small 2-D CNN (conv + BN + ReLU) over MFCC frames.

    The paper gives only "2-D convolutions, batch normalization and ReLU"; we use two 3x3
    blocks (32, 64 channels) with one 2x2 max-pool between them, then the masked mean over
    time and the mean over coefficients, and a linear projection to ``d_out``.
    """

    def __init__(self, n_coef: int, d_out: int, channels=(32, 64), dropout=0.0):
        super().__init__()
        chans = [1, *channels]
        self.convs = nn.ModuleList(MaskedConv2d(a, b, (3, 3)) for a, b in zip(chans[:-1], chans[1:]))
        self.fc = nn.Linear(chans[-1], d_out)
        self.drop = nn.Dropout(dropout)
        self.out_dim = d_out

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = zero_pad(x, mask)[:, None]
        for i, conv in enumerate(self.convs):
            x = conv(x, mask, zeroed=True)
            if i < len(self.convs) - 1:
                x, mask = masked_maxpool2(x, mask)
        h = masked_time_mean(x, mask).mean(dim=-1)          # [B, C]
        return self.fc(self.drop(h))


# --------------------------------------------------------------------------- misc

def mlp(d_in: int, hidden: int, d_out: int, dropout: float, layers: int = 1) -> nn.Sequential:
    """``layers`` hidden blocks (Linear, ReLU, Dropout) and a Linear output: with the default
    one, the "two fully connected layers" head most papers end with; 0 is a linear classifier."""
    mods: list[nn.Module] = []
    d = d_in
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.ReLU(), nn.Dropout(dropout)]
        d = hidden
    mods.append(nn.Linear(d, d_out))
    return nn.Sequential(*mods)


def input_as_sequence(batch: dict, spec) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x [B, T, D], mask [B, T])`` for any input; a fixed vector is a length-1 sequence."""
    x = batch[spec.key]
    if spec.kind == "ragged":
        return x, get_mask(batch, spec.key, x)
    if x.dim() != 2:
        raise MerError(f"fixed input {spec.key!r} should be [B, D], got shape {tuple(x.shape)}")
    return x[:, None, :], torch.ones(x.shape[0], 1, dtype=torch.bool, device=x.device)


def input_as_vector(batch: dict, spec) -> torch.Tensor:
    """``[B, D]`` for any input; a ragged input is mean-pooled over its real positions."""
    x = batch[spec.key]
    if spec.kind == "ragged":
        return masked_mean(x, get_mask(batch, spec.key, x))
    return x


def check_dims(batch: dict, inputs) -> None:
    """Fail loudly, with the numbers, when a batch does not match the specs the model was built for."""
    for s in inputs:
        if s.key not in batch:
            raise MerError(f"the batch has no input {s.key!r} (the model was built with it)")
        x = batch[s.key]
        want = 3 if s.kind == "ragged" else 2
        if x.dim() != want or x.shape[-1] != s.dim:
            raise MerError(
                f"input {s.key!r}: expected a {s.kind} tensor with {s.dim} features per "
                f"{'frame' if s.kind == 'ragged' else 'utterance'}, got shape {tuple(x.shape)}"
            )


def require_modalities(name: str, inputs, audio: int = 1, text: int = 1, exact_text: bool = False) -> None:
    """The common ``check_inputs`` rule: at least ``audio`` audio and ``text`` text inputs."""
    from mer.train.fusion import by_modality

    if not inputs:
        raise MerError(f"fusion {name!r}: no input features chosen")
    na, nt = len(by_modality(inputs, "audio")), len(by_modality(inputs, "text"))
    other = [i.key for i in inputs if i.modality not in ("audio", "text")]
    if other:
        raise MerError(f"fusion {name!r}: inputs {other} have an unknown modality (audio or text expected)")
    if na < audio:
        raise MerError(f"fusion {name!r} needs at least {audio} audio feature(s); got {[i.key for i in inputs]}")
    if exact_text and nt != text:
        raise MerError(f"fusion {name!r} needs exactly {text} text feature(s); got {nt}: {[i.key for i in inputs]}")
    if nt < text:
        raise MerError(f"fusion {name!r} needs at least {text} text feature(s); got {[i.key for i in inputs]}")
    for i in inputs:
        if i.kind not in ("fixed", "ragged"):
            raise MerError(f"input {i.key!r} has kind {i.kind!r} (fixed or ragged expected)")
        if i.dim < 1:
            raise MerError(f"input {i.key!r} has dimension {i.dim}")


# --------------------------------------------------------------------------- base class

class FusionBase(nn.Module, ABC):
    """What every fusion model in this package shares: config handling and input checks.

    ``config`` may be the model's ``Config`` dataclass, a plain dict of its fields (as read
    from a CLI or a checkpoint), or None for the papers' defaults.
    """

    Config: type
    wants: str = DEFAULT_WANTS   # every model here says its own

    def __init__(self, inputs, n_out: int, config=None):
        super().__init__()
        self.config = self.make_config(config)
        inputs = list(inputs)
        self.check_inputs(inputs)
        if n_out < 1:
            raise MerError(f"{type(self).__name__}: n_out must be >= 1, got {n_out}")
        self.inputs = inputs
        self.n_out = n_out

    @classmethod
    def make_config(cls, config):
        from dataclasses import fields, is_dataclass

        from mer.common.config import make_config

        if config is None:
            return cls.Config()
        if isinstance(config, cls.Config):
            return config
        if is_dataclass(config):
            config = {f.name: getattr(config, f.name) for f in fields(config)}
        if isinstance(config, dict):
            return make_config(cls.Config, config, owner=cls.__name__, option="{}")
        raise MerError(f"{cls.__name__}: config must be {cls.Config.__name__}, a dict or None")

    @classmethod
    @abstractmethod
    def check_inputs(cls, inputs) -> None:
        """Raise MerError when the chosen inputs do not fit the model (every model says how)."""
