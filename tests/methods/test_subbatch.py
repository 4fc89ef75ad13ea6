"""The fused executor: same gradients as the loop where both apply, whole-batch BN, automatic fallback."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.functional import cross_entropy

from damp import methods


class NoBN(nn.Module):
    """Conv (with groups and bias), GroupNorm, LayerNorm over tokens, Linear on (B, T, C) and (B, C)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2, bias=False)
        self.gn = nn.GroupNorm(4, 8)
        self.ln = nn.LayerNorm(8)
        self.token = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.gn(self.conv2(torch.relu(self.conv1(x)))))  # (B, 8, 4, 4)
        t = self.token(self.ln(h.flatten(2).transpose(1, 2)))  # (B, 16, 8)
        return self.head(torch.tanh(t).mean(1))


def grads(model, method, x, y):
    model.zero_grad()
    loss = method.backward(model, x, y, cross_entropy)
    return loss, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("kind", ["damp", "daap"])
@pytest.mark.parametrize("m", [2, 4])
def test_fused_equals_loop_without_batchnorm(kind, m):
    torch.manual_seed(0)
    model = NoBN().double()
    x, y = torch.randn(8, 2, 8, 8, dtype=torch.float64), torch.randint(0, 3, (8,))
    std = 0.3 if kind == "damp" else 0.05
    loop_loss, loop = grads(model, methods.build(kind, std=std, num_perturbations=m, seed=1, executor="loop"), x, y)
    fused_method = methods.build(kind, std=std, num_perturbations=m, seed=1, executor="fused")
    assert fused_method.fused_modules(model, [p for _, p in methods.perturbed_parameters(model)]) is not None
    before = [p.detach().clone() for p in model.parameters()]
    fused_loss, fused = grads(model, fused_method, x, y)
    torch.testing.assert_close(fused_loss, loop_loss)
    for a, b in zip(fused, loop):
        torch.testing.assert_close(a, b)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    sgd_loss, sgd = grads(model, methods.SGD(), x, y)
    assert not torch.allclose(fused[-2], sgd[-2])  # the noise did something


def test_fused_batchnorm_uses_whole_batch_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2))
    x, y = torch.randn(8, 1, 8, 8) * 3 + 1, torch.randint(0, 2, (8,))
    methods.DAMP(0.0, num_perturbations=4, seed=0, executor="fused").backward(model, x, y, cross_entropy)
    reference = nn.BatchNorm2d(4)
    with torch.no_grad():
        reference(model[0](x))  # one whole-batch update (std 0: the conv output is the clean one)
    torch.testing.assert_close(model[1].running_mean, reference.running_mean)
    torch.testing.assert_close(model[1].running_var, reference.running_var)
    assert int(model[1].num_batches_tracked) == 1
    # With std 0 the fused gradient is SGD's whole-batch gradient, BN included.
    fused = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    methods.SGD().backward(model, x, y, cross_entropy)
    for a, p in zip(fused, model.parameters()):
        torch.testing.assert_close(a, p.grad)


def test_auto_falls_back_to_the_loop_for_attention():
    model = nn.Sequential(nn.Linear(4, 4))
    attention = nn.MultiheadAttention(4, 2, batch_first=True)
    params = [attention.in_proj_weight]
    assert methods.DAMP(0.1, 4).fused_modules(attention, params) is None
    with pytest.raises(ValueError, match="executor='fused'"):
        methods.DAMP(0.1, 4, executor="fused").fused_modules(attention, params)
    assert methods.DAMP(0.1, 4, executor="fused").fused_modules(model, [model[0].weight]) is not None
    assert methods.DAMP(0.1, 4).fused_modules(model, [model[0].weight]) is None  # auto on CPU: the loop
    if torch.cuda.is_available():
        cuda_model = model.cuda()
        assert methods.DAMP(0.1, 4).fused_modules(cuda_model, [cuda_model[0].weight]) is not None
        assert methods.DAMP(0.1, 1).fused_modules(cuda_model, [cuda_model[0].weight]) is None
    with pytest.raises(ValueError, match="executor"):
        methods.DAMP(0.1, 4, executor="fast")


def test_fused_restores_forwards_when_the_loss_raises():
    model = NoBN()
    x, y = torch.randn(4, 2, 8, 8), torch.randint(0, 3, (4,))

    def boom(out, target):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        methods.DAMP(0.2, 2, executor="fused").backward(model, x, y, boom)
    assert all("forward" not in vars(m) for m in model.modules())
    methods.SGD().backward(model, x, y, cross_entropy)  # the model works as before
