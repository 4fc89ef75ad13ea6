"""DAMP, DAAP, SAM and ASAM on CUDA against a float64 CPU reference of the same math.

The reference is written out here, independently of methods/subbatch.py: a small BatchNorm CNN in
which sub-batch k runs at its own weights w_k, every BatchNorm normalises over the whole batch (the
official synced BatchNorm), and the gradient of w is sum_k dL/dw_k at the perturbed point. DAMP/DAAP
noise comes from the method's own generators *on CUDA* (a CUDA generator draws other numbers than a
CPU one with the same seed), moved to the CPU in float64. Checked: the returned loss, every gradient
and the BatchNorm running statistics, for the fused and split executors (and "auto", which must be
fused on CUDA), in fp32 without TF32 (tight), under bf16 autocast (loose: see ``TOLERANCE``), with
channels_last, and under torch.compile.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from damp import methods
from damp.methods.subbatch import plan

pytestmark = pytest.mark.cuda

M, BATCH, CLASSES = 4, 32, 5
HPARAMS = {"damp": {"std": 0.3, "seed": 1}, "daap": {"std": 0.05, "seed": 1}, "sam": {"rho": 0.2},
           "asam": {"rho": 1.0, "eta": 0.01}}
# Relative errors against the float64 reference: of each gradient (L2), of the loss, and of the BatchNorm
# running statistics (rtol = atol). bf16 is loose on purpose: plain SGD under bf16 autocast is already
# 6-10% off float64 on this model's first layers (BatchNorm's backward subtracts nearly equal bf16
# numbers; measured on CPU), while a dropped or wrong perturbation moves those gradients by 30-100%.
TOLERANCE = {"fp32": {"grad": 1e-4, "loss": 1e-5, "stats": 1e-4},
             "bf16": {"grad": 0.2, "loss": 1e-2, "stats": 1e-2}}
EPS = 1e-5  # nn.BatchNorm2d's default
MOMENTUM = 0.1


class BNNet(nn.Module):
    """conv -> BN -> relu -> strided conv (bias) -> BN -> relu -> mean pool -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16)
        self.head = nn.Linear(16, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        h = torch.relu(self.bn2(self.conv2(h)))
        return self.head(h.mean((2, 3)))


def make_model() -> BNNet:
    torch.manual_seed(0)
    model = BNNet()
    with torch.no_grad():  # non-trivial BatchNorm affine parameters
        for bn in (model.bn1, model.bn2):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.1)
    return model


def make_batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, 3, 8, 8, generator=gen) * 2 + 0.5
    return x, torch.randint(0, CLASSES, (BATCH,), generator=gen)


# ------------------------------------------------------------------------------------- float64 reference

def _per_subbatch(fn, x: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
    return torch.cat([fn(xk, *[w[k] for w in weights]) for k, xk in enumerate(x.chunk(M))])


def _whole_batch_norm(h: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, stats: list) -> torch.Tensor:
    mean = h.mean((0, 2, 3), keepdim=True)
    var = h.var((0, 2, 3), unbiased=False, keepdim=True)
    stats.append((mean.flatten().detach(), h.var((0, 2, 3), unbiased=True).detach()))
    normalized = (h - mean) / torch.sqrt(var + EPS)
    return _per_subbatch(lambda n, g, b: n * g[None, :, None, None] + b[None, :, None, None], normalized,
                         gamma, beta)


def reference_loss(w: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
                   ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Mean cross-entropy with sub-batch k at weights ``w[name][k]``, BatchNorm over the whole batch.

    Returns the loss and each BatchNorm's (batch mean, unbiased batch variance).
    """
    stats: list = []
    h = _per_subbatch(lambda xk, k: F.conv2d(xk, k, padding=1), x, w["conv1.weight"])
    h = torch.relu(_whole_batch_norm(h, w["bn1.weight"], w["bn1.bias"], stats))
    h = _per_subbatch(lambda xk, k, b: F.conv2d(xk, k, b, stride=2, padding=1), h, w["conv2.weight"],
                      w["conv2.bias"])
    h = torch.relu(_whole_batch_norm(h, w["bn2.weight"], w["bn2.bias"], stats))
    logits = _per_subbatch(F.linear, h.mean((2, 3)), w["head.weight"], w["head.bias"])
    return F.cross_entropy(logits, y), stats


def _clean_copies(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().double().expand(M, *p.shape).clone() for n, p in model.named_parameters()}


def _gradients(loss: torch.Tensor, copies: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    grads = torch.autograd.grad(loss, list(copies.values()))
    return {n: g.sum(0) for n, g in zip(copies, grads)}  # dL/dw = sum_k dL/dw_k (no chain factor)


def reference_weight_noise(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                           noise_device: str = "cuda") -> tuple:
    """DAMP (w * (1 + eps_k)) or DAAP (w + eps_k) on the selected parameters, noise drawn on
    ``noise_device`` (CUDA in the tests)."""
    selected = [n for n, _ in methods.perturbed_parameters(model)]
    params = dict(model.named_parameters())
    fresh = methods.build(name, num_perturbations=M, **HPARAMS[name])  # step 0, as the method under test
    noise = fresh.draw([params[n] for n in selected], range(M), torch.device(noise_device))
    copies = _clean_copies(model)
    for n, eps in zip(selected, noise):
        eps = eps.cpu().double()
        copies[n] = copies[n] * (1 + eps) if name == "damp" else copies[n] + eps
    copies = {n: c.requires_grad_() for n, c in copies.items()}
    loss, stats = reference_loss(copies, x, y)
    return loss, _gradients(loss, copies), stats


def reference_sam(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple:
    """One ascent per sub-batch: eps_k = rho T^2 g_k / (||T g_k|| + 1e-12), T = |w| + eta (ASAM) or 1."""
    hp = HPARAMS[name]
    clean = {n: c.requires_grad_() for n, c in _clean_copies(model).items()}
    loss, stats = reference_loss(clean, x, y)
    grads = dict(zip(clean, torch.autograd.grad(loss, list(clean.values()))))  # (M, ...) each
    adaptive = {n for n, _ in methods.perturbed_parameters(model)} if name == "asam" else set()
    scale = {n: (c.detach().abs() + hp.get("eta", 0.0)) if n in adaptive else torch.ones_like(c)
             for n, c in clean.items()}
    norm = torch.sqrt(sum((scale[n] * g).flatten(1).square().sum(1) for n, g in grads.items()))  # (M,)
    perturbed = {n: (c.detach() + hp["rho"] * scale[n] ** 2 * grads[n] / (norm.view(-1, *[1] * (c.dim() - 1))
                                                                            + 1e-12)).requires_grad_()
                 for n, c in clean.items()}
    second, _ = reference_loss(perturbed, x, y)
    return loss, _gradients(second, perturbed), stats  # SAM returns the clean loss; stats from that pass


def reference(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple:
    """(loss, {parameter: gradient}, [(batch mean, unbiased batch var)] per BatchNorm), float64 on the CPU."""
    fn = reference_weight_noise if name in ("damp", "daap") else reference_sam
    return fn(name, model, x.double(), y)


# ------------------------------------------------------------------------------------------- the tests

def run_on_cuda(name: str, executor: str, precision: str, channels_last: bool, compiled: bool) -> tuple:
    """The method's loss, gradients (float64, CPU) and model after one backward on CUDA."""
    model = make_model().cuda()
    x, y = make_batch()
    x, y = x.cuda(), y.cuda()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    net = torch.compile(model) if compiled else model
    method = methods.build(name, num_perturbations=M, executor=executor, **HPARAMS[name])
    dtype = torch.bfloat16 if precision == "bf16" else None
    loss = method.backward(net, x, y, F.cross_entropy, autocast_dtype=dtype)
    grads = {n: p.grad.detach().double().cpu() for n, p in model.named_parameters()}
    return loss.double().cpu(), grads, model


def check_against_reference(name: str, executor: str, precision: str, channels_last: bool = False,
                            compiled: bool = False) -> None:
    loss, grads, model = run_on_cuda(name, executor, precision, channels_last, compiled)
    x, y = make_batch()
    ref_loss, ref_grads, stats = reference(name, make_model(), x, y)
    tol = TOLERANCE[precision]
    assert abs(loss.item() - ref_loss.item()) <= tol["loss"] * abs(ref_loss.item()), (loss, ref_loss)
    # A gradient that is zero in exact arithmetic (a shared bias before a whole-batch BatchNorm) is
    # measured against the size of the whole gradient instead of its own.
    floor = 1e-2 * torch.cat([g.flatten() for g in ref_grads.values()]).norm()
    for n, g in ref_grads.items():
        error = (grads[n] - g).norm() / torch.maximum(g.norm(), floor)
        assert error <= tol["grad"], f"{n}: relative error {error:.2e} > {tol['grad']:.0e}"
    for bn, (mean, var) in zip((model.bn1, model.bn2), stats):  # updated once, from the whole batch
        torch.testing.assert_close(bn.running_mean.double().cpu(), MOMENTUM * mean, rtol=tol["stats"],
                                   atol=tol["stats"])
        torch.testing.assert_close(bn.running_var.double().cpu(), (1 - MOMENTUM) + MOMENTUM * var,
                                   rtol=tol["stats"], atol=tol["stats"])
        assert int(bn.num_batches_tracked) == 1


@pytest.mark.parametrize("executor", ["fused", "split"])
@pytest.mark.parametrize("name", list(HPARAMS))
def test_fp32_matches_float64_reference(name, executor, full_fp32):
    check_against_reference(name, executor, "fp32")


@pytest.mark.parametrize("executor", ["fused", "split"])
@pytest.mark.parametrize("name", list(HPARAMS))
def test_fp32_channels_last_matches_float64_reference(name, executor, full_fp32):
    check_against_reference(name, executor, "fp32", channels_last=True)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("executor", ["fused", "split"])
@pytest.mark.parametrize("name", list(HPARAMS))
def test_bf16_autocast_matches_float64_reference(name, executor, channels_last):
    check_against_reference(name, executor, "bf16", channels_last=channels_last)


@pytest.mark.parametrize("executor", ["fused", "split"])
@pytest.mark.parametrize("name", list(HPARAMS))
def test_torch_compile_matches_float64_reference(name, executor, full_fp32):
    torch._dynamo.reset()
    check_against_reference(name, executor, "fp32", compiled=True)


@pytest.mark.parametrize("name", list(HPARAMS))
def test_auto_is_fused_on_cuda_and_matches_reference(name, full_fp32):
    model = make_model().cuda()
    assert plan("auto", "whole", model, list(model.parameters()), torch.device("cuda")).kernels == "fused"
    check_against_reference(name, "auto", "fp32")


def test_reference_is_sgd_without_perturbation():
    """The reference itself: with every copy equal to w it is the plain whole-batch loss and gradient."""
    model = make_model().double()
    x, y = make_batch()
    loss = F.cross_entropy(model(x.double()), y)
    loss.backward()
    copies = {n: c.requires_grad_() for n, c in _clean_copies(model).items()}
    ref_loss, _ = reference_loss(copies, x.double(), y)
    torch.testing.assert_close(ref_loss, loss)
    for (n, p), g in zip(model.named_parameters(), _gradients(ref_loss, copies).values()):
        torch.testing.assert_close(g, p.grad, msg=n)


def test_cuda_draws_differ_from_cpu_draws():
    """Why the reference takes its noise from CUDA: the same seed gives other numbers on the CPU."""
    p = [torch.zeros(1000)]
    method = methods.build("damp", num_perturbations=2, **HPARAMS["damp"])
    on_cuda = method.draw([q.cuda() for q in p], range(2), torch.device("cuda"))[0].cpu()
    on_cpu = method.draw(p, range(2), torch.device("cpu"))[0]
    assert not torch.equal(on_cuda, on_cpu)
    assert method.step == 0  # draw() does not advance the step: the reference sees step 0's noise


@pytest.mark.parametrize("native", [True, False], ids=["native_kernels", "generic"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_subbatch_batchnorm_matches_cpu_with_a_constant_channel(dtype, native, monkeypatch):
    """The CUDA BatchNorm kernels against the CPU passes in float64, with one constant channel (variance 0,
    which the statistics kernel reports as invstd = 0) and channels_last: finite values that agree, and
    running statistics that stay finite over two steps."""
    from damp.methods import sync_batchnorm

    monkeypatch.setattr(sync_batchnorm, "NATIVE_CUDA_KERNELS", native)
    torch.manual_seed(0)
    x = torch.randn(16, 6, 5, 5, dtype=torch.float64) * 2 + 1
    x[:, 2] = 0.5
    scale, shift, grad = torch.rand(4, 6) + 0.5, torch.randn(4, 6), torch.randn(16, 6, 5, 5)
    out = {}
    for device, dt in (("cpu", torch.float64), ("cuda", dtype)):
        xd = x.to(device, dt, copy=True).contiguous(memory_format=torch.channels_last).requires_grad_()
        s, b = scale.to(device, copy=True).requires_grad_(), shift.to(device, copy=True).requires_grad_()
        y, mean, var, _ = sync_batchnorm.SubBatchBatchNorm.apply(xd, s, b, 1e-5, None, None)
        (y.double() * grad.to(device)).sum().backward()
        out[device] = [t.detach().double().cpu() for t in (y, xd.grad, s.grad, b.grad, mean, var)]
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    for got, want in zip(out["cuda"], out["cpu"]):
        assert torch.isfinite(got).all()
        assert (got - want).abs().max() <= tol * max(want.abs().max(), 1.0)
    norm = nn.BatchNorm2d(6).cuda()
    for _ in range(2):
        sync_batchnorm.subbatch_batch_norm(norm, x.cuda().float(), scale.cuda(), shift.cuda(), None)
    assert torch.isfinite(norm.running_var).all()
    assert abs(float(norm.running_var[2]) - 0.9 ** 2) < 1e-5  # momentum 0.1 from 1 towards the variance 0
