"""Worker for tests/methods/test_ddp.py, launched with torchrun (gloo, CPU).

Usage: python -m torch.distributed.run --nproc_per_node=2 ddp_worker.py METHOD OUT_FILE
Every rank trains a few steps on its own data shard; rank 0 saves the gathered results.
"""

import os
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from damp import methods

HPARAMS = {"damp": {"std": 0.3, "num_perturbations": 2, "seed": 11, "executor": "loop"},  # loop: the hook sees noise
           "daap": {"std": 0.05, "num_perturbations": 2, "seed": 11},
           "sam": {"rho": 0.1, "num_perturbations": 2},
           "sgd": {}}


def main(name: str, out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # identical initial weights on every rank
    net = nn.Sequential(nn.Linear(5, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 3))
    model = DDP(net)
    seen = []
    net[0].register_forward_pre_hook(lambda m, a: seen.append(m.weight.detach().clone()))
    method = methods.build(name, **HPARAMS[name])
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(100 + rank)  # a different data shard per rank
    for _ in range(3):
        x, y = torch.randn(8, 5, generator=gen), torch.randint(0, 3, (8,), generator=gen)
        opt.zero_grad()
        method.backward(model, x, y, nn.functional.cross_entropy)
        opt.step()
    params = torch.cat([p.detach().flatten() for p in net.parameters()])
    gathered_params = [torch.empty_like(params) for _ in range(world)]
    dist.all_gather(gathered_params, params)
    first_seen = seen[0].flatten()
    gathered_seen = [torch.empty_like(first_seen) for _ in range(world)]
    dist.all_gather(gathered_seen, first_seen)
    if rank == 0:
        torch.save({"params": gathered_params, "seen": gathered_seen}, out)
    dist.barrier()  # no rank tears gloo down while another still uses it
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
    os._exit(0)  # skip finalisation: gloo's threads can abort at interpreter exit (see damp.cli.run)
