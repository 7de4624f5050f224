"""layers.MaskedRNN (dense per-direction calls) equals the packed-sequence run it replaced."""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mer.train.layers import MaskedRNN


def packed_reference(m: MaskedRNN, x, mask):
    """What PyTorch's own packed path computes with the same parameters."""
    L = mask.sum(1).cpu()
    out, h = m.rnn(pack_padded_sequence(x, L, batch_first=True, enforce_sorted=False))
    if isinstance(h, tuple):
        h = h[0]
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out, torch.cat([h[-m.dirs + i] for i in range(m.dirs)], dim=-1)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("layers,bidirectional", [(1, True), (2, True), (1, False), (2, False)])
def test_equals_packed_run_in_float64(cell, layers, bidirectional):
    torch.manual_seed(0)
    m = MaskedRNN(5, 7, cell=cell, layers=layers, bidirectional=bidirectional).double().eval()
    lens = torch.tensor([9, 1, 4, 9, 6])
    mask = torch.arange(9)[None, :] < lens[:, None]
    x = torch.randn(5, 9, 5, dtype=torch.float64)
    x_garbage = torch.where(mask[..., None], x, torch.full_like(x, 1e6))   # padding must not matter
    out, last = m(x_garbage, mask)
    ref_out, ref_last = packed_reference(m, x, mask)
    # float64 and the same arithmetic up to summation order: 1e-10 is ~1e6 ulps of headroom
    # for these O(1) values, yet any wrong step, direction or final state differs by >1e-2.
    assert torch.allclose(out, ref_out, atol=1e-10, rtol=0)
    assert torch.allclose(last, ref_last, atol=1e-10, rtol=0)
    assert torch.all(out[~mask] == 0)


def test_gradients_equal_packed_run():
    torch.manual_seed(1)
    m = MaskedRNN(4, 6, cell="lstm", layers=2, bidirectional=True).double()
    m.eval()   # no dropout: the two runs must see the same function
    lens = torch.tensor([7, 3, 5])
    mask = torch.arange(7)[None, :] < lens[:, None]
    x = torch.randn(3, 7, 4, dtype=torch.float64)
    grads = []
    for run in (lambda: m(x, mask), lambda: packed_reference(m, x, mask)):
        m.zero_grad()
        out, last = run()
        (out.sin().sum() + last.cos().sum()).backward()
        grads.append({k: p.grad.clone() for k, p in m.named_parameters()})
    for k in grads[0]:
        assert torch.allclose(grads[0][k], grads[1][k], atol=1e-10, rtol=0), k
