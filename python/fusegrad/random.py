"""fusegrad's random state: one NumPy generator for initialisation, dropout, randn/rand and
shuffling, seeded by manual_seed (which also seeds CuPy's generator when CuPy is loaded)."""
from __future__ import annotations

import sys

import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed: int) -> None:
    """Seeds fusegrad's generator: initialisation, dropout, randn/rand and shuffling."""
    global _generator
    _generator = np.random.default_rng(seed)
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        cupy.random.seed(seed)


def default_generator() -> np.random.Generator:
    return _generator
