"""SAM and ASAM ascent points against their closed forms, and BN statistics of the second pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad

from damp import methods
from damp.methods.sam import ascent_perturbation, subbatch_ascent_points_
from tests.conftest import small_cnn


def loss_of(model, params, x, y):
    return nn.functional.cross_entropy(functional_call(model, params, (x,)), y)


@pytest.mark.parametrize("executor", ["loop", "split", "fused"])
@pytest.mark.parametrize("kind", ["sam", "asam"])
def test_ascent_point_and_gradient_match_closed_form(kind, executor):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    y = torch.randint(0, 2, (6,))
    w = {n: p.detach().clone() for n, p in model.named_parameters()}
    g = grad(lambda p: loss_of(model, p, x, y))(w)
    rho, eta = 0.3, 0.05
    if kind == "sam":
        norm = torch.sqrt(sum((v**2).sum() for v in g.values()))
        expected = {n: w[n] + rho * g[n] / norm for n in w}
        method = methods.SAM(rho, executor=executor)
    else:
        t = {n: (w[n].abs() + eta) if n.endswith("weight") else torch.ones_like(w[n]) for n in w}
        norm = torch.sqrt(sum(((t[n] * g[n]) ** 2).sum() for n in w))
        expected = {n: w[n] + rho * t[n] ** 2 * g[n] / norm for n in w}
        method = methods.ASAM(rho, eta=eta, executor=executor)
    seen = []
    model.register_forward_pre_hook(lambda m, a: seen.append({n: p.detach().clone()
                                                              for n, p in m.named_parameters()}))
    loss = method.backward(model, x, y, nn.functional.cross_entropy)
    assert len(seen) == 2
    if executor == "loop":  # the per-layer executors never write the ascent point into the weights
        for n in w:
            assert torch.equal(seen[0][n], w[n])
            torch.testing.assert_close(seen[1][n], expected[n], rtol=1e-10, atol=1e-12)
    g_at_ascent = grad(lambda p: loss_of(model, p, x, y))(expected)
    for n, p in model.named_parameters():  # float64 throughout: the norm too, in every executor
        torch.testing.assert_close(p.grad, g_at_ascent[n], rtol=1e-10, atol=1e-12)
        assert torch.equal(p, w[n])
    torch.testing.assert_close(loss, loss_of(model, w, x, y))


def test_ascent_perturbation_norm_is_rho():
    grads = [torch.randn(3, 3), torch.randn(5)]
    eps = ascent_perturbation(grads, rho=0.7)
    assert torch.cat([e.flatten() for e in eps]).norm().item() == pytest.approx(0.7, rel=1e-5)


@pytest.mark.parametrize("gradients_in_out", [False, True])
@pytest.mark.parametrize("adaptive", [False, True])
def test_subbatch_ascent_points_are_omega_plus_each_subbatchs_own_ascent(adaptive, gradients_in_out):
    """Written in place into the descent buffers, row m is omega plus sub-batch m's own ascent (SAM and ASAM),
    also when the gradients are the buffers themselves (as the split kernels leave them)."""
    torch.manual_seed(0)
    params = [torch.randn(3, 2, dtype=torch.float64), torch.randn(4, dtype=torch.float64)]
    grads = [torch.randn(5, *p.shape, dtype=torch.float64) for p in params]  # M = 5
    scales = [params[0].abs() + 0.1, None] if adaptive else None
    before = [g.clone() for g in grads]
    out = grads if gradients_in_out else [torch.full_like(g, float("nan")) for g in grads]
    subbatch_ascent_points_(out, params, grads, 0.4, scales)
    t = [torch.ones_like(p) if ti is None else ti for ti, p in zip(scales or [None, None], params)]
    for m in range(5):  # the closed form eps_m = rho T^2 g_m / ||T g_m||, in float64 throughout
        norm = torch.sqrt(sum(((ti * g[m]) ** 2).sum() for ti, g in zip(t, before)))
        for buffer, p, ti, g in zip(out, params, t, before):
            torch.testing.assert_close(buffer[m], p + 0.4 * ti**2 * g[m] / norm, rtol=1e-10, atol=1e-12)
    if not gradients_in_out:  # the gradients are read, not overwritten
        assert all(torch.equal(g, b) for g, b in zip(grads, before))


class LayerRunTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden, self.head = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.hidden(torch.tanh(self.hidden(x)))))


@pytest.mark.parametrize("executor", ["split", "fused"])
@pytest.mark.parametrize("kind", ["sam", "asam"])
def test_a_layer_run_twice_gets_both_calls_ascent_gradients(kind, executor):
    """Both calls of a layer reused in one forward write its per-copy ascent gradient: the first one to run
    its backward fills the gradient buffer, the other allocates, and autograd sums them as the loop does."""
    grads = {}
    for name in ("loop", executor):
        torch.manual_seed(0)
        model = LayerRunTwice().double()
        x, y = torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 2, (6,))
        methods.build(kind, rho=0.3, num_perturbations=2, executor=name).backward(model, x, y,
                                                                                nn.functional.cross_entropy)
        grads[name] = [p.grad for p in model.parameters()]
    for a, b in zip(grads["loop"], grads[executor]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["sam", "asam"])
def test_gradient_buffers_change_no_value_of_a_step(kind, monkeypatch, batch):
    """SAM's and ASAM's steps with the ascent gradients in the descent buffers equal, bit for bit, the
    steps with a new gradient tensor (the ascent Copies built without buffers)."""
    from damp.methods import sam
    from damp.methods.copies import Copies

    grads = {}
    for into_buffers in (True, False):
        if not into_buffers:
            monkeypatch.setattr(sam, "Copies", lambda values, base=None, grad_buffer=None: Copies(values, base))
        torch.manual_seed(0)
        model = small_cnn()
        method = methods.build(kind, rho=0.5, num_perturbations=2, executor="split")
        for _ in range(2):  # the second step reuses the buffers the first one wrote
            model.zero_grad()
            method.backward(model, *batch, nn.functional.cross_entropy)
        grads[into_buffers] = [p.grad.clone() for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(grads[True], grads[False]))


@pytest.mark.parametrize("layer", ["conv", "linear"])
def test_split_kernels_write_per_copy_gradients_into_the_given_buffer(layer):
    """SAM's ascent gradient of a split layer's weight is its Copies.grad_buffer (no per-step allocation),
    with the values of a freshly allocated one; a buffer of another dtype is not used."""
    from damp.methods.copies import Copies
    from damp.methods.split_kernels import split_conv, split_linear

    torch.manual_seed(0)
    module = nn.Conv2d(3, 4, 3, padding=1) if layer == "conv" else nn.Linear(5, 4)
    kernel = split_conv if layer == "conv" else split_linear
    x = torch.randn(6, 3, 7, 7) if layer == "conv" else torch.randn(6, 5)
    m = 3

    def ascent_grad(buffer):
        leaf = module.weight.detach().expand(m, *module.weight.shape).requires_grad_()
        out = kernel(module, {"weight": Copies(leaf, grad_buffer=buffer)}, m, None, x)
        return torch.autograd.grad(out.square().sum(), leaf)[0]

    fresh = ascent_grad(None)
    buffer = torch.full((m, *module.weight.shape), float("nan"))
    written = ascent_grad(buffer)
    assert written.data_ptr() == buffer.data_ptr()
    assert torch.equal(written, fresh)  # the same kernel's values, copied in place of allocated
    for other in (torch.zeros(m, *module.weight.shape, dtype=torch.float64),  # another dtype
                  torch.zeros(*module.weight.shape, m).movedim(-1, 0)):  # not contiguous
        kept = ascent_grad(other)
        assert kept.data_ptr() != other.data_ptr() and not other.any()
        torch.testing.assert_close(kept, fresh)


def test_m_sharpness_uses_one_ascent_per_subbatch(batch):
    model = small_cnn(batchnorm=False)
    x, y = batch
    methods.SAM(0.2, num_perturbations=2).backward(model, x, y, nn.functional.cross_entropy)
    combined = [p.grad.clone() for p in model.parameters()]
    parts = []
    for xs, ys in zip(x.split(4), y.split(4)):
        m = small_cnn(batchnorm=False)
        methods.SAM(0.2).backward(m, xs, ys, nn.functional.cross_entropy)
        parts.append([p.grad for p in m.parameters()])
    for c, a, b in zip(combined, *parts):
        torch.testing.assert_close(c, (a + b) / 2)


@pytest.mark.parametrize("batchnorm", ["whole", "ghost"])
@pytest.mark.parametrize("name", ["sam", "asam"])
def test_second_pass_does_not_update_batchnorm_stats(name, batchnorm, batch):
    model = small_cnn()
    reference = small_cnn()
    methods.build(name, rho=0.5, num_perturbations=2, batchnorm=batchnorm).backward(model, *batch,
                                                                                   nn.functional.cross_entropy)
    x, y = batch
    # Only the unperturbed pass may touch the running statistics: once over the whole batch, or
    # once per sub-batch with ghost BatchNorm.
    for xs in (x.split(4) if batchnorm == "ghost" else [x]):
        reference(xs)
    for a, b in zip(model.buffers(), reference.buffers()):
        torch.testing.assert_close(a, b)
