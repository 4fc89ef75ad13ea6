"""Worker for tests/methods/test_ddp.py, launched with torchrun (gloo, CPU).

Usage: python -m torch.distributed.run --nproc_per_node=2 ddp_worker.py METHOD EXECUTOR OUT_FILE

Before joining the process group, rank 0 computes one process's gradients on the whole global
batch (float64, a BatchNorm model); then every rank computes its DDP gradients on its slice of the
same batch. Rank 0 saves both, with the parameters every rank holds after a few steps.
"""

import copy
import os
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from damp import methods

HPARAMS = {"damp": {"std": 0.3, "num_perturbations": 4, "seed": 11},
           "daap": {"std": 0.05, "num_perturbations": 4, "seed": 11},
           "sam": {"rho": 0.1, "num_perturbations": 4},
           "asam": {"rho": 0.5, "num_perturbations": 4},
           "sgd": {}}


def make_model() -> nn.Module:
    torch.manual_seed(0)  # identical initial weights on every rank
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).double()


def build(name: str, executor: str) -> methods.Method:
    return methods.build(name, **HPARAMS[name], **({"executor": executor} if name != "sgd" else {}))


def global_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + step)
    return torch.randn(16, 1, 6, 6, generator=gen, dtype=torch.float64) * 2 + 1, torch.randint(0, 3, (16,),
                                                                                               generator=gen)


def gradients(model, method, x, y) -> torch.Tensor:
    model.zero_grad()
    method.backward(model, x, y, nn.functional.cross_entropy)
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def main(name: str, executor: str, out: str) -> None:
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    single = make_model()
    reference = gradients(single, build(name, executor), *global_batch(0))  # one process, whole batch
    dist.init_process_group("gloo")
    net = make_model()
    model = DDP(net)
    method = build(name, executor)
    x, y = global_batch(0)
    rows = slice(rank * 16 // world, (rank + 1) * 16 // world)
    distributed = gradients(model, method, x[rows], y[rows])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt.step()
    for step in range(1, 3):
        x, y = global_batch(step)
        gradients(model, method, x[rows], y[rows])
        opt.step()
    params = torch.cat([p.detach().flatten() for p in net.parameters()])
    gathered = [torch.empty_like(params) for _ in range(world)]
    dist.all_gather(gathered, params)
    if rank == 0:
        torch.save({"reference": reference, "distributed": distributed, "params": gathered,
                    "buffers_one": [b.clone() for b in copy.deepcopy(single).buffers()],
                    "buffers_ddp": [b.clone() for b in make_model().buffers()]}, out)
    dist.barrier()  # no rank tears gloo down while another still uses it
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
    os._exit(0)  # skip finalisation: gloo's threads can abort at interpreter exit (see damp.cli.run)
