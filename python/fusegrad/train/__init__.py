"""Training: the Trainer (fit / evaluate / predict), callbacks, metrics and distillation."""
from . import metrics
from .callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    History,
    LearningRateScheduler,
    ModelCheckpoint,
    ProgressBar,
)
from .metrics import Accuracy, BinaryAccuracy, MeanAbsoluteError, MeanSquaredError, Metric, TopKAccuracy
from .._backend import default_device
from .distill import DistillationTrainer, Distiller, distillation_loss
from .trainer import Trainer

__all__ = [
    "Trainer", "default_device", "Callback", "History", "ProgressBar", "EarlyStopping", "ModelCheckpoint",
    "CSVLogger", "LearningRateScheduler", "Metric", "Accuracy", "TopKAccuracy", "BinaryAccuracy",
    "MeanSquaredError", "MeanAbsoluteError", "metrics", "Distiller", "DistillationTrainer", "distillation_loss",
]
