"""Golden logits: damp's models against the official Flax models (trungtrinh44/DAMP) on shared weights.

The test side (``randomise_``, ``golden_input``, ``GOLDEN``) needs only numpy and torch. Every tensor of a
damp model's state_dict is overwritten, in state_dict order, with seeded uniform noise, and the input is
seeded noise too, so the weights and the input are reproducible without storing them.

Regenerating the expected logits (``OFFICIAL_LOGITS`` in test_fidelity.py) needs jax, flax, ml_collections and a
checkout of the official code; it is a manual step, never run by the tests::

    python -m tests.models.golden /path/to/trungtrinh44-DAMP

It builds damp's model, randomises it, converts the state_dict to the Flax ``params`` / ``batch_stats``
trees of the official module (conv kernels OIHW -> HWIO, linear weights transposed, the stacked q/k/v
``in_proj_weight`` split into three (D, heads, D/heads) kernels), runs the official module and prints its
logits.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch

from damp.models import build_model

# name -> (damp builder kwargs, input (B, C, H, W)); small inputs keep the test fast, and every input size
# still exercises the strided "SAME" padding (all sizes are even at every stride-2 layer).
GOLDEN = {
    "resnet18": ({"num_classes": 10, "image_size": 32}, (2, 3, 32, 32)),
    "preact_resnet18": ({"num_classes": 10, "image_size": 32}, (2, 3, 32, 32)),
    "resnet50": ({"num_classes": 10, "image_size": 64}, (2, 3, 64, 64)),
    "vit_s16": ({"num_classes": 10, "image_size": 32}, (2, 3, 32, 32)),
}


def _uniform(rng: np.random.Generator, shape: tuple[int, ...], lo: float, hi: float) -> torch.Tensor:
    values = lo + (hi - lo) * rng.random(int(np.prod(shape)))
    return torch.from_numpy(values.astype(np.float32).reshape(shape))


@torch.no_grad()
def randomise_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Overwrite every state_dict tensor with seeded noise whose scale keeps activations O(1)."""
    rng = np.random.default_rng(seed)
    for name, t in model.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        if t.dim() >= 2:  # conv / linear / q-k-v kernels: variance 1 / fan_in
            bound = math.sqrt(3.0 / t[0].numel())
            t.copy_(_uniform(rng, t.shape, -bound, bound))
        elif name.endswith(("running_var", "weight")):  # norm scales and variances
            t.copy_(_uniform(rng, t.shape, 0.5, 1.5))
        else:  # biases, norm shifts, running means
            t.copy_(_uniform(rng, t.shape, -0.2, 0.2))
    return model


def golden_input(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    """Seeded [0, 1] pixels."""
    return _uniform(np.random.default_rng(seed), shape, 0.0, 1.0)


def golden_model(name: str) -> torch.nn.Module:
    """damp's model, identity input normalisation (the official models take normalised inputs), randomised."""
    kwargs, _ = GOLDEN[name]
    return randomise_(build_model(name, **kwargs, mean=(0.0,) * 3, std=(1.0,) * 3))


# ---- manual regeneration against the official Flax modules (needs jax/flax; never imported by tests) ----

def _to_flax(name: str, model: torch.nn.Module) -> dict:
    """damp state_dict -> {"params": ..., "batch_stats": ...} in the official modules' naming."""
    def a(t):
        return t.detach().numpy()

    def conv(m):
        return {"kernel": a(m.weight).transpose(2, 3, 1, 0)}

    def bn(m):
        return {"scale": a(m.weight), "bias": a(m.bias)}, {"mean": a(m.running_mean), "var": a(m.running_var)}

    params: dict = {}
    stats: dict = {}
    if name.startswith("vit"):
        d = model.head.in_features
        heads = model.blocks[0].attn.num_heads
        params["embedding"] = {**conv(model.patchify), "bias": a(model.patchify.bias)}
        tr = params["Transformer"] = {}
        for i, b in enumerate(model.blocks):
            w, bias = a(b.attn.in_proj_weight), a(b.attn.in_proj_bias)
            attn = {k: {"kernel": w[j * d:(j + 1) * d].T.reshape(d, heads, d // heads),
                        "bias": bias[j * d:(j + 1) * d].reshape(heads, d // heads)}
                    for j, k in enumerate(("query", "key", "value"))}
            attn["out"] = {"kernel": a(b.attn.out_proj.weight).T.reshape(heads, d // heads, d),
                           "bias": a(b.attn.out_proj.bias)}
            tr[f"encoderblock_{i}"] = {
                "LayerNorm_0": {"scale": a(b.norm1.weight), "bias": a(b.norm1.bias)},
                "MultiHeadDotProductAttention_0": attn,
                "LayerNorm_1": {"scale": a(b.norm2.weight), "bias": a(b.norm2.bias)},
                "MlpBlock_0": {f"Dense_{j}": {"kernel": a(lin.weight).T, "bias": a(lin.bias)}
                               for j, lin in enumerate((b.mlp[0], b.mlp[3]))},
            }
        tr["encoder_norm"] = {"scale": a(model.norm.weight), "bias": a(model.norm.bias)}
        params["head"] = {"kernel": a(model.head.weight).T, "bias": a(model.head.bias)}
        return {"params": params}
    preact = name == "preact_resnet18"
    params["conv_init"] = conv(model.stem[0])
    if not preact:
        params["bn_init"], stats["bn_init"] = bn(model.stem[1])
    cls = {"resnet18": "ResNetBlockV1", "preact_resnet18": "ResNetBlockV2",
           "resnet50": "BottleneckResNetBlock"}[name]
    for i, b in enumerate(blk for stage in model.stages for blk in stage):
        p, s = params[f"{cls}_{i}"], stats[f"{cls}_{i}"] = {}, {}
        convs = [b.conv1, b.conv2] + ([b.conv3] if hasattr(b, "conv3") else [])
        norms = [b.bn1, b.bn2] + ([b.bn3] if hasattr(b, "bn3") else [])
        for j, (c, n) in enumerate(zip(convs, norms)):
            p[f"Conv_{j}"] = conv(c)
            p[f"BatchNorm_{j}"], s[f"BatchNorm_{j}"] = bn(n)
        if preact and b.shortcut is not None:
            p["conv_proj"] = conv(b.shortcut)
        elif not preact and len(b.shortcut):
            p["conv_proj"] = conv(b.shortcut[0])
            p["norm_proj"], s["norm_proj"] = bn(b.shortcut[1])
    if preact:
        params["bn_final"], stats["bn_final"] = bn(model.final[0])
    params["classify"] = {"kernel": a(model.head.weight).T, "bias": a(model.head.bias)}
    return {"params": params, "batch_stats": stats}


def main(official_root: str) -> None:  # pragma: no cover - manual tool
    import jax.numpy as jnp

    sys.path.insert(0, official_root)
    import models as official

    builders = {
        "resnet18": lambda n: official.ResNet18(num_classes=n, bn_axis_name=None),
        "preact_resnet18": lambda n: official.PreActResNet18(num_classes=n, bn_axis_name=None),
        "resnet50": lambda n: official.ResNet50(num_classes=n, bn_axis_name=None, low_res=False),
        "vit_s16": lambda n: official.ViT_S1k16(num_classes=n),
    }
    for name, (kwargs, shape) in GOLDEN.items():
        variables = _to_flax(name, golden_model(name))
        x = jnp.asarray(golden_input(shape).permute(0, 2, 3, 1).numpy())
        module = builders[name](kwargs["num_classes"])
        if name.startswith("vit"):
            out = {"eval": module.apply(variables, x, is_training=False)}
        else:
            out = {"eval": module.apply(variables, x, False)[0],
                   "train": module.apply(variables, x, True, mutable=["batch_stats"])[0][0]}
        for mode, logits in out.items():  # the layout of OFFICIAL_LOGITS in test_fidelity.py
            print(f'    ("{name}", "{mode}"): [')
            for row in np.asarray(logits).tolist():
                print("        [" + ", ".join(f"{v:.7g}" for v in row[:5]) + ",")
                print("         " + ", ".join(f"{v:.7g}" for v in row[5:]) + "],")
            print("    ],")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1])
