"""Callbacks with Keras's hooks and names.

Every hook gets a `logs` dict: at batch end the running means of the epoch so far ("loss" and each
metric) with the batch index ("batch") and its number of samples ("size"), at epoch end the epoch's figures plus "val_*" ones when there is validation data. A
callback reaches the Trainer as `self.trainer` (set before on_train_begin) and can stop training
with `self.trainer.stop_training = True`.
"""
from __future__ import annotations

import csv
import math
import os
import sys
import time
import warnings


class Callback:
    def __init__(self):
        self.trainer = None
        self.params: dict = {}

    def set_trainer(self, trainer) -> None:
        self.trainer = trainer

    def set_params(self, params: dict) -> None:
        self.params = params

    def wants_batch_logs(self, batch) -> bool:
        """Whether this callback's on_train_batch_end needs the running loss and metrics after
        `batch` (its logs always hold "batch" and "size"). Reading them waits for a GPU to finish
        the step, so a callback that shows them now and then can say no in between."""
        return True

    def on_train_begin(self, logs=None): pass
    def on_train_end(self, logs=None): pass
    def on_epoch_begin(self, epoch, logs=None): pass
    def on_epoch_end(self, epoch, logs=None): pass
    def on_train_batch_begin(self, batch, logs=None): pass
    def on_train_batch_end(self, batch, logs=None): pass
    def on_test_begin(self, logs=None): pass
    def on_test_end(self, logs=None): pass
    def on_test_batch_begin(self, batch, logs=None): pass
    def on_test_batch_end(self, batch, logs=None): pass
    def on_predict_begin(self, logs=None): pass
    def on_predict_end(self, logs=None): pass
    def on_predict_batch_begin(self, batch, logs=None): pass
    def on_predict_batch_end(self, batch, logs=None): pass


class CallbackList:
    """Calls a hook on every callback in order."""

    def __init__(self, callbacks, trainer, params: dict):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be Callback instances, got {type(cb).__name__}")
            cb.set_trainer(trainer)
            cb.set_params(params)

    def overrides(self, hook: str) -> bool:
        """Whether any callback does something on `hook` (the per-batch ones are skipped, logs and
        all, when none does: a small model's step is a millisecond)."""
        return any(getattr(type(cb), hook) is not getattr(Callback, hook) for cb in self.callbacks)

    def wants_batch_logs(self, batch) -> bool:
        """Whether a callback that acts after each training batch wants the running loss and
        metrics after this one."""
        return any(type(cb).on_train_batch_end is not Callback.on_train_batch_end and cb.wants_batch_logs(batch)
                   for cb in self.callbacks)

    def __getattr__(self, hook):
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def call(*args):
            for cb in self.callbacks:
                getattr(cb, hook)(*args)

        return call


def _format_logs(logs: dict) -> str:
    return " - ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in logs.items())


def _tqdm():
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise ImportError("ProgressBar(verbose=1) needs tqdm, a fusegrad dependency: pip install tqdm "
                          "(or pass verbose=2 for one plain line per epoch)") from None
    return tqdm


class ProgressBar(Callback):
    """Shows training progress.

    verbose=1: a tqdm bar per epoch with batches, running loss and metrics, samples/s and ETA
    (on stderr unless `file` says otherwise, as tqdm does). verbose=2: one plain line per epoch,
    for logs, on stdout unless `file` says otherwise.
    """

    # The bar's loss and metrics are refreshed this often at most: each reading waits for a GPU.
    refresh_s = 0.25

    def __init__(self, verbose: int = 1, file=None):
        super().__init__()
        if verbose not in (1, 2):
            raise ValueError(f"ProgressBar: verbose must be 1 or 2, got {verbose}")
        self.verbose, self.file = verbose, file
        self._bar = None
        self._shown_at = -float("inf")

    def wants_batch_logs(self, batch) -> bool:
        return self._bar is not None and time.perf_counter() - self._shown_at >= self.refresh_s

    def _print(self, text):
        print(text, file=self.file or sys.stdout, flush=True)

    def on_train_begin(self, logs=None):
        if self.verbose == 1:
            self._tqdm = _tqdm()  # a missing tqdm fails here, before any training

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._seen = time.perf_counter(), 0
        if self.verbose == 1:
            self._bar = self._tqdm(total=self.params.get("steps"), unit="batch", leave=True, file=self.file,
                                   desc=f"Epoch {epoch + 1}/{self.params.get('epochs')}", dynamic_ncols=True)

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        self._seen += int(logs.get("size", 0))
        if self._bar is not None:
            shown = {k: f"{v:.4f}" for k, v in logs.items() if k not in ("batch", "size")}
            if shown:
                self._shown_at = time.perf_counter()
                rate = self._seen / max(self._shown_at - self._start, 1e-9)
                self._bar.set_postfix({**shown, "samples/s": f"{rate:.0f}"}, refresh=False)
            self._bar.update(1)

    def on_epoch_end(self, epoch, logs=None):
        elapsed = time.perf_counter() - self._start
        rate = self._seen / max(elapsed, 1e-9)
        if self._bar is not None:
            self._bar.set_postfix({**{k: f"{v:.4f}" for k, v in (logs or {}).items()},
                                   "samples/s": f"{rate:.0f}"})
            self._bar.close()
            self._bar = None
            return
        self._print(f"Epoch {epoch + 1}/{self.params.get('epochs')} - {elapsed:.1f}s - {rate:.0f} samples/s - "
                    f"{_format_logs(logs or {})}")

    def on_train_end(self, logs=None):
        if self._bar is not None:  # interrupted mid-epoch
            self._bar.close()
            self._bar = None


def _resolve_mode(mode: str, monitor: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    return "max" if ("acc" in monitor or monitor.endswith("auc")) else "min"


class _Monitor(Callback):
    def __init__(self, monitor: str, mode: str, min_delta: float = 0.0):
        super().__init__()
        self.monitor, self.mode = monitor, _resolve_mode(mode, monitor)
        self.min_delta = abs(min_delta)
        self._warned = False
        self.best = math.inf if self.mode == "min" else -math.inf

    def _value(self, logs):
        value = (logs or {}).get(self.monitor)
        if value is None:
            if not self._warned:
                warnings.warn(f"{type(self).__name__}: '{self.monitor}' is not in the logs "
                              f"(available: {sorted(logs or {})}); it does nothing", stacklevel=3)
                self._warned = True
            return None
        return float(value)

    def _improved(self, value) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


def _snapshot(model) -> dict:
    return {k: v.data.copy() for k, v in model.state_dict().items()}


class EarlyStopping(_Monitor):
    """Stops when `monitor` has not improved by more than min_delta for `patience` epochs.
    restore_best_weights: at the end of training (stopped early or not) the model gets the weights
    of its best epoch back."""

    def __init__(self, monitor: str = "val_loss", patience: int = 0, min_delta: float = 0.0, mode: str = "auto",
                 restore_best_weights: bool = False):
        super().__init__(monitor, mode, min_delta)
        if patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience}")
        self.patience, self.restore_best_weights = patience, restore_best_weights

    def on_train_begin(self, logs=None):
        self.wait, self.stopped_epoch, self.best_epoch = 0, None, None
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        value = self._value(logs)
        if value is None:
            return
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = _snapshot(self.trainer.model)
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = epoch
            self.trainer.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.trainer.model.load_state_dict(self.best_weights)


class ModelCheckpoint(_Monitor):
    """Saves the model's weights (safetensors) after each epoch, or only when `monitor` improves
    with save_best_only. `path` may hold fields such as "{epoch:02d}" or "{val_loss:.3f}".
    full=True saves a whole Trainer checkpoint (optimizer, scheduler, RNG) instead, with `extra`
    (a dict of JSON values) in it. `saved` lists the paths written; `last_saved` is (epochs
    completed, path) of the latest, or None."""

    def __init__(self, path, monitor: str = "val_loss", save_best_only: bool = False, mode: str = "auto",
                 full: bool = False, extra: dict | None = None):
        super().__init__(monitor, mode)
        if extra is not None and not full:
            raise ValueError("ModelCheckpoint: extra is stored only in full (Trainer) checkpoints; pass full=True")
        self.path, self.save_best_only, self.full, self.extra = os.fspath(path), save_best_only, full, extra
        self.saved: list = []
        self.last_saved: tuple | None = None

    def on_train_begin(self, logs=None):
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            value = self._value(logs)
            if value is None or not self._improved(value):
                return
            self.best = value
        path = self.path.format(epoch=epoch + 1, **logs)
        if self.full:
            self.trainer.save_checkpoint(path, extra=self.extra)
        else:
            from ..io import save

            save(self.trainer.model.state_dict(), path)
        self.saved.append(path)
        self.last_saved = (self.trainer.epoch, path)


class CSVLogger(Callback):
    """One CSV row per epoch: epoch and every log entry (the header comes from the first epoch).
    The file is opened for each row and closed again, so an exception in fit leaves no open handle
    and every finished epoch on disk."""

    def __init__(self, path, separator: str = ",", append: bool = False):
        super().__init__()
        self.path, self.separator, self.append = os.fspath(path), separator, append

    def on_train_begin(self, logs=None):
        exists = self.append and os.path.exists(self.path) and os.path.getsize(self.path) > 0
        if not self.append:
            open(self.path, "w").close()  # start a fresh file
        self._keys, self._header_written = None, exists

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        with open(self.path, "a", newline="") as f:
            writer = csv.writer(f, delimiter=self.separator)
            if self._keys is None:
                self._keys = list(logs)
                if not self._header_written:
                    writer.writerow(["epoch"] + self._keys)
                    self._header_written = True
            writer.writerow([epoch] + [logs.get(k, "") for k in self._keys])


class LearningRateScheduler(Callback):
    """Sets the learning rate from `schedule` every epoch (interval="epoch") or every batch
    (interval="step"). schedule is a fusegrad.optim.lr_scheduler object (its step() is called) or a
    function (index, lr) -> new lr, Keras-style, where index counts epochs or steps from 0.
    The epoch's lr is added to the logs as "lr".

    For a schedule that must survive a checkpoint, pass the scheduler to Trainer(scheduler=...) instead.
    """

    def __init__(self, schedule, interval: str = "epoch", verbose: int = 0):
        super().__init__()
        if interval not in ("epoch", "step"):
            raise ValueError(f"interval must be 'epoch' or 'step', got {interval!r}")
        if not callable(schedule) and not hasattr(schedule, "step"):
            raise TypeError("schedule must be an lr scheduler or a function (index, lr) -> lr")
        self.schedule, self.interval, self.verbose = schedule, interval, verbose
        self._steps = 0

    def _groups(self):
        return self.trainer.optimizer.param_groups

    def _apply(self, index):
        if hasattr(self.schedule, "step") and not callable(self.schedule):
            if index > 0:  # a scheduler sets its first value when it is made
                self.schedule.step()
            return
        for group in self._groups():
            lr = float(self.schedule(index, group["lr"]))
            if not math.isfinite(lr) or lr < 0:
                raise ValueError(f"LearningRateScheduler: schedule gave lr={lr} at {self.interval} {index}")
            group["lr"] = lr
        if self.verbose:
            print(f"{self.interval} {index}: learning rate {self._groups()[0]['lr']:.6g}")

    def on_train_begin(self, logs=None):
        self._steps = self.params.get("initial_epoch", 0) * (self.params.get("steps") or 0)

    def on_epoch_begin(self, epoch, logs=None):
        if self.interval == "epoch":
            self._apply(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self.interval == "step":
            self._apply(self._steps)
            self._steps += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = float(self._groups()[0]["lr"])


class History(Callback):
    """Per-epoch logs: history["loss"], history["val_accuracy"], ...; epoch holds the epoch indices."""

    def __init__(self):
        super().__init__()
        self.history: dict = {}
        self.epoch: list = []
        self.interrupted = False
        self.interrupted_logs: dict | None = None

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)

    def plot(self, path, keys=None):
        """Writes a PNG of the curves: one panel per quantity, training and validation together."""
        try:
            import matplotlib

            matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("History.plot needs matplotlib: pip install matplotlib "
                              "(or pip install fusegrad[plot])") from None
        names = [k for k in (keys or self.history) if not k.startswith("val_") and k != "lr"]
        if not names:
            raise ValueError("History.plot: nothing to plot (no epochs recorded)")
        fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
        epochs = [e + 1 for e in self.epoch]
        for ax, name in zip(axes[0], names):
            ax.plot(epochs, self.history[name], marker="o", label=name)
            if "val_" + name in self.history:
                ax.plot(epochs, self.history["val_" + name], marker="o", label="val_" + name)
            ax.set_xlabel("epoch")
            ax.set_title(name)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        fig.savefig(os.fspath(path), dpi=100)
        plt.close(fig)
        return path

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"

