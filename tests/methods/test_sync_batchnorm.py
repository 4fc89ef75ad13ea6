"""methods/sync_batchnorm.py: the whole-batch statistics and how many slices they are summed over."""

from __future__ import annotations

import pytest
import torch

from damp.methods.sync_batchnorm import (CPU_PIECE_BYTES, SubBatchBatchNorm, batch_statistics,
                                         statistics_pieces)


def test_statistics_do_not_depend_on_the_slices_and_match_torch():
    x = torch.randn(24, 5, 7, 7, dtype=torch.float64) * 3 + 2
    var, mean = torch.var_mean(x, [0, 2, 3], correction=0)
    for pieces in (None, 1, 2, 5, 24):
        got_mean, got_var, count = batch_statistics(x, None, pieces)
        assert count == 24 * 49
        torch.testing.assert_close(got_mean, mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got_var, var, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(32, 6), (32, 6, 9), (32, 6, 9, 9), (32, 6, 3, 4, 5)])
def test_cpu_statistics_are_batchnorms_own(shape):
    """On CPU without slices the kernel nn.BatchNorm trains with: its mean bit for bit, the generic variance."""
    torch.manual_seed(0)
    x = torch.randn(shape) * 3 + 2
    layouts = [x] + ([x.contiguous(memory_format=torch.channels_last)] if x.dim() == 4 else [])
    for xs in layouts:
        mean, var, count = batch_statistics(xs, None)
        _, own_mean, own_invstd = torch.native_batch_norm(xs, None, None, None, None, True, 0.0, 1e-5)
        assert torch.equal(mean, own_mean) and count == x.numel() // x.shape[1]
        torch.testing.assert_close(torch.rsqrt(var + 1e-5), own_invstd)
        generic_mean, generic_var, _ = batch_statistics(xs, None, pieces=1)
        torch.testing.assert_close(mean, generic_mean)
        torch.testing.assert_close(var, generic_var)


def test_cpu_slices_are_about_eight_mib_and_a_gpu_takes_one():
    assert statistics_pieces(torch.empty(128, 16, 28, 28)) == 1  # 6.1 MiB
    assert statistics_pieces(torch.empty(128, 64, 32, 32)) == 4  # 32 MiB
    assert statistics_pieces(torch.empty(CPU_PIECE_BYTES // 4 + 1)) == 2
    assert statistics_pieces(torch.empty(128, 64, 32, 32, device="meta")) == 1


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last, torch.channels_last_3d],
                         ids=["nchw", "channels_last", "channels_last_3d"])
def test_half_precision_keeps_its_dtype_and_layout_and_sums_in_float32(layout):
    """bf16 activations are normalised without a float32 copy: float32 statistics, bf16 output and input
    gradient in the input's memory format, within bf16 rounding of the float64 result."""
    torch.manual_seed(0)
    shape = (16, 6, 3, 5, 5) if layout == torch.channels_last_3d else (16, 6, 5, 5)
    x = (torch.randn(shape, dtype=torch.float64) * 3 + 1).contiguous(memory_format=layout)
    scale, shift, grad = torch.rand(4, 6) + 0.5, torch.randn(4, 6), torch.randn(shape)
    out = {}
    for dtype in (torch.float64, torch.bfloat16):
        xd = x.to(dtype, copy=True).requires_grad_()
        s, b = scale.clone().requires_grad_(), shift.clone().requires_grad_()
        y, mean, var, _ = SubBatchBatchNorm.apply(xd, s, b, 1e-5, None, None)
        (y.double() * grad).sum().backward()
        out[dtype] = (y, xd.grad, s.grad, b.grad, mean, var)
    y, grad_x, *_, mean, var = out[torch.bfloat16]
    assert mean.dtype == var.dtype == torch.float32
    assert y.dtype == grad_x.dtype == torch.bfloat16
    assert y.is_contiguous(memory_format=layout) and grad_x.is_contiguous(memory_format=layout)
    for half, full in zip(out[torch.bfloat16], out[torch.float64]):
        assert (half.double() - full).abs().max() <= 0.01 * full.abs().max()
