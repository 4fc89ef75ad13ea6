"""damp.seeding: seeds that are pure functions of (seed, stream, keys), and counter-based uniforms."""

from __future__ import annotations

import torch

from damp import seeding
from damp.seeding import derive_seed, generator, keyed_uniform

STREAMS = {name: value for name, value in vars(seeding).items()
           if name.isupper() and not name.startswith("_") and isinstance(value, int)}


def test_every_purpose_has_its_own_stream():
    assert len(STREAMS) >= 8 and len(set(STREAMS.values())) == len(STREAMS)


def test_derived_seeds_are_deterministic_distinct_and_63_bit():
    # Every stream has keys of one fixed arity: numpy's SeedSequence ignores trailing zero words, so
    # (stream, ()) and (stream, (0,)) would share a seed (documented in derive_seed).
    seeds = {derive_seed(s, stream, *keys) for s in (0, 1) for stream in STREAMS.values()
             for keys in [(0, 0), (0, 1), (1, 0), (1, 1), (5, 3)]}
    assert len(seeds) == 2 * len(STREAMS) * 5
    assert derive_seed(0, seeding.ORDER) == derive_seed(0, seeding.ORDER, 0)
    assert all(0 <= s < 2 ** 63 for s in seeds)
    assert derive_seed(7, seeding.NOISE, 3, 2) == derive_seed(7, seeding.NOISE, 3, 2)
    assert derive_seed(-1, seeding.NOISE) != derive_seed(1, seeding.NOISE)  # negatives are folded, not refused


def test_generators_repeat_their_draws():
    a = torch.randn(5, generator=generator("cpu", 0, seeding.NOISE, 4))
    b = torch.randn(5, generator=generator("cpu", 0, seeding.NOISE, 4))
    c = torch.randn(5, generator=generator("cpu", 0, seeding.NOISE, 5))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_keyed_uniforms_belong_to_the_key_not_to_the_batch():
    base = derive_seed(0, seeding.AUGMENT, 3)
    keys = torch.arange(20000)
    draws = keyed_uniform(base, keys, 3)
    assert draws.shape == (20000, 3) and draws.dtype == torch.float32
    assert float(draws.min()) >= 0 and float(draws.max()) < 1
    shuffled = torch.randperm(20000, generator=torch.Generator().manual_seed(1))[:500]
    assert torch.equal(keyed_uniform(base, shuffled, 3), draws[shuffled])
    assert abs(float(draws.mean()) - 0.5) < 0.01 and abs(float(draws.var()) - 1 / 12) < 0.003
    assert abs(float(torch.corrcoef(draws.T)[0, 1])) < 0.03  # the count draws of one key are not tied
    assert not torch.equal(keyed_uniform(base + 1, keys[:100], 3), draws[:100])


def test_logical_shift_of_negative_int64():
    z = torch.tensor([-1], dtype=torch.int64)
    assert int(seeding._shift_right(z, 60)) == 15
