"""scikit-learn's bundled 8x8 digits (1,797 real images; nothing downloads)."""
from __future__ import annotations

import numpy as np

DIGITS_TEST_FRACTION = 0.2  # 360 test images: enough for accuracy steps of 0.3%
DIGITS_SPLIT_SEED = 0  # the split is fixed, so figures from different runs are comparable


def load_digits(test_fraction: float = DIGITS_TEST_FRACTION, seed: int = DIGITS_SPLIT_SEED):
    """((x_train, y_train), (x_test, y_test)): images NHWC float32 (N, 8, 8, 1) in [0, 1], labels int64.

    The split is stratified (each digit keeps its share in both parts) and fixed by `seed`.
    Needs scikit-learn (`pip install scikit-learn`, in the `test` extra).
    """
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise ImportError("load_digits needs scikit-learn, which ships the digits: pip install scikit-learn") from None
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    bunch = sk_load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[..., None]  # pixel values are 0..16
    y = bunch.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        test[rng.choice(members, int(round(len(members) * test_fraction)), replace=False)] = True
    train_idx, test_idx = rng.permutation(np.flatnonzero(~test)), np.flatnonzero(test)
    return (x[train_idx], y[train_idx]), (x[test_idx], y[test_idx])
