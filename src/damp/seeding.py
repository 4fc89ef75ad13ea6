"""Seeds and keyed random numbers: every random draw in damp is a pure function of (seed, stream, keys).

Each purpose has its own stream id, so two purposes never share a seed (before, the loader's seed
for batch b equalled DAMP's noise seed whenever epoch = rank). Keys are global quantities (epoch,
step, global sub-batch index, dataset index), never the process rank, so a run draws the same
numbers on 1 or N processes (docs/fidelity.md, "Processes and randomness").
"""

from __future__ import annotations

import os

import numpy as np
import torch

# One id per purpose. Never reuse or renumber one: checkpoints resume by these streams.
ORDER = 1  # (epoch) -> the epoch's sample permutation
AUGMENT = 2  # (epoch) -> base key of the per-sample crop/flip draws
NOISE = 3  # (step, global sub-batch) -> DAMP/DAAP weight noise
TRAIN_CORRUPTION = 4  # (epoch, batch) -> Algorithm 2's corruption of half the batch
DROPOUT = 5  # (rank) -> the global RNG that dropout draws from
CORRUPTION_CHUNK = 6  # (corruption, severity, chunk) -> written -C datasets
HOLDOUT = 7  # () -> which training images are held out (data.holdout)
AUGMIX = 8  # (epoch, batch) -> data.augmix's operations and mixing weights


def derive_seed(seed: int, stream: int, *keys: int) -> int:
    """A well-mixed 63-bit seed from ``seed``, a stream id and integer keys; cheap and deterministic.

    Each stream takes keys of one fixed arity: numpy's ``SeedSequence`` gives entropy that differs
    only in trailing zeros the same state, so ``(stream, ())`` and ``(stream, (0,))`` share a seed.

    >>> derive_seed(0, NOISE, 5, 1) == derive_seed(0, NOISE, 5, 1) != derive_seed(0, AUGMENT, 5, 1)
    True
    """
    entropy = [int(e) & 0xFFFFFFFFFFFFFFFF for e in (seed, stream, *keys)]
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def generator(device: torch.device | str, seed: int, stream: int, *keys: int) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with :func:`derive_seed`."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, stream, *keys))


def entropy_seed() -> int:
    """A fresh non-negative 63-bit seed from the OS (for callers that pass no seed)."""
    return int.from_bytes(os.urandom(8), "little") >> 1


def _to_signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


# splitmix64 (Steele, Lea, Flood 2014) constants, as signed int64 for torch's wrapping arithmetic.
_GOLDEN = _to_signed(0x9E3779B97F4A7C15)
_MIX1 = _to_signed(0xBF58476D1CE4E5B9)
_MIX2 = _to_signed(0x94D049BB133111EB)


def _shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def keyed_uniform(base: int, keys: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` uniforms in [0, 1) per key, a pure function of (base, key): counter-based, no generator.

    Used where a draw must belong to a sample rather than to a batch, so that it is the same whatever
    batch, process or device the sample lands on.

    Args:
        base: a seed from :func:`derive_seed`.
        keys: (B,) int64, e.g. dataset indices.
        count: numbers per key.

    Returns:
        (B, count) float32 on ``keys.device``.
    """
    counters = keys.long()[:, None] * count + torch.arange(count, device=keys.device)
    z = (_GOLDEN * (counters + 1)) ^ _to_signed(base & 0xFFFFFFFFFFFFFFFF)
    z = (z ^ _shift_right(z, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    z = z ^ _shift_right(z, 31)
    return _shift_right(z, 40).to(torch.float32) * 2.0 ** -24  # 24 bits: exact in float32
