"""RWP and m-RWP against their definitions (Li et al. 2024): filter-wise noise scaled by filter norms, the
mixed gradient, BatchNorm statistics from the clean pass, and the equivalence of the executors."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.functional import cross_entropy

from damp import methods, seeding
from damp.methods.rwp import all_trainable, filter_norms
from tests.conftest import small_cnn


def test_noise_is_filter_wise_and_scaled_by_the_filter_norm():
    conv = nn.Conv2d(3, 4, 3)
    with torch.no_grad():
        conv.weight.mul_(torch.tensor([1.0, 10.0, 100.0, 1000.0]).view(4, 1, 1, 1))
    rwp = methods.build("rwp", std=0.1, num_perturbations=4, seed=0)
    params = [p for _, p in rwp.select_params(conv)]
    assert [n for n, _ in rwp.select_params(conv)] == ["weight", "bias"]  # every trainable parameter
    noise = rwp.draw(params, range(4), torch.device("cpu"))
    norms = conv.weight.detach().flatten(1).norm(dim=1)
    ratio = noise[0].flatten(2).std(dim=(0, 2)) / norms  # per filter, over the 4 draws x 27 elements
    torch.testing.assert_close(ratio, torch.full((4,), 0.1), atol=0.02, rtol=0)
    # The unscaled draw is DAAP's N(0, std^2) from the same (seed, step, sub-batch) stream.
    gen = seeding.generator("cpu", 0, seeding.NOISE, 0, 2)
    expected = torch.empty(sum(p.numel() for p in params)).normal_(0.0, 0.1, generator=gen)
    torch.testing.assert_close(noise[0][2] / filter_norms(conv.weight), expected[:108].view(4, 3, 3, 3))
    torch.testing.assert_close(noise[1][2], expected[108:] * (conv.bias.norm() + 1e-16))


def test_rwp_gradient_is_the_gradient_at_the_perturbed_weights(batch):
    model = small_cnn(batchnorm=False)
    rwp = methods.build("rwp", std=0.05, num_perturbations=2, seed=1, executor="loop")
    rwp.backward(model, *batch, cross_entropy)
    got = [p.grad.clone() for p in model.parameters()]
    replay = methods.build("rwp", std=0.05, num_perturbations=2, seed=1)
    params = [p for _, p in all_trainable(model)]
    noise = replay.draw(params, range(2), torch.device("cpu"))
    expected = [torch.zeros_like(p) for p in params]
    for k, (x, y) in enumerate(zip(batch[0].chunk(2), batch[1].chunk(2))):
        perturbed = small_cnn(batchnorm=False)
        with torch.no_grad():
            for q, p, eps in zip(perturbed.parameters(), params, noise):
                q.copy_(p + eps[k])
        (cross_entropy(perturbed(x), y) / 2).backward()
        for e, q in zip(expected, perturbed.parameters()):
            e += q.grad
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def test_mrwp_mixes_the_perturbed_and_the_clean_gradient_and_keeps_clean_statistics(batch):
    torch.manual_seed(0)
    model = small_cnn()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    mixed = methods.build("mrwp", std=0.05, mix=0.3, num_perturbations=2, seed=2)
    loss = mixed.backward(model, *batch, cross_entropy)
    got = [p.grad.clone() for p in model.parameters()]
    stats_after = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}

    def gradient(method):
        fresh = small_cnn()
        fresh.load_state_dict(base)
        value = method.backward(fresh, *batch, cross_entropy)
        return [p.grad for p in fresh.parameters()], value, fresh
    perturbed, perturbed_loss, _ = gradient(methods.build("rwp", std=0.05, num_perturbations=2, seed=2))
    clean, clean_loss, sgd_model = gradient(methods.SGD())
    for g, p, c in zip(got, perturbed, clean):
        torch.testing.assert_close(g, 0.3 * p + 0.7 * c)
    torch.testing.assert_close(loss, 0.3 * perturbed_loss + 0.7 * clean_loss)
    for key, value in stats_after.items():  # the clean pass's running statistics, as one SGD step leaves them
        torch.testing.assert_close(value, sgd_model.state_dict()[key])


def test_executors_agree_for_rwp_in_float64(batch):
    x, y = batch
    grads = {}
    for executor in ("loop", "split", "fused"):
        model = small_cnn(batchnorm=False).double()
        methods.build("rwp", std=0.1, num_perturbations=4, seed=0, executor=executor).backward(
            model, x.double(), y, cross_entropy)
        grads[executor] = [p.grad for p in model.parameters()]
    for executor in ("split", "fused"):
        for a, b in zip(grads["loop"], grads[executor]):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
