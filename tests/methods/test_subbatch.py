"""Per-layer sub-batch executors: one semantics (whole-batch BatchNorm) whatever the executor."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.functional import cross_entropy

from damp import methods
from damp.methods.perturb import perturbed_parameters
from damp.methods.subbatch import Loop, PerLayer, PerLayerIfItFits, SubBatchExecutor, owners_fit, plan, settle
from damp.models import build_model
from tests.conftest import small_cnn

ZERO = {"damp": {"std": 0.0}, "daap": {"std": 0.0}, "sam": {"rho": 0.0}, "asam": {"rho": 0.0}}
NOISY = {"damp": {"std": 0.3, "seed": 1}, "daap": {"std": 0.05, "seed": 1}, "sam": {"rho": 0.2},
         "asam": {"rho": 1.0, "eta": 0.01}}
COMPILED = {**NOISY, "rwp": {"std": 0.01, "seed": 1}, "mrwp": {"std": 0.01, "seed": 1}}
TWO_PASSES = ("sam", "asam", "mrwp")  # SAM/ASAM's ascent and descent; m-RWP's perturbed and clean pass


class NoBN(nn.Module):
    """Conv (with groups and bias), GroupNorm, LayerNorm over tokens, attention, Linear on (B, T, C)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2, bias=False)
        self.gn = nn.GroupNorm(4, 8)
        self.ln = nn.LayerNorm(8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.token = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.gn(self.conv2(torch.relu(self.conv1(x)))))  # (B, 8, 4, 4)
        t = self.ln(h.flatten(2).transpose(1, 2))  # (B, 16, 8)
        t = self.token(t + self.attn(t, t, t, need_weights=False)[0])
        return self.head(torch.tanh(t).mean(1))


def grads(model, method, x, y):
    model.zero_grad()
    loss = method.backward(model, x, y, cross_entropy)
    return loss, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("executor", ["split", "fused"])
@pytest.mark.parametrize("name", list(NOISY))
def test_per_layer_executors_equal_the_loop_without_batchnorm(name, executor):
    torch.manual_seed(0)
    model = NoBN().double()
    x, y = torch.randn(8, 2, 8, 8, dtype=torch.float64), torch.randint(0, 3, (8,))
    assert "attn.out_proj.weight" in dict(methods.perturbed_parameters(model))  # read directly by MHA
    build = lambda ex: methods.build(name, num_perturbations=4, executor=ex, **NOISY[name])  # noqa: E731
    loop_loss, loop = grads(model, build("loop"), x, y)
    before = [p.detach().clone() for p in model.parameters()]
    loss, per_layer = grads(model, build(executor), x, y)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    torch.testing.assert_close(loss, loop_loss)
    for a, b in zip(per_layer, loop):
        torch.testing.assert_close(a, b)
    _, sgd = grads(model, methods.SGD(), x, y)
    assert not torch.allclose(per_layer[-2], sgd[-2])  # the perturbation did something
    if name == "damp":  # out_proj's noise reached the gradient (MultiheadAttention reads it directly)
        without = lambda m: [(n, p) for n, p in methods.perturbed_parameters(m) if "out_proj" not in n]  # noqa
        no_out = methods.DAMP(**build("loop").hparams(), executor=executor, params=without)
        names = [n for n, _ in model.named_parameters()]
        i = names.index("token.weight")
        assert not torch.allclose(grads(model, no_out, x, y)[1][i], per_layer[i])


@pytest.mark.parametrize("model_name", ["small_cnn", "resnet18", "preact_resnet18"])
@pytest.mark.parametrize("name", list(ZERO))
def test_zero_perturbation_gives_sgds_gradient_on_batchnorm_models(name, model_name):
    """Default arguments on CPU: with sigma = 0 or rho = 0 every method is SGD, BatchNorm included."""
    torch.manual_seed(0)
    channels = 1 if model_name == "small_cnn" else 3
    model = build_model(model_name, num_classes=10, in_channels=channels, image_size=16).double()
    x = torch.rand(16, channels, 16, 16, dtype=torch.float64)
    y = torch.randint(0, 10, (16,))
    reference = copy.deepcopy(model)
    sgd_loss, sgd = grads(reference, methods.SGD(), x, y)
    loss, got = grads(model, methods.build(name, num_perturbations=4, **ZERO[name]), x, y)
    torch.testing.assert_close(loss, sgd_loss)
    total = torch.cat([g.flatten() for g in sgd]).norm()
    difference = torch.cat([(a - b).flatten() for a, b in zip(got, sgd)]).norm()
    assert difference / total < 1e-10
    for a, b in zip(model.buffers(), reference.buffers()):  # running statistics updated once, alike
        torch.testing.assert_close(a, b)


def test_ghost_batchnorm_is_explicit_and_differs():
    x = torch.randn(8, 1, 6, 6, dtype=torch.float64) * 3 + 1
    y = torch.randint(0, 3, (8,))
    _, whole = grads(small_cnn(), methods.DAMP(0.0, 4), x, y)
    _, ghost = grads(small_cnn(), methods.DAMP(0.0, 4, batchnorm="ghost"), x, y)
    _, sgd = grads(small_cnn(), methods.SGD(), x, y)
    assert all(torch.allclose(a, b) for a, b in zip(whole, sgd))
    assert not torch.allclose(ghost[0], sgd[0])  # ghost BatchNorm: per-sub-batch statistics
    model = small_cnn()
    methods.DAMP(0.0, 4, batchnorm="ghost").backward(model, x, y, cross_entropy)
    assert int(model[1].num_batches_tracked) == 4  # one update per sub-batch, as asked
    with pytest.raises(ValueError, match="batchnorm='ghost'"):
        methods.DAMP(0.1, 4, executor="loop").backward(small_cnn(), x, y, cross_entropy)
    with pytest.raises(ValueError, match="whole-batch only"):
        methods.SAM(0.1, 4, executor="fused", batchnorm="ghost")
    with pytest.raises(ValueError, match="batchnorm"):
        methods.DAMP(0.1, 4, batchnorm="per-sample")
    with pytest.raises(ValueError, match="executor"):
        methods.DAMP(0.1, 4, executor="fast")


def test_batchnorm_statistics_are_whole_batch_and_updated_once():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 2))
    x, y = torch.randn(8, 1, 8, 8) * 3 + 1, torch.randint(0, 2, (8,))
    for executor in ("split", "fused"):
        m = copy.deepcopy(model)
        methods.DAMP(0.0, num_perturbations=4, seed=0, executor=executor).backward(m, x, y, cross_entropy)
        reference = nn.BatchNorm2d(4)
        with torch.no_grad():
            reference(model[0](x))
        torch.testing.assert_close(m[1].running_mean, reference.running_mean)
        torch.testing.assert_close(m[1].running_var, reference.running_var)
        assert int(m[1].num_batches_tracked) == 1


class ReadsChildWeight(nn.Module):
    """A parent that reads its child's weight directly, so the child's forward never runs."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(4, 3)

    def forward(self, x):
        return nn.functional.linear(x, self.inner.weight, self.inner.bias)


class OwnParameter(nn.Module):
    """A parameter held by a module with children (like a ViT position embedding), next to BatchNorm."""

    def __init__(self, batchnorm: bool):
        super().__init__()
        self.shift = nn.Parameter(torch.zeros(4))
        self.norm = nn.BatchNorm1d(4) if batchnorm else nn.Identity()
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.norm(x + self.shift))


def test_noise_is_never_silently_dropped():
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    for executor in ("split", "fused"):
        with pytest.raises(RuntimeError, match="never called"):
            methods.DAMP(0.1, 2, executor=executor).backward(ReadsChildWeight(), x, y, cross_entropy)
    model = ReadsChildWeight()
    for executor in ("loop", "auto"):  # the loop perturbs in place (auto's choice here: the model fails its check)
        methods.DAMP(0.1, 2, executor=executor).backward(model, x, y, cross_entropy)
    assert all("forward" not in vars(m) for m in model.modules())


class SequenceFirst(nn.Module):
    """Linear layers on (T, B, C): a per-layer kernel would split time steps, not sub-batches."""

    def __init__(self):
        super().__init__()
        self.token, self.head = nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x):  # x: (B, 4)
        t = torch.tanh(self.token(x.unsqueeze(0).expand(8, -1, -1)))  # (T=8, B, 4)
        return self.head(t.mean(0))


@pytest.mark.parametrize("name", list(NOISY))
def test_auto_without_batchnorm_runs_per_layer_where_it_fits(name):
    """CPU, no BatchNorm: a dry forward of one sub-batch checks the owners, then the per-layer kernels (the
    same math as the loop); models they do not fit (a parent reads a child's weight, sequence-first
    inputs) keep the loop. The check leaves no hook behind and does not move the global RNG."""
    torch.manual_seed(0)
    mlp = build_model("mlp", num_classes=3, in_channels=1, image_size=4, dropout=0.5).double().eval()
    x, y = torch.rand(8, 1, 4, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    build = lambda ex: methods.build(name, num_perturbations=4, executor=ex, **NOISY[name])  # noqa: E731
    auto, loop = build("auto"), build("loop")
    auto_loss, auto_grads = grads(mlp, auto, x, y)
    assert isinstance(_executor_of(auto), SubBatchExecutor)
    loop_loss, loop_grads = grads(mlp, loop, x, y)
    torch.testing.assert_close(auto_loss, loop_loss)
    for a, b in zip(auto_grads, loop_grads):
        torch.testing.assert_close(a, b)
    mlp.train()  # dropout draws from the global RNG in the dry forward
    torch.manual_seed(1)
    assert owners_fit(mlp, _executor_of(auto).plan.owners, x[:2])
    after_check = torch.rand(3)
    torch.manual_seed(1)
    assert torch.equal(after_check, torch.rand(3))
    assert all(not m._forward_pre_hooks for m in mlp.modules())
    xs, ys = torch.randn(8, 4), torch.randint(0, 3, (8,))
    for model in (ReadsChildWeight(), SequenceFirst()):
        method = build("auto")
        method.backward(model, xs, ys, cross_entropy)
        assert _executor_of(method) == Loop()


def test_settle_gives_the_plan_a_step_runs():
    """What `damp bench` reports: a PerLayerIfItFits plan settled on a batch, any other plan as it is."""
    x = torch.randn(8, 4)
    for model, expected in ((nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3)), PerLayer),
                            (ReadsChildWeight(), Loop), (SequenceFirst(), Loop)):
        params = [p for _, p in perturbed_parameters(model)]
        chosen = plan("auto", "whole", model, params, torch.device("cpu"))
        assert isinstance(chosen, PerLayerIfItFits)
        settled = settle(chosen, model, x, 4)
        assert isinstance(settled, expected)
        assert settled is chosen.per_layer or expected is Loop
        assert settle(settled, model, x, 4) is settled


def _executor_of(method):
    (entry,) = method._executors.values()  # (model, executor) of the one model the method ran on
    return entry[1]


def test_parameters_outside_leaf_modules():
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    # No BatchNorm: auto falls back to the loop, which computes the same thing.
    methods.SAM(0.1, 2).backward(OwnParameter(batchnorm=False), x, y, cross_entropy)
    with pytest.raises(ValueError, match="shift"):
        methods.SAM(0.1, 2).backward(OwnParameter(batchnorm=True), x, y, cross_entropy)
    methods.SAM(0.1, 2, batchnorm="ghost").backward(OwnParameter(batchnorm=True), x, y, cross_entropy)


def test_forwards_restored_when_the_loss_raises():
    model = NoBN()
    x, y = torch.randn(4, 2, 8, 8), torch.randint(0, 3, (4,))

    def boom(out, target):
        raise RuntimeError("boom")

    for executor in ("split", "fused"):
        with pytest.raises(RuntimeError):
            methods.DAMP(0.2, 2, executor=executor).backward(model, x, y, boom)
        assert all("forward" not in vars(m) for m in model.modules())
    methods.SGD().backward(model, x, y, cross_entropy)  # the model works as before


def test_split_and_fused_agree_under_bf16_autocast():
    """The split kernels cast by hand under autocast, so their backward runs in the forward's dtype."""
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=10, in_channels=3, image_size=16)
    x, y = torch.rand(16, 3, 16, 16), torch.randint(0, 10, (16,))
    out = {}
    for executor in ("split", "fused"):
        m = copy.deepcopy(model)
        methods.DAMP(0.1, 4, seed=0, executor=executor).backward(m, x, y, cross_entropy,
                                                                 autocast_dtype=torch.bfloat16)
        out[executor] = torch.cat([p.grad.flatten() for p in m.parameters()])
    assert all(p.grad is None for p in model.parameters())
    assert ((out["split"] - out["fused"]).norm() / out["fused"].norm()) < 0.02


@pytest.mark.parametrize("name", ["damp", "sam"])
def test_channels_last_gives_the_same_gradients_in_float64(name):
    """The fused kernels keep channels_last activations channels_last; the math is the layout's
    business only: fused on channels_last equals split on NCHW."""
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=10, in_channels=3, image_size=16).double()
    x, y = torch.rand(8, 3, 16, 16, dtype=torch.float64), torch.randint(0, 10, (8,))
    build = lambda ex: methods.build(name, num_perturbations=4, executor=ex, **NOISY[name])  # noqa: E731
    _, reference = grads(model, build("split"), x, y)
    last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    _, got = grads(last, build("fused"), x.contiguous(memory_format=torch.channels_last), y)
    for a, b in zip(got, reference):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_cpu_kernels_run_few_channel_convolutions_by_layout(monkeypatch):
    """Under "auto" on CPU, a convolution with few input channels runs fused on NCHW input and split on
    channels-last input (no stacking copies), with the same gradients either way."""
    from damp.methods import layer_kernels

    model = small_cnn()
    assert layer_kernels.kernel_for(model[0], "cpu") is layer_kernels.cpu_conv
    ran = []
    for name in ("fused_conv", "split_conv"):
        kernel = getattr(layer_kernels, name)
        monkeypatch.setattr(layer_kernels, name, lambda *args, n=name, k=kernel: (ran.append(n), k(*args))[1])
    x, y = torch.rand(8, 6, 6, 1, dtype=torch.float64).permute(0, 3, 1, 2), torch.randint(0, 3, (8,))
    results = {}
    # x's strides (HW, 1, W, 1) read as NHWC; the copy's (HW, HW, W, 1) as NCHW
    nchw = torch.empty(8, 1, 6, 6, dtype=torch.float64).copy_(x)
    for label, batch in (("nhwc", x), ("nchw", nchw)):
        ran.clear()
        results[label] = grads(model, methods.build("damp", num_perturbations=4, **NOISY["damp"]), batch, y)[1]
        assert set(ran) == {"split_conv" if label == "nhwc" else "fused_conv"}
    for a, b in zip(results["nhwc"], results["nchw"]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_the_layout_rule_is_pytorchs_own():
    """is_channels_last decides every ambiguous stride pattern as PyTorch's suggest_memory_format does."""
    import itertools

    from damp.methods.split_kernels import is_channels_last
    prims = pytest.importorskip("torch._prims_common")
    for shape in itertools.product([1, 2], [1, 3], [1, 4], [1, 5]):
        for order in itertools.permutations(range(4)):
            x = torch.zeros([shape[i] for i in order]).permute([order.index(i) for i in range(4)])
            expected = (prims.suggest_memory_format(x) == torch.channels_last
                        and x.is_contiguous(memory_format=torch.channels_last))
            assert is_channels_last(x) == expected, (shape, x.stride())


@pytest.mark.parametrize("executor", ["split", "fused"])
def test_a_one_channel_batch_from_nhwc_storage_runs_channels_last_as_under_sgd(executor):
    """The resident loader hands a one-channel batch with strides (HW, 1, W, 1); F.conv2d reads that as
    channels_last, so the sub-batch kernels do too (else DAMP runs NCHW beside an NHWC SGD), with the
    same gradients as the contiguous batch."""
    torch.manual_seed(0)
    model = small_cnn().double()
    x, y = torch.rand(8, 6, 6, 1, dtype=torch.float64).permute(0, 3, 1, 2), torch.randint(0, 3, (8,))
    layouts = []
    hook = model[0].register_forward_hook(
        lambda mod, i, out: layouts.append(not out.is_contiguous() and out.is_contiguous(
            memory_format=torch.channels_last)))
    model(x)
    method = methods.build("damp", num_perturbations=4, executor=executor, **NOISY["damp"])
    _, got = grads(model, method, x, y)
    hook.remove()
    assert layouts == [True, True]  # SGD's forward, then DAMP's
    _, reference = grads(model, methods.build("damp", num_perturbations=4, executor=executor, **NOISY["damp"]),
                         x.contiguous(), y)
    for a, b in zip(got, reference):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("executor", ["split", "fused"])
@pytest.mark.parametrize("name", list(COMPILED))
@pytest.mark.parametrize("setting", ["fp32", "channels_last_bf16"])
def test_torch_compile_traces_each_pass_once(name, executor, setting):
    """Five steps of a compiled BatchNorm model: one graph per forward pass, none after the first step,
    also channels_last under bf16 autocast (the GPU setting), where a non-contiguous ``out=`` breaks graphs."""
    import torch._dynamo
    import torch._dynamo.testing

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, in_channels=3, image_size=8, width=4)
    x, y = torch.rand(4, 3, 8, 8), torch.randint(0, 10, (4,))
    autocast = None
    if setting == "channels_last_bf16":
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        autocast = torch.bfloat16
    counter = torch._dynamo.testing.CompileCounter()
    compiled = torch.compile(model, backend=counter)
    method = methods.build(name, num_perturbations=2, executor=executor, **COMPILED[name])
    graphs = []
    for _ in range(5):
        model.zero_grad()
        method.backward(compiled, x, y, cross_entropy, autocast_dtype=autocast)
        graphs.append(counter.frame_count)
    passes = 2 if name in TWO_PASSES else 1
    assert graphs == [passes] * 5


@pytest.mark.parametrize("name", list(NOISY))
def test_torch_compile_under_auto_without_batchnorm_traces_once(name):
    """CPU, no BatchNorm: the owner check runs on the original module, so dynamo traces the first step only."""
    import torch._dynamo
    import torch._dynamo.testing

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = build_model("mlp", num_classes=3, in_channels=1, image_size=4)
    x, y = torch.rand(8, 1, 4, 4), torch.randint(0, 3, (8,))
    counter = torch._dynamo.testing.CompileCounter()
    compiled = torch.compile(model, backend=counter)
    method = methods.build(name, num_perturbations=4, **NOISY[name])
    graphs = []
    for _ in range(5):
        model.zero_grad()
        method.backward(compiled, x, y, cross_entropy)
        graphs.append(counter.frame_count)
    assert graphs == [2 if name in ("sam", "asam") else 1] * 5  # one graph per forward pass, as with BatchNorm
    assert isinstance(_executor_of(method), SubBatchExecutor)
