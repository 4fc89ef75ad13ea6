"""methods/sync_batchnorm.py: the whole-batch statistics and how many slices they are summed over."""

from __future__ import annotations

import torch

from damp.methods.sync_batchnorm import CPU_PIECE_BYTES, batch_statistics, statistics_pieces


def test_statistics_do_not_depend_on_the_slices_and_match_torch():
    x = torch.randn(24, 5, 7, 7, dtype=torch.float64) * 3 + 2
    var, mean = torch.var_mean(x, [0, 2, 3], correction=0)
    for pieces in (None, 1, 2, 5, 24):
        got_mean, got_var, count = batch_statistics(x, None, pieces)
        assert count == 24 * 49
        torch.testing.assert_close(got_mean, mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got_var, var, rtol=1e-12, atol=1e-12)


def test_cpu_slices_are_about_eight_mib_and_a_gpu_takes_one():
    assert statistics_pieces(torch.empty(128, 16, 28, 28)) == 1  # 6.1 MiB
    assert statistics_pieces(torch.empty(128, 64, 32, 32)) == 4  # 32 MiB
    assert statistics_pieces(torch.empty(CPU_PIECE_BYTES // 4 + 1)) == 2
    assert statistics_pieces(torch.empty(128, 64, 32, 32, device="meta")) == 1
