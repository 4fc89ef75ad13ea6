"""DAMP/DAAP statistics on linear least squares, where the gradient moments have closed forms.

Model: f(x) = x . w (no bias), loss = mean((x . w - y)^2) / 2, so with A = X^T X / n and
b = X^T y / n the gradient at the point v is A v - b. DAMP evaluates it at v = w * xi with
xi ~ N(1, s^2): E[g] = A w - b (the SGD gradient) and Var[g_j] = s^2 sum_i A_ji^2 w_i^2, which
grows with |w|. DAAP evaluates it at v = w + xi, xi ~ N(0, s^2): Var[g_j] = s^2 sum_i A_ji^2,
independent of w.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from damp import methods

DRAWS = 3000


def half_mse(out, y):
    return 0.5 * ((out.squeeze(-1) - y) ** 2).mean()


@pytest.fixture
def problem():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(16, generator=gen, dtype=torch.float64)
    w = torch.tensor([0.1, -0.5, 1.0, 2.0, -3.0], dtype=torch.float64)
    return x, y, w


def linear(w):
    model = nn.Linear(w.numel(), 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(w[None])
    return model


def sample_grads(method, model, x, y, draws=DRAWS):
    out = []
    for _ in range(draws):
        model.zero_grad()
        method.backward(model, x, y, half_mse)
        out.append(model.weight.grad[0].clone())
    return torch.stack(out)


def test_damp_mean_is_sgd_gradient_and_variance_is_multiplicative(problem):
    x, y, w = problem
    a = x.T @ x / len(x)
    sgd_grad = a @ w - x.T @ y / len(x)
    std = 0.2
    grads = sample_grads(methods.DAMP(std, seed=0), linear(w), x, y)
    predicted_var = std**2 * (a**2) @ (w**2)
    stderr = (predicted_var / DRAWS).sqrt()
    assert torch.all((grads.mean(0) - sgd_grad).abs() < 4.5 * stderr)
    # Sample variance of a Gaussian: relative standard error sqrt(2/(N-1)) ~ 2.6%; allow 12%.
    torch.testing.assert_close(grads.var(0), predicted_var, rtol=0.12, atol=0)


def test_damp_variance_grows_with_weight_magnitude(problem):
    x, y, w = problem
    small = sample_grads(methods.DAMP(0.2, seed=1), linear(w), x, y, 1000).var(0)
    large = sample_grads(methods.DAMP(0.2, seed=1), linear(3 * w), x, y, 1000).var(0)
    # Same noise stream, weights x3: the gradient noise scales by 3, its variance by 9.
    torch.testing.assert_close(large, 9 * small, rtol=1e-6, atol=0)


def test_daap_variance_is_independent_of_weights(problem):
    x, y, w = problem
    a = x.T @ x / len(x)
    std = 0.05
    grads = sample_grads(methods.DAAP(std, seed=0), linear(w), x, y)
    predicted_var = std**2 * (a**2).sum(1)
    torch.testing.assert_close(grads.var(0), predicted_var, rtol=0.12, atol=0)
    sgd_grad = a @ w - x.T @ y / len(x)
    assert torch.all((grads.mean(0) - sgd_grad).abs() < 4.5 * (predicted_var / DRAWS).sqrt())
    large = sample_grads(methods.DAAP(std, seed=0), linear(10 * w), x, y).var(0)
    torch.testing.assert_close(large, grads.var(0), rtol=1e-6, atol=0)


def test_each_subbatch_gets_its_own_noise_and_no_chain_factor():
    """With M sub-batches the gradient is the mean of grad L_m at w * xi_m, without a xi factor."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(4, generator=gen, dtype=torch.float64)
    w = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    model = linear(w)
    seen = []
    model.register_forward_pre_hook(lambda mod, args: seen.append(mod.weight.detach()[0].clone()))
    method = methods.DAMP(0.3, num_perturbations=2, seed=7, executor="loop")
    method.backward(model, x, y, half_mse)
    assert len(seen) == 2 and not torch.equal(seen[0], seen[1])
    expected = sum((xm.T @ (xm @ v - ym)) / len(xm) for xm, ym, v in
                   zip(x.split(2), y.split(2), seen)) / 2
    torch.testing.assert_close(model.weight.grad[0], expected)
    # The perturbation really is multiplicative: xi = v / w has mean ~1 and spread ~std.
    assert torch.equal(model.weight[0], w)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_noise_drawn_on_several_threads_equals_the_serial_draw(monkeypatch, threads):
    """fill_normal_ shares the rows over as many threads as torch's intra-op count on CPU; each row comes
    from its own generator, so the buffer is bit-identical to the serial draw, whatever the thread count."""
    from damp import seeding
    from damp.methods import noise

    def draw() -> torch.Tensor:
        buffer = torch.empty(8, 1000)
        noise.fill_normal_(buffer, 0.3, [seeding.generator("cpu", 5, seeding.NOISE, 2, m) for m in range(8)])
        return buffer

    monkeypatch.setattr(noise, "PARALLEL_DRAW_MIN_ELEMENTS", 1 << 62)
    serial = draw()
    monkeypatch.setattr(noise, "PARALLEL_DRAW_MIN_ELEMENTS", 0)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        shared = draw()
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(shared, serial)
    assert serial.std().item() == pytest.approx(0.3, rel=0.05)
    assert not torch.equal(serial[0], serial[1])  # rows are distinct draws
    # The draw threads ran the shares beside the calling thread when there was more than one.
    assert (noise._draw_pool is not None and noise._draw_pool[1] == threads - 1) or threads == 1
