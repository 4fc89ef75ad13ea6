"""Kernel-only weight decay: kernels decay; norm scales (RMSNorm included), shifts and biases do not."""

from __future__ import annotations

import pytest
from torch import nn

from damp.optim import kernel_parameters


@pytest.mark.skipif(not hasattr(nn, "RMSNorm"), reason="this torch has no nn.RMSNorm")
def test_norm_scales_are_not_kernels_rmsnorm_included():
    model = nn.Sequential(nn.Linear(4, 4), nn.RMSNorm(4), nn.LayerNorm(4), nn.Conv1d(4, 4, 1), nn.BatchNorm1d(4))
    kernels = kernel_parameters(model)
    assert kernels == {id(model[0].weight), id(model[3].weight)}
    assert id(model[1].weight) not in kernels  # the scale of an RMSNorm is a norm scale, not a kernel
