"""CUDA-only tests: every test here carries the ``cuda`` marker and is skipped without a CUDA device.

They are collected on every machine (so an import error shows up in CI without a GPU) and run on a
machine with one: ``pytest -m cuda tests/cuda``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# The corruption tests' frost textures (the real ones from ../shared, else random stand-ins).
from tests.corruptions.conftest import frost_textures_dir  # noqa: F401 - re-exported fixture

HERE = Path(__file__).resolve().parent
NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.cuda)
            item.add_marker(NEEDS_CUDA)


@pytest.fixture
def full_fp32() -> Iterator[None]:
    """fp32 convolutions and matmuls in full fp32: cuDNN and cuBLAS may otherwise use TF32 (10-bit
    mantissa)."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


@pytest.fixture
def deterministic_cuda(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Deterministic cuDNN algorithms, no autotuning, and torch's deterministic mode (warn-only: ops
    without a deterministic CUDA kernel warn instead of raising)."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    old = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
           torch.are_deterministic_algorithms_enabled(),
           torch.is_deterministic_algorithms_warn_only_enabled())
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old[0], old[1]
        torch.use_deterministic_algorithms(old[2], warn_only=old[3])
