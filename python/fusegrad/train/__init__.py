"""Training: the Trainer (fit / evaluate / predict), callbacks and metrics."""
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
from .trainer import Trainer

__all__ = [
    "Trainer", "default_device", "Callback", "History", "ProgressBar", "EarlyStopping", "ModelCheckpoint",
    "CSVLogger", "LearningRateScheduler", "Metric", "Accuracy", "TopKAccuracy", "BinaryAccuracy",
    "MeanSquaredError", "MeanAbsoluteError", "metrics",
]
