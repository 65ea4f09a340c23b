"""Losses by the names Trainer accepts (Keras's and PyTorch's spellings)."""
from __future__ import annotations

from .. import nn

LOSSES = {
    "cross_entropy": nn.CrossEntropyLoss, "categorical_crossentropy": nn.CrossEntropyLoss,
    "sparse_categorical_crossentropy": nn.CrossEntropyLoss, "nll": nn.NLLLoss, "mse": nn.MSELoss,
    "mean_squared_error": nn.MSELoss, "mae": nn.L1Loss, "l1": nn.L1Loss, "bce": nn.BCELoss,
    "binary_crossentropy": nn.BCELoss, "bce_with_logits": nn.BCEWithLogitsLoss,
}


def get(loss):
    """The loss module for a name, or `loss` itself when it is callable."""
    if isinstance(loss, str):
        if loss.lower() not in LOSSES:
            raise ValueError(f"Trainer: unknown loss {loss!r}; use one of {sorted(LOSSES)} or a callable")
        return LOSSES[loss.lower()]()
    if not callable(loss):
        raise TypeError(f"Trainer: loss must be callable or a name, got {type(loss).__name__}")
    return loss
