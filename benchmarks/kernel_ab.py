"""One change to the sub-batch kernels, before and after, in one round-robin on the layout the trainer feeds.

    python benchmarks/kernel_ab.py --change layout|statistics|cpu_conv|noise_draw|sam_ascent|sam_grads
                                   [--models small_cnn,resnet8] [--methods damp,daap,sam,asam]
                                   [--rounds 9] [--threads 2] [--copies] [--out FILE.json]

Every method (DAMP, DAAP, SAM, ASAM, or those of ``--methods``) is timed in both versions of the
change, beside SGD, on the small CNN and ResNet-8 of the Fashion-MNIST suites, or the ``--models``
(docs/performance.md, "Memory layout: what the bench times, and what training runs" and
"BatchNorm statistics on CPU, and 'auto' without BatchNorm"). With ``--copies``, nothing is timed:
one step of each method and version counts the elements written by copying operators (copy_, cat,
stack, clone), forward and backward, by operator. The changes:

- layout: the kernels' channels-last rule. A one-channel batch leaves the resident loader's crop with
  strides (HW, 1, W, 1), which PyTorch reads as channels-last, so SGD's convolutions run NHWC. The
  earlier rule (channels-last only when not also contiguous) read them as NCHW ("old"); the rule now
  is PyTorch's own ("new").
- statistics: the whole-batch BatchNorm statistics on CPU, by generic passes (a mean, then centred
  squares; "generic") or by the kernel nn.BatchNorm trains with ("native").
- cpu_conv: how the CPU kernels run a convolution with fewer than 64 input channels: always fused (one
  grouped convolution, with copies that stack the sub-batches into channel groups and back; the
  earlier rule, "channels"), or fused on NCHW input and split (M convolutions on contiguous slices and
  a concatenation) on channels-last input ("layout").
- noise_draw: DAMP's and DAAP's CPU noise draw, the M rows one after another ("serial") or shared over
  as many threads as torch's intra-op count, whatever the buffer's size ("shared"; methods/noise.py,
  ``fill_normal_``).
- sam_ascent: SAM's and ASAM's per-sub-batch ascent point, from an (M, P) perturbation and its
  temporaries, then added to omega ("temporaries", the earlier code, kept here), or written straight
  into the descent buffers ("in_place"; methods/sam.py, ``subbatch_ascent_points_``).
- sam_grads: where the split kernels put SAM's and ASAM's M per-copy ascent gradients of a weight: a
  new (M, *shape) tensor every step ("fresh", the earlier code), or the weight's descent buffer,
  which the ascent point then overwrites ("into_buffers"; ``Copies.grad_buffer``).
"""

from __future__ import annotations

import collections
import statistics
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import damp.methods.fused_kernels as fused_kernels
import damp.methods.layer_kernels as layer_kernels
import damp.methods.noise as noise
import damp.methods.sam as sam
import damp.methods.split_kernels as split_kernels
import damp.methods.sync_batchnorm as sync_batchnorm
from cpu_timing import parse_and_set_threads, ratio_line, timing_parser, write_figures
from damp import methods, speed, timing
from damp.methods.copies import Copies


def _earlier_rule(x: torch.Tensor) -> bool:
    memory_format = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim())
    return memory_format is not None and not x.is_contiguous() and x.is_contiguous(memory_format=memory_format)


def _channels_last_rule(rule):
    def use() -> None:
        for module in (split_kernels, fused_kernels, sync_batchnorm):  # each imported the function by name
            module.is_channels_last = rule
    return use


def _statistics(native: bool):
    def use() -> None:
        sync_batchnorm.NATIVE_CPU_STATISTICS = native
    return use


def _few_channel_conv(kernel):
    def use() -> None:  # the convolution row's kernel for few input channels, read when an executor is built
        row = next(i for i, r in enumerate(layer_kernels.LAYER_KERNELS) if r.split is split_kernels.split_conv)
        layer_kernels.LAYER_KERNELS[row] = layer_kernels.LAYER_KERNELS[row]._replace(few_channels=kernel)
    return use


def _draw_threshold(elements: int):
    def use() -> None:
        noise.PARALLEL_DRAW_MIN_ELEMENTS = elements
    return use


@torch.no_grad()
def _ascent_with_temporaries(out, params, grads, rho, scales=None) -> None:
    """The earlier ascent: T g, T^2 g and the perturbation each a new (M, *shape) tensor, then added to omega."""
    scales = scales if scales is not None else [None] * len(grads)
    scaled = [g if t is None else g * t for g, t in zip(grads, scales)]
    squares = torch.stack([s.to(torch.promote_types(s.dtype, torch.float32)).flatten(1).square().sum(1)
                           for s in scaled])
    factor = rho / (squares.sum(0).sqrt() + sam.NORM_EPS)
    eps = [(s if t is None else s * t) * factor.view(-1, *[1] * (s.dim() - 1)).to(s.dtype)
           for s, t in zip(scaled, scales)]
    for buffer, p, e in zip(out, params, eps):
        torch.add(e.to(p.dtype), p, out=buffer)


def _ascent(function):
    def use() -> None:
        sam.subbatch_ascent_points_ = function
    return use


def _ascent_gradients(into_buffers: bool):
    def use() -> None:  # sam.py builds its ascent Copies by this name
        sam.Copies = Copies if into_buffers else (lambda values, base=None, grad_buffer=None: Copies(values, base))
    return use


# change -> {version: install it}; the last version of each is the library's own, restored at the end
# (noise_draw's "shared" shares every buffer; the library shares those of 2^22 elements and more).
CHANGES = {"layout": {"old": _channels_last_rule(_earlier_rule),
                      "new": _channels_last_rule(split_kernels.is_channels_last)},
           "statistics": {"generic": _statistics(False), "native": _statistics(True)},
           "cpu_conv": {"channels": _few_channel_conv(fused_kernels.fused_conv),
                        "layout": _few_channel_conv(layer_kernels.cpu_conv)},
           "noise_draw": {"serial": _draw_threshold(1 << 62), "shared": _draw_threshold(0)},
           "sam_ascent": {"temporaries": _ascent(_ascent_with_temporaries),
                          "in_place": _ascent(sam.subbatch_ascent_points_)},
           "sam_grads": {"fresh": _ascent_gradients(False), "into_buffers": _ascent_gradients(True)}}


def compare(model_name: str, versions: dict, rounds: int, names: tuple[str, ...] = ("damp", "daap", "sam", "asam")
            ) -> dict:
    """ms per step and ratio to SGD of each method in each version, on the trainer's batch layout."""
    net, optimizer = speed.bench_model(model_name, torch.device("cpu"))
    channels, size, _ = speed.BENCH_MODELS[model_name]
    x = speed.training_batch(128, channels, size, torch.device("cpu"))
    y = torch.randint(0, 10, (128,))
    sgd = methods.SGD()
    steps = {"sgd": lambda: speed.train_step(net, optimizer, sgd, x, y, None)}
    for name in names:
        for tag, use in versions.items():
            method = speed.build_variant(name, "auto", 8)
            steps[f"{name}_{tag}"] = lambda m=method, u=use: (u(), speed.train_step(net, optimizer, m, x, y, None))
    per_sample = max(1, round(speed.SAMPLE_SECONDS / timing.time_steps(steps["sgd"], 2, torch.device("cpu"))))
    times = timing.round_robin_samples(steps, torch.device("cpu"), warmup=1, samples=rounds,
                                       steps_per_sample=per_sample)
    list(versions.values())[-1]()
    return {"ms_per_step": {k: 1e3 * statistics.median(v) for k, v in times.items()},
            "ratio_to_sgd": timing.paired_ratios(times, "sgd"), "rounds": rounds, "steps_per_sample": per_sample}


# The operators that write a copy of their input; a reshape that cannot view runs clone.
_COPYING = {torch.ops.aten.copy_.default, torch.ops.aten.cat.default, torch.ops.aten.stack.default,
            torch.ops.aten.clone.default}


class _CopyCensus(TorchDispatchMode):
    """Elements written by each copying operator while active (autograd's backward included)."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _COPYING:
            self.elements[str(func.overloadpacket.__name__)] += out.numel()
        return out


def count_copies(model_name: str, versions: dict) -> dict:
    """Per method and version: elements written by copying operators in one step, by operator (in millions)."""
    net, optimizer = speed.bench_model(model_name, torch.device("cpu"))
    channels, size, _ = speed.BENCH_MODELS[model_name]
    x = speed.training_batch(128, channels, size, torch.device("cpu"))
    y = torch.randint(0, 10, (128,))
    counts = {}
    for name in ("sgd", "damp", "daap", "sam", "asam"):
        for tag, use in versions.items() if name != "sgd" else [("", lambda: None)]:
            use()
            method = methods.SGD() if name == "sgd" else speed.build_variant(name, "auto", 8)
            speed.train_step(net, optimizer, method, x, y, None)  # the first step settles the executor
            with _CopyCensus() as census:
                speed.train_step(net, optimizer, method, x, y, None)
            counts[f"{name}_{tag}" if tag else name] = {op: n / 1e6 for op, n in sorted(census.elements.items())}
    list(versions.values())[-1]()
    return {"copied_million_elements": counts}


def main() -> int:
    parser = timing_parser(__doc__.splitlines()[0], rounds=9)
    parser.add_argument("--change", required=True, choices=sorted(CHANGES), help="which change to time")
    parser.add_argument("--models", default="small_cnn,resnet8", help="damp bench's models, comma-separated")
    parser.add_argument("--methods", default="damp,daap,sam,asam", help="methods to time, comma-separated")
    parser.add_argument("--copies", action="store_true", help="count copied elements per step instead of timing")
    args = parse_and_set_threads(parser)
    result = {"change": args.change, "threads": torch.get_num_threads(), "batch": 128, "num_perturbations": 8}
    for model_name in args.models.split(","):
        if args.copies:
            result[model_name] = count_copies(model_name, CHANGES[args.change])
            for key, ops in result[model_name]["copied_million_elements"].items():
                print(f"{model_name} {key}: " + ", ".join(f"{op} {n:.1f} M" for op, n in ops.items()))
            continue
        result[model_name] = compare(model_name, CHANGES[args.change], args.rounds, tuple(args.methods.split(",")))
        print(ratio_line(model_name, result[model_name]["ms_per_step"]["sgd"], result[model_name]["ratio_to_sgd"]))
    write_figures(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
