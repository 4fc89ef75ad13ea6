"""Fidelity of damp's models to the official code (trungtrinh44/DAMP) and big_vision's plain ViT.

- parameter counts equal the official Flax models';
- logits equal the official Flax models' on shared random weights (golden values, see golden.py);
- initialisation statistics match the official / big_vision initialisers, with tolerances that PyTorch's
  default initialisation fails;
- PreAct blocks take both paths from relu(bn(x)); strided windows use Flax's "SAME" padding.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from damp.models import build_model
from damp.models.resnet import BasicBlock, Bottleneck, PreActBlock, SamePad2d
from damp.models.vit import Block, sincos_2d
from tests.models.golden import GOLDEN, golden_input, golden_model

# Trainable parameters of the official Flax models, counted as the sum of the sizes of the ``params``
# leaves of ``module.init(...)`` (BatchNorm running statistics live in ``batch_stats`` and are not counted,
# as they are buffers in torch): ResNet18(num_classes=10) on 32x32, PreActResNet18(num_classes=200) on
# 64x64, ResNet50(num_classes=1000, low_res=False), ViT_S1k16 and ViT_B1k16 (num_classes=1000) on 224x224.
# The ViT counts also follow by hand from the module definitions (sincos2d: no position parameters; gap:
# no [cls] token; no pre-logits): with width D, MLP 4D, depth L,
#   patch conv 16*16*3*D + D, per block 2 LayerNorms 4D + q/k/v/out 4(D*D + D) + MLP 8D*D + 5D,
#   final LayerNorm 2D, head 1000*D + 1000.
OFFICIAL_PARAMS = {
    ("resnet18", 10, 32): 11_173_962,
    ("preact_resnet18", 200, 64): 11_269_640,
    ("resnet50", 1000, 224): 25_557_032,
    ("vit_s16", 1000, 224): 21_974_632,
    ("vit_b16", 1000, 224): 86_415_592,
}

# Logits of the official Flax modules on the weights of ``golden_model(name)`` and the input
# ``golden_input(shape)``, produced by ``python -m tests.models.golden <official checkout>``. "train" runs
# BatchNorm on batch statistics. damp before the fidelity fixes was off by 7-36% (ResNets: symmetric
# instead of "SAME" strided padding, PreAct identity shortcut from x) and 7e-5 (ViT: exact GELU).
OFFICIAL_LOGITS = {
    ("resnet18", "eval"): [
        [1.043313, -0.2158447, 0.9394555, -1.249561, -1.202296,
         0.9202265, 0.04052416, -0.7258062, -1.16983, 1.525774],
        [1.186507, -0.2057128, 0.8217379, -1.207762, -1.284518,
         0.8806098, 0.1551237, -0.7272194, -1.160504, 1.670444],
    ],
    ("resnet18", "train"): [
        [0.3202355, 0.7627394, 0.5965432, -1.574649, -1.250753,
         -0.883455, 0.10337, -2.025024, -0.007487956, 1.216745],
        [0.1989935, 0.3565652, 0.6045232, -1.622631, -1.632143,
         -0.5271344, 0.4893739, -1.476909, -0.04286983, 1.473336],
    ],
    ("preact_resnet18", "eval"): [
        [0.2151013, -0.3597931, -0.4439175, -0.2649839, 1.073791,
         0.9634579, -0.4141011, 0.4882152, 1.107852, 2.117924],
        [0.190066, -0.3997984, -0.4906588, -0.2473557, 1.183115,
         0.7484877, -0.4904077, 0.5290099, 1.290549, 2.198895],
    ],
    ("preact_resnet18", "train"): [
        [0.4598398, -0.2116584, -0.4273359, -0.0553325, 0.2279228,
         -0.006665036, -0.1589664, 0.380246, 0.1569154, 0.7507735],
        [0.3663764, -0.1356561, -0.3420101, -0.05008745, 0.152816,
         0.03845845, 0.03982563, 0.2697134, 0.4044604, 0.5523887],
    ],
    ("resnet50", "eval"): [
        [0.1504808, 2.289809, -1.432133, -4.257117, 0.4724462,
         1.138353, 1.614934, -0.7172421, -3.12142, -1.841044],
        [0.09291364, 2.320417, -1.525867, -4.1113, 0.4776203,
         1.216392, 1.40957, -0.6715249, -3.13827, -1.825072],
    ],
    ("resnet50", "train"): [
        [0.5240893, 0.672507, -1.217796, -2.419919, -0.8503969,
         2.305484, -0.01379623, 0.8971711, -2.608782, -1.31973],
        [0.2976597, 1.259472, 1.451332, -3.336474, -0.9442713,
         0.9859588, -0.0953633, 0.3158424, -1.819601, -1.41124],
    ],
    ("vit_s16", "eval"): [
        [-0.8073869, 0.4040423, 1.009204, -0.2385958, -0.7150748,
         1.749858, -1.971382, -0.8631049, 1.077504, -0.6546296],
        [-0.7556726, 0.5646595, 1.061083, -0.3370633, -0.5734688,
         1.616868, -1.739753, -1.007756, 1.535062, -0.4513053],
    ],
}


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _std(t: torch.Tensor) -> float:
    return t.detach().double().std().item()


def _close(value: float, target: float, rel: float = 0.03) -> bool:
    return abs(value - target) <= rel * target


@functools.cache
def _official_size_model(name: str) -> nn.Module:
    """The model of ``OFFICIAL_PARAMS`` for ``name``, seeded, built once (tests must not modify it)."""
    (_, classes, size), = [k for k in OFFICIAL_PARAMS if k[0] == name]
    torch.manual_seed(0)
    return build_model(name, num_classes=classes, image_size=size)


@functools.cache
def _golden_logits(name: str) -> dict[str, torch.Tensor]:
    model, x = golden_model(name), golden_input(GOLDEN[name][1])
    with torch.no_grad():
        return {mode: model.train(mode == "train")(x) for n, mode in OFFICIAL_LOGITS if n == name}


@pytest.fixture(scope="module")
def vit_s():
    return _official_size_model("vit_s16")


# ---------------------------------------------------------------- parameter counts

@pytest.mark.parametrize("key", list(OFFICIAL_PARAMS), ids=lambda k: k[0])
def test_parameter_count_matches_official(key):
    assert _count(_official_size_model(key[0])) == OFFICIAL_PARAMS[key]


@pytest.mark.parametrize("name,d", [("vit_s16", 384), ("vit_b16", 768)])
def test_vit_count_by_hand(name, d):
    per_block = 4 * d + 4 * (d * d + d) + 8 * d * d + 5 * d
    total = 16 * 16 * 3 * d + d + 12 * per_block + 2 * d + 1000 * d + 1000
    assert total == OFFICIAL_PARAMS[(name, 1000, 224)]


# ---------------------------------------------------------------- golden logits vs the official Flax models

@pytest.mark.parametrize("key", list(OFFICIAL_LOGITS), ids=lambda k: f"{k[0]}-{k[1]}")
def test_logits_match_official_flax(key):
    logits = _golden_logits(key[0])[key[1]]
    expected = torch.tensor(OFFICIAL_LOGITS[key])
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4 * expected.abs().max().item())


# ---------------------------------------------------------------- PreAct blocks (official ResNetBlockV2)

def _randomised_block(cin: int, cout: int, stride: int) -> PreActBlock:
    torch.manual_seed(0)
    block = PreActBlock(cin, cout, stride)
    with torch.no_grad():
        for bn in (block.bn1, block.bn2):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 1.5)
    return block.eval()


def test_preact_identity_block_adds_the_preactivated_input():
    block = _randomised_block(8, 8, 1)
    assert block.shortcut is None
    x = torch.randn(2, 8, 6, 6)
    x_before = x.clone()
    with torch.no_grad():
        a = F.relu(block.bn1(x))
        expected = block.conv2(F.relu(block.bn2(block.conv1(a)))) + a
        out = block(x)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(x, x_before)  # the input is not modified in place
    with torch.no_grad():  # and it is *not* the raw input that is added
        assert (out - (expected - a + x)).abs().max() > 0.1


def test_preact_projection_block_projects_the_preactivated_input_without_bn():
    block = _randomised_block(8, 16, 2)
    assert isinstance(block.shortcut, nn.Conv2d) and block.shortcut.kernel_size == (1, 1)
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        a = F.relu(block.bn1(x))
        h = F.conv2d(F.pad(a, (0, 1, 0, 1)), block.conv1.weight, stride=2)  # "SAME": pad bottom/right
        branch = block.conv2(F.relu(block.bn2(h)))
        torch.testing.assert_close(block(x), branch + block.shortcut(a))


def test_preact_resnet_stem_and_final_norm():
    model = _official_size_model("preact_resnet18")
    assert [type(m) for m in model.stem] == [nn.Conv2d]  # the official resnet_v2 stem: conv only
    assert model.stem[0].kernel_size == (3, 3) and model.stem[0].stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert [type(m) for m in model.final] == [nn.BatchNorm2d, nn.ReLU]
    # no zero-initialised BN scales in the pre-activation blocks
    assert all(bool((m.weight == 1).all()) for m in model.modules() if isinstance(m, nn.BatchNorm2d))


# ---------------------------------------------------------------- "SAME" padding

@pytest.mark.parametrize("n,k,s,expected", [
    (32, 3, 2, (0, 1)), (7, 3, 2, (1, 1)), (224, 7, 2, (2, 3)), (112, 3, 2, (0, 1)), (9, 7, 2, (3, 3)),
    (8, 1, 2, (0, 0)), (5, 3, 1, (1, 1)),
])
def test_same_pad_amounts(n, k, s, expected):
    assert SamePad2d(k, s)._amount(n) == expected
    out = SamePad2d(k, s)(torch.zeros(1, 1, n, n))
    assert out.shape[-1] == n + sum(expected)
    assert (out.shape[-1] - k) // s + 1 == math.ceil(n / s)  # "SAME": output size ceil(n / s)


def test_strided_conv_windows_are_centred_on_odd_pixels():
    """Flax "SAME" on an even input: the 3x3/2 window i covers rows 2i..2i+2, centred on 2i+1."""
    block = BasicBlock(1, 1, 2)
    with torch.no_grad():
        block.conv1.weight.zero_()
        block.conv1.weight[0, 0, 1, 1] = 1.0
    x = torch.arange(64.0).view(1, 1, 8, 8)
    torch.testing.assert_close(block.conv1(block.pad1(x)), x[..., 1::2, 1::2])
    bottleneck = Bottleneck(4, 1, 2)
    assert isinstance(bottleneck.pad2, SamePad2d) and bottleneck.conv2.padding == (0, 0)


def test_imagenet_stem_padding_and_max_pool():
    model = _official_size_model("resnet50")
    assert model.stem[0].kernel_size == (7, 7) and model.stem[0].padding == (0, 0)
    assert model.stem_pad._amount(224) == (2, 3)
    x = torch.randn(1, 2, 6, 6)
    out = model.maxpool(x)
    # Flax max_pool(3, 2, "SAME") on 6 pixels: windows [0, 3), [2, 5), [4, 6) (the last one cut short)
    expected = torch.stack([torch.stack([x[..., r:r + 3, c:c + 3].amax((-2, -1)) for c in (0, 2, 4)], -1)
                            for r in (0, 2, 4)], -2)
    torch.testing.assert_close(out, expected)
    assert model.stem_pad(torch.zeros(1, 3, 224, 224)).shape[-1] == 229
    assert model.stages[0][0].conv2.padding == (1, 1)  # stride-1 convs keep symmetric padding


# ---------------------------------------------------------------- ResNet initialisation

@pytest.mark.parametrize("name,classes", [("resnet18", 10), ("preact_resnet18", 200), ("resnet50", 1000)])
def test_resnet_conv_and_head_init(name, classes):
    model = _official_size_model(name)
    conv = model.stages[3][1].conv2  # a 3x3 conv with 512 output channels
    w = conv.weight.detach().double()
    fan_out = w.shape[0] * w[0, 0].numel()
    assert _close(_std(w), math.sqrt(2.0 / fan_out))  # He normal, fan_out (torch's default is ~2.5x smaller)
    kurtosis = ((w - w.mean()) ** 4).mean() / w.var() ** 2 - 3
    assert abs(kurtosis) < 0.1  # normal, not uniform (-1.2) nor truncated normal
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    bound = 1 / math.sqrt(classes)  # official dense_layer_init_fn: U(-1, 1) / sqrt(num_classes)
    head = model.head.weight.detach()
    assert head.abs().max() <= bound and head.abs().max() > 0.97 * bound
    assert _close(_std(head), bound / math.sqrt(3), 0.05)
    assert (model.head.bias == 0).all()


@pytest.mark.parametrize("name,block,last",
                         [("resnet18", BasicBlock, "bn2"), ("resnet50", Bottleneck, "bn3")])
def test_last_bn_scale_of_each_residual_branch_is_zero(name, block, last):
    model = _official_size_model(name)
    blocks = [m for m in model.modules() if isinstance(m, block)]
    assert blocks and all((getattr(b, last).weight == 0).all() for b in blocks)
    zero = {id(getattr(b, last)) for b in blocks}
    others = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and id(m) not in zero]
    assert others and all((m.weight == 1).all() and (m.bias == 0).all() for m in others)  # incl. norm_proj
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.eps == 1e-5 and m.momentum == 0.1 for m in bns)


# ---------------------------------------------------------------- ViT initialisation (big_vision / official)

def test_vit_attention_init_is_xavier_per_dxd_map(vit_s):
    d = 384
    bound = math.sqrt(6.0 / (d + d))
    for block in (vit_s.blocks[0], vit_s.blocks[11]):
        w = block.attn.in_proj_weight.detach()
        for i in range(3):  # q, k, v each: std sqrt(2 / (D + D)); torch default sqrt(2 / (3D + D))
            part = w[i * d:(i + 1) * d]
            assert _close(_std(part), math.sqrt(2.0 / (d + d)))
            assert part.abs().max() <= bound and part.abs().max() > 0.99 * bound
        out = block.attn.out_proj.weight.detach()
        assert _close(_std(out), math.sqrt(2.0 / (d + d)))  # torch's default would be 1 / sqrt(3D)
        assert (block.attn.in_proj_bias == 0).all() and (block.attn.out_proj.bias == 0).all()


def test_vit_mlp_init(vit_s):
    d, h = 384, 1536
    for block in vit_s.blocks:
        for lin in (block.mlp[0], block.mlp[3]):
            assert _close(_std(lin.weight), math.sqrt(2.0 / (d + h)))  # xavier-uniform
            assert lin.weight.abs().max() <= math.sqrt(6.0 / (d + h))
            assert 0.7e-6 < _std(lin.bias) < 1.3e-6  # N(0, 1e-6^2)
            assert lin.bias.abs().max() < 1e-5


def test_vit_patch_embedding_is_lecun_normal(vit_s):
    w = vit_s.patchify.weight.detach()
    fan_in = 3 * 16 * 16
    assert _close(_std(w), math.sqrt(1.0 / fan_in))  # torch's default is 1 / sqrt(3 fan_in)
    cut = 2 * math.sqrt(1.0 / fan_in) / 0.87962566103423978  # truncated at 2 pre-truncation stds
    assert w.abs().max() <= cut * (1 + 1e-6) and w.abs().max() > 0.95 * cut
    assert (vit_s.patchify.bias == 0).all()


def test_vit_head_norms_and_no_learned_position(vit_s):
    assert (vit_s.head.weight == 0).all() and (vit_s.head.bias == 0).all()
    norms = [m for m in vit_s.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 25
    assert all(m.eps == 1e-6 and (m.weight == 1).all() and (m.bias == 0).all() for m in norms)
    assert "pos" not in dict(vit_s.named_parameters()) and "pos" not in vit_s.state_dict()
    assert vit_s.head.in_features == 384  # no pre-logits layer


def test_vit_b_init_scales():
    model = _official_size_model("vit_b16")
    d = 768
    block = model.blocks[5]
    q = block.attn.in_proj_weight.detach()[:d]
    assert _close(_std(q), math.sqrt(1.0 / d))
    assert _close(_std(block.mlp[0].weight), math.sqrt(2.0 / (5 * d)))
    assert _close(_std(model.patchify.weight), math.sqrt(1.0 / 768))
    assert (model.head.weight == 0).all()


def test_vit_gelu_is_tanh_approximation():
    block = Block(8, 2, 32, 0.0)
    assert isinstance(block.mlp[1], nn.GELU) and block.mlp[1].approximate == "tanh"
    x = torch.linspace(-4, 4, 101)
    tanh_gelu = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    torch.testing.assert_close(block.mlp[1](x), tanh_gelu)


def test_vit_pools_by_averaging_normed_tokens():
    torch.manual_seed(0)
    model = build_model("vit_s16", num_classes=5, image_size=32).eval()
    nn.init.normal_(model.head.weight)
    seen = {}
    model.norm.register_forward_hook(lambda m, i, o: seen.setdefault("tokens", o))
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 32, 32))
    assert seen["tokens"].shape == (2, 4, 384)  # 2x2 patches, no [cls] token
    torch.testing.assert_close(logits, model.head(seen["tokens"].mean(1)))


def test_sincos_position_embedding():
    pe = sincos_2d(2, 3, 8)  # dim/4 = 2 frequencies: omega = (1, 1/10000)
    assert pe.shape == (6, 8)
    omega = torch.tensor([1.0, 1e-4])
    for token, (y, x) in enumerate([(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]):  # row-major patches
        expected = torch.cat([(x * omega).sin(), (x * omega).cos(), (y * omega).sin(), (y * omega).cos()])
        torch.testing.assert_close(pe[token], expected)
