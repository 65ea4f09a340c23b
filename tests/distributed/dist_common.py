"""The model and data shared by the distributed workers and the one-process references."""
from __future__ import annotations

import numpy as np

from fusegrad import nn
from fusegrad.random import manual_seed

STEPS = 3
BATCH = 16


def make_model(seed=0):
    manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(5 * 5 * 16, 32), nn.ReLU(), nn.Linear(32, 10))


def batches():
    rng = np.random.default_rng(7)
    x = rng.random((STEPS, BATCH, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, (STEPS, BATCH))
    return x, y


def shard(xb, yb, rank, size):
    k = len(xb) // size
    return xb[rank * k:(rank + 1) * k], yb[rank * k:(rank + 1) * k]
