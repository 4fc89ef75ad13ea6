"""The gradient-estimator contract every method must meet."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.functional import cross_entropy

from damp import methods
from tests.conftest import small_cnn

SPECS = {  # id -> (method name, hyperparameters); every executor, and ghost BatchNorm (the loop)
    "sgd": ("sgd", {}),
    "damp": ("damp", {"std": 0.3, "num_perturbations": 4, "seed": 3, "executor": "fused"}),
    "damp-split": ("damp", {"std": 0.3, "num_perturbations": 4, "seed": 3}),  # auto = split on CPU
    "damp-ghost": ("damp", {"std": 0.3, "num_perturbations": 4, "seed": 3, "batchnorm": "ghost"}),
    "daap": ("daap", {"std": 0.05, "num_perturbations": 2, "seed": 3, "executor": "fused"}),
    "daap-ghost": ("daap", {"std": 0.05, "num_perturbations": 2, "seed": 3, "batchnorm": "ghost"}),
    "sam": ("sam", {"rho": 0.1, "num_perturbations": 2}),
    "sam-fused": ("sam", {"rho": 0.1, "num_perturbations": 2, "executor": "fused"}),
    "sam-ghost": ("sam", {"rho": 0.1, "num_perturbations": 2, "batchnorm": "ghost"}),
    "asam": ("asam", {"rho": 1.0, "eta": 0.01, "num_perturbations": 2}),
    "asam-ghost": ("asam", {"rho": 1.0, "eta": 0.01, "num_perturbations": 2, "batchnorm": "ghost"}),
    "rwp": ("rwp", {"std": 0.05, "num_perturbations": 2, "seed": 3}),
    "rwp-ghost": ("rwp", {"std": 0.05, "num_perturbations": 2, "seed": 3, "batchnorm": "ghost"}),
    "mrwp": ("mrwp", {"std": 0.05, "mix": 0.5, "num_perturbations": 2, "seed": 3}),
}
ALL = list(SPECS)


def make(spec_id, **override):
    name, hparams = SPECS[spec_id]
    return methods.build(name, **{**hparams, **override})


def params_of(model):
    return [p.detach().clone() for p in model.parameters()]


def assert_bit_identical(model, before):
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b), "parameter changed"


@pytest.mark.parametrize("name", ALL)
def test_restores_weights_and_fills_grads(name, batch):
    model = small_cnn()
    before = params_of(model)
    loss = make(name).backward(model, *batch, cross_entropy)
    assert loss.shape == () and not loss.requires_grad and torch.isfinite(loss)
    assert_bit_identical(model, before)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("fail_at", [1, 2, 3])
def test_restores_weights_when_loss_raises(name, fail_at, batch):
    model = small_cnn()
    before = params_of(model)
    calls = {"n": 0}

    def flaky_loss(out, y):
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise RuntimeError("boom")
        return cross_entropy(out, y)

    method = make(name)
    passes = 2 if name.startswith(("sam", "asam")) else 1  # per-layer executors: one forward per pass
    loss_calls = passes * (method.num_perturbations if name.endswith("ghost") else 1) + (name == "mrwp")
    if fail_at > loss_calls:
        pytest.skip(f"{name} calls the loss {loss_calls} times")
    with pytest.raises(RuntimeError, match="boom"):
        method.backward(model, *batch, flaky_loss)
    assert_bit_identical(model, before)


@pytest.mark.parametrize("name", ALL)
def test_restores_weights_when_model_raises(name, batch):
    model = small_cnn()
    before = params_of(model)

    def hook(module, args):
        raise ValueError("model failed")

    model[3].register_forward_pre_hook(hook)
    with pytest.raises(ValueError, match="model failed"):
        make(name).backward(model, *batch, cross_entropy)
    assert_bit_identical(model, before)


@pytest.mark.parametrize("name", ALL)
def test_grads_accumulate_like_tensor_backward(name, batch):
    model = small_cnn()
    method = make(name)
    method.backward(model, *batch, cross_entropy)
    fresh = [p.grad.clone() for p in model.parameters()]
    model2 = small_cnn()
    for p in model2.parameters():
        p.grad = torch.ones_like(p)
    method2 = make(name)
    method2.backward(model2, *batch, cross_entropy)
    for p, g in zip(model2.parameters(), fresh):
        torch.testing.assert_close(p.grad, g + 1)


@pytest.mark.parametrize("name,hp", [
    ("damp", {"std": 0.0, "num_perturbations": 1}), ("damp", {"std": 0.0, "num_perturbations": 4}),
    ("daap", {"std": 0.0, "num_perturbations": 2}), ("sam", {"rho": 0.0, "num_perturbations": 1}),
    ("sam", {"rho": 0.0, "num_perturbations": 4}), ("asam", {"rho": 0.0, "num_perturbations": 2}),
    ("rwp", {"std": 0.0, "num_perturbations": 2}), ("mrwp", {"std": 0.0, "num_perturbations": 2}),
])
def test_zero_noise_gives_sgd_gradient(name, hp, batch):
    reference = small_cnn(batchnorm=False)
    sgd_loss = methods.SGD().backward(reference, *batch, cross_entropy)
    model = small_cnn(batchnorm=False)
    loss = methods.build(name, **hp).backward(model, *batch, cross_entropy)
    torch.testing.assert_close(loss, sgd_loss)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad)


@pytest.mark.parametrize("name", ["damp", "damp-ghost", "daap", "sam", "asam", "rwp", "mrwp"])
def test_nonzero_perturbation_changes_gradient(name, batch):
    reference = small_cnn(batchnorm=False)
    methods.SGD().backward(reference, *batch, cross_entropy)
    model = small_cnn(batchnorm=False)
    make(name).backward(model, *batch, cross_entropy)
    assert not torch.allclose(model[-1].weight.grad, reference[-1].weight.grad)


@pytest.mark.parametrize("name", ["damp", "damp-ghost", "daap", "rwp", "mrwp"])
def test_same_seed_same_gradients_and_state_dict_roundtrip(name, batch):
    def grads_after(method, model):
        model.zero_grad()
        method.backward(model, *batch, cross_entropy)
        return [p.grad.clone() for p in model.parameters()]

    model = small_cnn(batchnorm=False)
    a, b = make(name), make(name)
    for _ in range(2):
        for ga, gb in zip(grads_after(a, model), grads_after(b, model)):
            assert torch.equal(ga, gb)
    state = a.state_dict()
    expected = grads_after(a, model)
    resumed = make(name, seed=999)
    assert not all(torch.equal(x, y) for x, y in zip(grads_after(resumed, model), expected))
    resumed.load_state_dict(state)
    for x, y in zip(grads_after(resumed, model), expected):
        assert torch.equal(x, y)
    other = make(name, seed=4)
    assert not all(torch.equal(x, y) for x, y in zip(grads_after(other, model), expected))


def test_noise_never_reads_the_global_rng(batch):
    model = small_cnn(batchnorm=False)
    torch.manual_seed(123)
    methods.DAMP(0.2, 2, seed=5).backward(model, *batch, cross_entropy)
    after = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(3))


@pytest.mark.parametrize("name", ALL)
def test_gradscaler_and_clipping_compose(name, batch):
    """Scaled-then-unscaled gradients equal the unscaled ones (power-of-two scale is exact)."""
    plain = small_cnn(batchnorm=False)
    make(name).backward(plain, *batch, cross_entropy)
    model = small_cnn(batchnorm=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    make(name).backward(model, *batch, cross_entropy, scaler=scaler)
    scaler.unscale_(opt)
    for p, q in zip(model.parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad)
    nn.utils.clip_grad_norm_(model.parameters(), 1e-3)
    before = params_of(model)
    scaler.step(opt)
    scaler.update()
    moved = torch.cat([(p - b).flatten() for p, b in zip(model.parameters(), before)]).norm()
    assert 0 < moved <= 0.1 * 1e-3 * 1.0001


def test_batch_not_divisible_is_value_error(batch):
    with pytest.raises(ValueError, match="not divisible"):
        methods.DAMP(0.1, num_perturbations=3).backward(small_cnn(), *batch, cross_entropy)


@pytest.mark.parametrize("name,hp,match", [
    ("damp", {"std": -0.1}, "std"), ("daap", {"std": float("nan")}, "std"), ("sam", {"rho": -1}, "rho"),
    ("asam", {"rho": 1.0, "eta": -1}, "eta"), ("damp", {"std": 0.1, "num_perturbations": 0}, "num_perturbations"),
    ("sam", {"rho": 0.1, "num_perturbations": 1.5}, "num_perturbations"), ("nope", {}, "Unknown method"),
    ("damp", {"std": 0.1, "sigma": 0.2}, "sigma"), ("damp", {}, "std"), ("damp", {"std": 0.1, "seed": -1}, "seed"),
    ("rwp", {"std": -1}, "std"), ("mrwp", {"std": 0.1, "mix": 1.5}, "mix"), ("mrwp", {"std": 0.1, "mix": -0.1}, "mix"),
    ("dropout", {}, "run-level name.*model.dropout"),
])
def test_build_rejects_bad_hyperparameters(name, hp, match):
    with pytest.raises(ValueError, match=match):
        methods.build(name, **hp)


def test_build_accepts_every_documented_name():
    assert set(methods.METHODS) == {"sgd", "damp", "daap", "sam", "asam", "rwp", "mrwp"}
    assert methods.hyperparameter_names("mrwp") == ["std", "mix", "num_perturbations", "seed"]
    assert isinstance(methods.build("DAMP", std=0.1), methods.DAMP)
    assert methods.hyperparameter_names("asam") == ["rho", "eta", "num_perturbations"]
