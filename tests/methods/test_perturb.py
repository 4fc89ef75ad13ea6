"""Which parameters are perturbed: kernels and norm scales, never biases, shifts or embeddings."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.functional import cross_entropy

from damp import methods
from damp.methods.perturb import frozen_batchnorm_stats, perturbed_parameters, split_batch
from damp.seeding import NOISE, derive_seed


class Zoo(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.pos = nn.Parameter(torch.zeros(1, 3, 4))
        self.conv = nn.Conv1d(4, 4, 1)
        self.bn = nn.BatchNorm1d(4)
        self.ln = nn.LayerNorm(4)
        self.gn = nn.GroupNorm(2, 4)
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.head = nn.Linear(4, 2)
        self.frozen = nn.Linear(4, 4)
        self.frozen.weight.requires_grad_(False)

    def forward(self, tokens):
        h = self.embed(tokens) + self.pos  # (B, 3, 4)
        h = self.bn(self.conv(h.transpose(1, 2))).transpose(1, 2)
        h = self.gn(h.transpose(1, 2)).transpose(1, 2)
        h = self.ln(h + self.attn(h, h, h, need_weights=False)[0])
        return self.head(self.frozen(h).mean(1))


def test_default_selection_names():
    names = [n for n, _ in perturbed_parameters(Zoo())]
    assert names == ["conv.weight", "bn.weight", "ln.weight", "gn.weight", "attn.in_proj_weight",
                     "attn.out_proj.weight", "head.weight"]


def test_tied_parameters_appear_once():
    a = nn.Linear(3, 3)
    model = nn.Sequential(a, nn.ReLU(), a)
    assert [n for n, _ in perturbed_parameters(model)] == ["0.weight"]


def test_damp_perturbs_only_the_selection_during_the_forward():
    torch.manual_seed(0)
    model = Zoo()
    clean = {n: p.detach().clone() for n, p in model.named_parameters()}
    seen = {}

    def record(module, args):
        seen.update({n: p.detach().clone() for n, p in model.named_parameters()})

    model.register_forward_pre_hook(record)
    tokens = torch.randint(0, 10, (4, 3))
    methods.DAMP(0.5, seed=0, batchnorm="ghost").backward(model, tokens, torch.tensor([0, 1, 0, 1]), cross_entropy)
    selected = {n for n, _ in perturbed_parameters(model)}
    for name, value in seen.items():
        if name in selected:
            assert not torch.equal(value, clean[name]), f"{name} should be perturbed"
        else:
            assert torch.equal(value, clean[name]), f"{name} must not be perturbed"
    assert {"bn.bias", "ln.bias", "conv.bias", "embed.weight", "pos", "frozen.weight"} <= set(seen) - selected


def test_custom_selection_is_used():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    seen = []
    model[1].register_forward_pre_hook(lambda mod, args: seen.append((model[0].weight.clone(),
                                                                      model[1].weight.clone())))
    w0, w1 = model[0].weight.detach().clone(), model[1].weight.detach().clone()
    only_head = lambda m: [("1.weight", m[1].weight)]  # noqa: E731
    head_only = methods.DAMP(0.5, seed=0, params=only_head, executor="loop")
    head_only.backward(model, torch.randn(2, 3), torch.tensor([0, 1]), cross_entropy)
    assert torch.equal(seen[0][0], w0) and not torch.equal(seen[0][1], w1)


def test_frozen_batchnorm_stats_restores_buffers():
    bn = nn.BatchNorm1d(3)
    before = [b.clone() for b in bn.buffers()]
    with frozen_batchnorm_stats(bn):
        bn(torch.randn(5, 3))
    assert all(torch.equal(a, b) for a, b in zip(bn.buffers(), before))


def test_split_batch_and_seed_derivation():
    parts = split_batch(torch.arange(6), torch.arange(6), 3)
    assert [p[0].tolist() for p in parts] == [[0, 1], [2, 3], [4, 5]]
    assert derive_seed(1, NOISE, 0, 5) == derive_seed(1, NOISE, 0, 5) != derive_seed(1, NOISE, 1, 5)
