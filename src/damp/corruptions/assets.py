"""Frost textures: found in a user directory or the installed `imagecorruptions` package data.

The six textures (frost1-3.png, frost4-6.jpg of hendrycks/robustness; docs/corruptions.md) are not
shipped with damp. A ``directory`` argument is the only place looked in: a folder the user names is
used or reported, never silently replaced by another. Without one: ``$DAMP_FROST_DIR``, then the
``frost/`` folder of an installed ``imagecorruptions`` package, located with importlib without
importing it (its import breaks on NumPy 2).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
ENV_VAR = "DAMP_FROST_DIR"


class FrostUnavailable(FileNotFoundError):
    """The frost textures could not be found."""


def _package_frost_dir() -> Path | None:
    spec = importlib.util.find_spec("imagecorruptions")  # finds, does not import, a top-level package
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "frost"


def find_frost_dir(directory: str | os.PathLike | None = None) -> Path:
    """``directory`` if given, else the first default holding all six textures; ``FrostUnavailable`` otherwise."""
    if directory:
        candidates = [Path(directory)]
    else:
        candidates = [Path(p) for p in (os.environ.get(ENV_VAR), _package_frost_dir()) if p]
    for candidate in candidates:
        if all((candidate / f).is_file() for f in FROST_FILES):
            return candidate
    looked = ", ".join(str(c) for c in candidates) or "nowhere"
    raise FrostUnavailable(
        f"frost textures (frost1.png ... frost6.jpg) not found (looked in: {looked}); "
        f"set ${ENV_VAR} or --frost-dir to a folder holding them, or `pip install imagecorruptions` "
        "(its package data has them)")


@functools.lru_cache(maxsize=8)
def _load(directory: str) -> tuple[np.ndarray, ...]:
    # RGB uint8 (H, W, 3). cv2.imread(IMREAD_COLOR) drops alpha without compositing; so does convert("RGB").
    return tuple(np.asarray(Image.open(Path(directory) / f).convert("RGB")) for f in FROST_FILES)


def frost_textures(directory: str | os.PathLike | None = None) -> list[torch.Tensor]:
    """The six textures as float (3, H, W) tensors in [0, 1] (cached per directory)."""
    root = find_frost_dir(directory)
    return [torch.from_numpy(t.copy()).permute(2, 0, 1).float() / 255 for t in _load(str(root))]
