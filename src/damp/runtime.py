"""Where and how a run computes: the device it asks for, and its numeric precision (one place each)."""

from __future__ import annotations

import torch

# trainer.precision -> autocast dtype (None: no autocast). fp64 runs float64 weights end to end.
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16,
                                                   "fp64": None}


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The ``torch.autocast`` dtype of a precision name ("fp32", "bf16", "fp16", "fp64")."""
    return AUTOCAST_DTYPES[precision]


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``trainer.device`` ("auto", "cpu", "cuda") as a device; "auto" takes CUDA when there is one."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("trainer.device: cuda requested but no CUDA device is available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")
