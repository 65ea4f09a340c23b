"""Datasets (nothing downloads at run time)."""
from .mnist import load_mnist, read_idx

__all__ = ["load_mnist", "read_idx"]
