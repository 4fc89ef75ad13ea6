"""damp: DAMP (multiplicative weight perturbations) and corruption-robustness tools for PyTorch."""

__version__ = "0.1.0"
