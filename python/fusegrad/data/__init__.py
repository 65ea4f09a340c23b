"""Datasets, the DataLoader and augmentations (nothing downloads at run time)."""
from . import transforms
from .cifar import load_cifar10
from .dataset import DataLoader, Dataset, TensorDataset
from .digits import load_digits
from .mnist import load_mnist, read_idx
from .sampler import DistributedSampler, Sampler
from .transforms import Compose, Normalize, RandomFlip, RandomRotation, RandomShift

__all__ = ["Dataset", "TensorDataset", "DataLoader", "Sampler", "DistributedSampler", "load_digits", "load_mnist", "load_cifar10", "read_idx", "transforms",
           "Compose", "Normalize", "RandomFlip", "RandomRotation", "RandomShift"]
