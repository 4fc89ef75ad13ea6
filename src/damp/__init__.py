"""damp: DAMP (multiplicative weight perturbations) and corruption-robustness tools for PyTorch.

``damp.benchmark(model, images, labels, ...)`` is the corruption benchmark for any model
(:func:`damp.robustness.benchmark`); it is imported on first use, so ``import damp`` stays light.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "benchmark":
        from damp.robustness import benchmark

        return benchmark
    raise AttributeError(f"module 'damp' has no attribute {name!r}")


__all__ = ["__version__", "benchmark"]
