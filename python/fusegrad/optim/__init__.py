"""Optimizers stepping through the fused multi-tensor kernels, and learning-rate schedules."""
from . import lr_scheduler
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .sgd import SGD
from .zero import ZeroRedundancyOptimizer

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "ZeroRedundancyOptimizer", "lr_scheduler"]
