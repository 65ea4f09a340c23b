"""Samplers: the order in which a DataLoader visits a dataset's indices.

DistributedSampler gives each rank of a data-parallel job its own share of every epoch, as
PyTorch's does: the epoch's order (a permutation drawn from (seed, epoch), the same on every rank)
is padded by repeating its start up to a multiple of the world size (or cut down to one with
drop_last), and rank r takes positions r, r + world_size, ... So every sample is seen once per
epoch across the ranks (a few twice when padded), and all ranks take the same number of steps.
"""
from __future__ import annotations

import math

import numpy as np

from .. import distributed as dist


class Sampler:
    """An iterable of dataset indices with a length; set_epoch(e) picks the epoch's order."""

    def __iter__(self):
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:  # noqa: B027 - optional for samplers with one order
        pass


class DistributedSampler(Sampler):
    """This rank's share of `dataset` (anything with a length). num_replicas and rank default to
    fusegrad.distributed's world size and rank. shuffle: a new order each epoch (set_epoch), drawn
    from `seed`, identical on all ranks."""

    def __init__(self, dataset, num_replicas: int | None = None, rank: int | None = None, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False):
        num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
        rank = dist.get_rank() if rank is None else rank
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, (int, np.integer)) or num_replicas < 1:
            raise ValueError(f"num_replicas must be an int >= 1, got {num_replicas!r}")
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank!r}")
        self.dataset, self.num_replicas, self.rank = dataset, int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.epoch = 0
        n = len(dataset)
        if self.drop_last:
            self.num_samples = n // self.num_replicas
        else:
            self.num_samples = math.ceil(n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def indices(self) -> np.ndarray:
        n = len(self.dataset)
        order = (np.random.default_rng((self.seed, self.epoch)).permutation(n) if self.shuffle
                 else np.arange(n))
        if self.total_size > n:  # pad by repeating the start (as often as needed)
            order = np.resize(order, self.total_size)
        else:
            order = order[:self.total_size]
        return order[self.rank:self.total_size:self.num_replicas]

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self):
        return (f"DistributedSampler(rank {self.rank} of {self.num_replicas}, {self.num_samples} samples, "
                f"shuffle={self.shuffle}, seed={self.seed}, drop_last={self.drop_last})")
