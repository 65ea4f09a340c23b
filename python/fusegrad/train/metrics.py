"""Metrics for the Trainer: each accumulates a sum and a count over batches.

A metric sees the model output and the target as raw arrays (NumPy or CuPy) of one batch. The sum
stays where the batch's values live (a 0-d GPU array for CuPy outputs, so that the host does not
wait for each step of a GPU) and crosses to the host only when a result is asked for.
"""
from __future__ import annotations

import numbers

import numpy as np

from .._backend import array_module, to_host


def host_value(x) -> float:
    """A running sum as a Python float: read from its device if it lives on one."""
    return float(x) if isinstance(x, numbers.Number) else float(to_host(x))


def _xp(a):
    return array_module(a)


class Metric:
    name = "metric"

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.total, self.count = 0.0, 0

    def batch_sum(self, output, target):
        """(sum of the per-sample values, number of samples) for one batch."""
        raise NotImplementedError

    def update(self, output, target) -> None:
        s, n = self.batch_sum(output, target)
        self.total = self.total + s
        self.count += int(n)

    def result(self) -> float:
        return host_value(self.total) / self.count if self.count else float("nan")

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r})"


def _labels(output, target):
    """Class labels of `target`: integer labels as they are, one-hot or probability rows by argmax."""
    xp = _xp(output)
    target = xp.asarray(target)
    if target.ndim == output.ndim and target.shape == output.shape and target.dtype.kind == "f":
        return target.argmax(axis=-1)
    if target.ndim != output.ndim - 1 or target.shape != output.shape[:-1]:
        raise ValueError(f"accuracy: outputs of shape {tuple(output.shape)} need labels of shape "
                         f"{tuple(output.shape[:-1])} or one-hot targets of shape {tuple(output.shape)}, "
                         f"got {tuple(target.shape)}")
    return target


class Accuracy(Metric):
    """Fraction of samples whose largest output is the target class."""

    name = "accuracy"

    def batch_sum(self, output, target):
        return (output.argmax(axis=-1) == _labels(output, target)).sum(), output.shape[0]


class TopKAccuracy(Metric):
    """Fraction of samples whose target class is among the k largest outputs."""

    def __init__(self, k: int = 5):
        if k < 1:
            raise ValueError(f"TopKAccuracy: k must be >= 1, got {k}")
        self.k, self.name = k, f"top{k}_accuracy"
        super().__init__()

    def batch_sum(self, output, target):
        xp = _xp(output)
        labels = _labels(output, target)
        k = min(self.k, output.shape[-1])
        target_score = xp.take_along_axis(output, labels[..., None].astype(np.int64), axis=-1)
        # The target is in the top k when fewer than k classes score strictly higher (ties count for it).
        higher = (output > target_score).sum(axis=-1)
        return (higher < k).sum(), output.shape[0]


class BinaryAccuracy(Metric):
    """Fraction of outputs on the right side of `threshold` (0.5 for probabilities; 0.0 with
    from_logits=True), elementwise, for targets of 0 and 1."""

    name = "binary_accuracy"

    def __init__(self, threshold: float | None = None, from_logits: bool = False):
        self.threshold = (0.0 if from_logits else 0.5) if threshold is None else threshold
        super().__init__()

    def batch_sum(self, output, target):
        xp = _xp(output)
        target = xp.asarray(target).reshape(output.shape) if xp.asarray(target).size == output.size else None
        if target is None:
            raise ValueError(f"binary_accuracy: targets must have as many values as outputs {tuple(output.shape)}")
        return ((output > self.threshold) == (target > 0.5)).sum(), output.size


class MeanSquaredError(Metric):
    name = "mse"

    def batch_sum(self, output, target):
        d = output - _xp(output).asarray(target, dtype=output.dtype).reshape(output.shape)
        return (d * d).sum(dtype=np.float64) / max(1, output[0].size), output.shape[0]


class MeanAbsoluteError(Metric):
    name = "mae"

    def batch_sum(self, output, target):
        d = output - _xp(output).asarray(target, dtype=output.dtype).reshape(output.shape)
        return abs(d).sum(dtype=np.float64) / max(1, output[0].size), output.shape[0]


_NAMES = {
    "accuracy": Accuracy, "acc": Accuracy, "binary_accuracy": BinaryAccuracy,
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
}


def get(metric, binary_from_logits: bool | None = None) -> Metric:
    """A Metric from a name ("accuracy", "top5_accuracy", "binary_accuracy", "mse", "mae"), a Metric
    instance or class. binary_from_logits: when not None, "accuracy" means binary accuracy (the loss
    is a binary cross-entropy), on logits if True."""
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, type) and issubclass(metric, Metric):
        return metric()
    if isinstance(metric, str):
        key = metric.lower()
        if key in ("accuracy", "acc") and binary_from_logits is not None:
            return BinaryAccuracy(from_logits=binary_from_logits)
        if key.startswith("top") and key.endswith("_accuracy") and key[3:-9].isdigit():
            return TopKAccuracy(int(key[3:-9]))
        if key == "top_k_accuracy":
            return TopKAccuracy(5)
        if key in _NAMES:
            return _NAMES[key]()
    raise ValueError(f"unknown metric {metric!r}; use one of {sorted(_NAMES)} or 'topK_accuracy', or a Metric")
