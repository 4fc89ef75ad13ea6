"""Datasets read from local files, behind one loader protocol (iterable of (x, y), len, set_epoch)."""

from damp.data.arrays import ArrayDataset
from damp.data.digits import load_digits
from damp.data.resident import ResidentLoader

__all__ = ["ArrayDataset", "ResidentLoader", "load_digits"]
