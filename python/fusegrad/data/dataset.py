"""Datasets and the DataLoader.

A DataLoader's order and augmentation are a pure function of (seed, epoch): each epoch draws from
its own generator `default_rng((seed, epoch))`, so a run resumed at epoch k sees exactly the batches
an uninterrupted run would, and the only state to checkpoint is the seed and the epoch count.
"""
from __future__ import annotations

import math

import numpy as np

from .._backend import array_module, device_of, normalise_device, on_host, to_device
from ..random import default_generator
from ..tensor import Tensor


class Dataset:
    """A sized collection of samples: subclasses define __len__ and __getitem__(i) -> sample
    (an array or a tuple of arrays). Datasets that can gather many samples at once also define
    get_batch(indices), which the DataLoader prefers over one __getitem__ per sample."""

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index):
        raise NotImplementedError


def _native(a):
    if isinstance(a, Tensor):
        return a.data
    if isinstance(a, np.ndarray) or type(a).__module__.startswith("cupy"):
        return a
    return np.asarray(a)


class TensorDataset(Dataset):
    """Samples are rows of equally long arrays (NumPy, CuPy or Tensors): dataset[i] = (a[i], b[i], ...)."""

    def __init__(self, *arrays):
        if not arrays:
            raise ValueError("TensorDataset needs at least one array")
        self.arrays = tuple(_native(a) for a in arrays)
        for i, a in enumerate(self.arrays):
            if a.ndim == 0:
                raise ValueError(f"TensorDataset: array {i} is 0-d; every array needs a sample axis")
        lengths = [a.shape[0] for a in self.arrays]
        if len(set(lengths)) > 1:
            raise ValueError(f"TensorDataset: arrays differ in length along axis 0: {lengths}")

    def __len__(self) -> int:
        return int(self.arrays[0].shape[0])

    def __getitem__(self, index):
        items = tuple(a[index] for a in self.arrays)
        return items[0] if len(items) == 1 else items

    def get_batch(self, indices):
        items = []
        for a in self.arrays:
            idx = indices if on_host(a) else to_device(indices, device_of(a))
            items.append(a[idx])
        return items[0] if len(items) == 1 else tuple(items)


def _collate(samples):
    """Stacks a list of samples (arrays or tuples of arrays) into one batch per field."""
    first = samples[0]
    if isinstance(first, tuple):
        return tuple(_collate([s[i] for s in samples]) for i in range(len(first)))
    return array_module(_native(first)).stack([_native(s) for s in samples])


class DataLoader:
    """Batches of a Dataset as arrays on `device` (NumPy on the CPU, CuPy on a GPU).

    shuffle: a new order each epoch; seed: makes the orders (and a transform's randomness)
    reproducible, drawn from fusegrad's generator (see manual_seed) when None; drop_last: skips a
    last short batch; transform(batch, rng) -> batch: applied to the first field of each batch
    (the inputs), e.g. the augmentations of fusegrad.data.transforms.

    Each `for batch in loader` is one epoch; `set_epoch(e)` picks the epoch whose order comes next
    (the Trainer sets it, so resuming at epoch e repeats nothing and skips nothing).

    sampler: the indices to visit and their order instead (e.g. a DistributedSampler, which gives
    each rank its share); it excludes shuffle=True, and set_epoch is passed on to it.
    """

    def __init__(self, dataset, batch_size: int = 32, shuffle: bool = False, seed: int | None = None,
                 drop_last: bool = False, transform=None, device=None, sampler=None):
        if not isinstance(dataset, Dataset):
            if isinstance(dataset, (tuple, list)):
                dataset = TensorDataset(*dataset)
            else:
                raise TypeError(f"DataLoader needs a Dataset (or a tuple of arrays), got {type(dataset).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        if sampler is not None:
            if shuffle:
                raise ValueError("DataLoader: sampler and shuffle=True exclude each other (the sampler orders)")
            if not hasattr(sampler, "__iter__") or not hasattr(sampler, "__len__"):
                raise TypeError(f"sampler must be an iterable of indices with a length, got {type(sampler).__name__}")
        self.sampler = sampler
        self.dataset, self.batch_size, self.shuffle = dataset, int(batch_size), bool(shuffle)
        self.drop_last, self.transform = bool(drop_last), transform
        self.device = None if device is None else normalise_device(device)
        self.seed = int(default_generator().integers(2**63)) if seed is None else int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.dataset) if self.sampler is None else len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)
        if self.sampler is not None and hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])

    def _to_device(self, batch):
        if self.device is None:
            return batch
        if isinstance(batch, tuple):
            return tuple(to_device(b, self.device) for b in batch)
        return to_device(batch, self.device)

    def __iter__(self):
        rng = np.random.default_rng((self.seed, self.epoch))
        if self.sampler is not None:
            if hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(self.epoch)
            order = np.fromiter(self.sampler, np.int64)
        else:
            n = len(self.dataset)
            order = rng.permutation(n) if self.shuffle else np.arange(n)
        self.epoch += 1
        gather = getattr(self.dataset, "get_batch", None)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            batch = gather(idx) if gather is not None else _collate([self.dataset[int(i)] for i in idx])
            batch = self._to_device(batch)
            if self.transform is not None:
                if isinstance(batch, tuple):
                    batch = (self.transform(batch[0], rng),) + batch[1:]
                else:
                    batch = self.transform(batch, rng)
            yield batch

    def __repr__(self):
        return (f"DataLoader({type(self.dataset).__name__} of {len(self.dataset)}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last}, seed={self.seed}"
                + (f", sampler={self.sampler!r})" if self.sampler is not None else ")"))
