"""Datasets read from local files, behind one loader protocol (iterable of (x, y), len, set_epoch)."""

from damp.data.arrays import ArrayDataset
from damp.data.digits import load_digits
from damp.data.resident import ResidentLoader

__all__ = ["ARRAY_DATASETS", "ArrayDataset", "ResidentLoader", "load_digits"]

ARRAY_DATASETS = ("digits", "fashion_mnist", "cifar10", "cifar100")  # what load_array_dataset reads


def load_array_dataset(name: str, root: str | None = None) -> ArrayDataset:
    """A small dataset by name: "digits" (embedded), "fashion_mnist", "cifar10", "cifar100"."""
    key = name.replace("-", "_").lower()
    if key == "digits":
        return load_digits()
    if key == "fashion_mnist":
        from damp.data.fashion_mnist import load_fashion_mnist
        return load_fashion_mnist(root)
    if key in ("cifar10", "cifar100"):
        from damp.data.cifar import load_cifar
        if root is None:
            raise ValueError(f"{name} needs a root folder (the extracted python-pickle folder)")
        return load_cifar(root, 10 if key == "cifar10" else 100)
    raise ValueError(f"Unknown dataset: {name!r} ({', '.join(ARRAY_DATASETS)})")


__all__ += ["load_array_dataset"]
