"""Trainer: Keras's fit / evaluate / predict over fusegrad modules and optimizers."""
from __future__ import annotations

import signal
import threading

import numpy as np

from .. import distributed as dist
from .. import nn
from .._backend import as_array, default_device, normalise_device, to_device
from ..autograd import no_grad
from ..data.dataset import DataLoader, TensorDataset
from ..data.sampler import DistributedSampler
from ..nn.parallel import DistributedDataParallel
from ..random import default_generator
from ..tensor import Tensor
from . import checkpoint, losses
from . import metrics as metrics_module
from .callbacks import CallbackList, History, ProgressBar
from .metrics import host_value


def _native(a):
    """The array of a Tensor or array-like, floats as float32 (once up front, not once per batch)."""
    return as_array(a.data if isinstance(a, Tensor) else a)


def _weighted(loss, n: int):
    """A batch's mean loss times its size, in float64 where the loss lives (a 0-d GPU array for a
    model on a GPU: added up there and read once an epoch, or when a callback asks for the logs)."""
    return loss.data.astype(np.float64) * n


class _Interrupt:
    """While active in the main thread, the first Ctrl-C only sets a flag, so the running batch
    (its optimizer step included) completes; a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


class Trainer:
    """Trains `model` with `loss` and `optimizer`.

    loss: a module or callable (output, target) -> scalar Tensor, or a name ("cross_entropy", "mse",
    "mae", "bce", "bce_with_logits", "nll"). metrics: names or Metric objects ("accuracy",
    "top5_accuracy", "binary_accuracy", "mse", "mae"). device: "cpu", "cuda[:N]", or None for the GPU
    when one is available, else the CPU; the model is moved there. scheduler: an lr scheduler stepped
    every epoch (scheduler_interval="epoch") or every batch ("step"); it is part of checkpoints.
    seed: the shuffling seed for arrays given to fit (drawn from fusegrad's generator when None).

    distributed: True trains data-parallel over fusegrad.distributed (init() is called if it was
    not); None (default): whenever init() was called and the world has more than one process. The
    model is wrapped in DistributedDataParallel (trainer.model stays the plain model), arrays are
    sharded by a DistributedSampler (batch_size is then the global batch, split evenly over the
    ranks), the epoch's loss and metrics are averaged over all ranks, and only rank 0 prints and
    writes checkpoints. Evaluation and predict run the whole data on every rank.
    """

    def __init__(self, model, loss, optimizer, metrics=("accuracy",), device=None, scheduler=None,
                 scheduler_interval: str = "epoch", seed: int | None = None, distributed: bool | None = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"Trainer: model must be an nn.Module, got {type(model).__name__}")
        loss = losses.get(loss)
        if not hasattr(optimizer, "step") or not hasattr(optimizer, "param_groups"):
            raise TypeError(f"Trainer: optimizer must be a fusegrad optimizer, got {type(optimizer).__name__}")
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
        self.device = default_device() if device is None else normalise_device(device)
        if self.device != "cpu" and default_device() == "cpu":
            raise ValueError(f"Trainer: device {self.device!r} was asked for, but no GPU is usable here "
                             "(fusegrad.cuda.is_available() is False, or CuPy is not installed)")
        self.model = model.to(self.device)
        self.loss, self.optimizer = loss, optimizer
        self.scheduler, self.scheduler_interval = scheduler, scheduler_interval
        self.metric_specs = list(metrics or ())
        binary = (isinstance(loss, nn.BCEWithLogitsLoss) if isinstance(loss, (nn.BCELoss, nn.BCEWithLogitsLoss))
                  else None)
        self._binary = binary
        self._make_metrics()  # fail now on an unknown name, not at the end of the first epoch
        self.seed = int(default_generator().integers(2**63)) if seed is None else int(seed)
        if distributed is None:
            distributed = dist.is_initialized() and dist.get_world_size() > 1
        if distributed and not dist.is_initialized():
            dist.init()
        self.distributed = bool(distributed)
        self.rank = dist.get_rank() if self.distributed else 0
        self.world_size = dist.get_world_size() if self.distributed else 1
        self.net = model
        if self.distributed:
            if seed is None:  # one shuffling order for all ranks
                self.seed = int(dist.broadcast_object(self.seed, 0))
            self.net = DistributedDataParallel(self.model)
        # Epochs completed by this trainer, over all fit calls; checkpoints resume from here, and the
        # shuffling order of an epoch is drawn from it, so repeated fit(epochs=1) calls see new orders.
        self.epoch = 0
        self.stop_training = False
        self.history: History | None = None
        self._loader = None
        self._pending_loader_state = None

    # -- helpers -----------------------------------------------------------------------------------
    def _make_metrics(self):
        made = [metrics_module.get(m, self._binary) for m in self.metric_specs]
        names = [m.name for m in made]
        if len(set(names)) != len(names) or "loss" in names:
            raise ValueError(f"Trainer: metric names must be distinct and not 'loss', got {names}")
        return made

    def _loader_for(self, x, y, batch_size, shuffle, name):
        if isinstance(x, DataLoader):
            if y is not None:
                raise ValueError(f"{name}: give targets inside the DataLoader, not as y")
            return x
        if y is None:
            raise ValueError(f"{name}: y is required when x is an array (or pass a DataLoader)")
        if self.distributed and name == "fit":
            if batch_size % self.world_size:
                raise ValueError(f"fit: batch_size {batch_size} (the global batch) must be a multiple of the "
                                 f"{self.world_size} ranks")
            dataset = TensorDataset(_native(x), _native(y))
            sampler = DistributedSampler(dataset, self.world_size, self.rank, shuffle=shuffle, seed=self.seed)
            return DataLoader(dataset, batch_size=batch_size // self.world_size, seed=self.seed,
                              device=self.device, sampler=sampler)
        return DataLoader(TensorDataset(_native(x), _native(y)), batch_size=batch_size, shuffle=shuffle,
                          seed=self.seed, device=self.device)

    def _batch(self, batch):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ValueError("Trainer: each batch must be a pair (inputs, targets)")
        xb, yb = batch
        xb = to_device(_native(xb), self.device)
        yb = to_device(_native(yb), self.device)
        return xb, yb

    def _logs(self, loss_sum, seen, metrics, prefix=""):
        logs = {prefix + "loss": host_value(loss_sum) / seen if seen else float("nan")}
        for m in metrics:
            logs[prefix + m.name] = m.result()
        return logs

    # -- training ----------------------------------------------------------------------------------
    def train_step(self, xb, yb):
        """One optimisation step on a batch of raw arrays; returns (output Tensor, loss Tensor)."""
        self.optimizer.zero_grad()
        inputs = Tensor._wrap(xb, False)
        out = self.net(inputs)
        loss = self.training_loss(out, inputs, yb)
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()
        return out, loss

    def training_loss(self, out, inputs, yb):
        """The loss train_step minimises: loss(output, targets); a subclass may also use the
        inputs (DistillationTrainer runs its teacher on them)."""
        return self.loss(out, yb)

    def fit(self, x, y=None, *, epochs: int = 1, batch_size: int = 32, validation_data=None,
            validation_split: float = 0.0, shuffle: bool = True, callbacks=None, verbose: int = 1,
            initial_epoch: int = 0) -> History:
        """Trains from epoch `initial_epoch` up to (not including) `epochs`. x, y: arrays (NumPy, CuPy,
        Tensors), or x a DataLoader of (inputs, targets) batches. Returns the History.

        Ctrl-C ends training after the running batch: on_train_end runs and the History of the
        completed epochs is returned (history.interrupted is True; the partial epoch's running
        figures are in history.interrupted_logs)."""
        if epochs < 0 or initial_epoch < 0:
            raise ValueError(f"epochs and initial_epoch must be >= 0, got {epochs}, {initial_epoch}")
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose}")
        if not 0.0 <= validation_split < 1.0:
            raise ValueError(f"validation_split must be in [0, 1), got {validation_split}")
        if validation_split:
            if isinstance(x, DataLoader):
                raise ValueError("validation_split needs arrays; give a DataLoader validation_data instead")
            if validation_data is not None:
                raise ValueError("give validation_data or validation_split, not both")
            x, y = _native(x), _native(y)
            n_val = int(len(x) * validation_split)
            if n_val < 1 or n_val >= len(x):
                raise ValueError(f"validation_split={validation_split} of {len(x)} samples leaves no training "
                                 "or no validation samples")
            # Keras's rule: the last fraction, before any shuffling.
            x, validation_data, y = x[:-n_val], (x[-n_val:], y[-n_val:]), y[:-n_val]
        loader = self._loader_for(x, y, batch_size, shuffle, "fit")
        if isinstance(x, DataLoader) and self._pending_loader_state is not None:
            loader.load_state_dict(self._pending_loader_state)
        self._pending_loader_state = None
        self._loader = loader
        val_loader = None
        if validation_data is not None:
            if isinstance(validation_data, DataLoader):
                val_loader = validation_data
            elif isinstance(validation_data, (tuple, list)) and len(validation_data) == 2:
                val_loader = self._loader_for(validation_data[0], validation_data[1], batch_size, False,
                                              "validation_data")
            else:
                raise ValueError("validation_data must be (x, y) or a DataLoader")

        history = History()
        if self.rank != 0:
            verbose = 0  # only rank 0 prints
        callbacks = list(callbacks or [])
        if verbose and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(ProgressBar(verbose))
        # History records before the progress bar prints, after the user's callbacks edit the logs.
        bars = [c for c in callbacks if isinstance(c, ProgressBar)]
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)] + [history] + bars
        params = {"epochs": epochs, "steps": len(loader), "samples": len(loader.dataset),
                  "batch_size": loader.batch_size, "initial_epoch": initial_epoch, "verbose": verbose}
        cbs = CallbackList(callbacks, self, params)
        self.stop_training = False
        self.history = history
        logs: dict = {}
        with _Interrupt() as interrupt:
            try:
                cbs.on_train_begin({})
                for epoch in range(initial_epoch, epochs):
                    if self.stop_training:
                        break
                    logs = self._train_epoch(epoch, loader, cbs, interrupt)
                    if interrupt.requested:
                        history.interrupted, history.interrupted_logs = True, logs
                        break
                    if val_loader is not None:
                        logs.update(self._evaluate(val_loader, cbs, prefix="val_"))
                    self.epoch += 1
                    if self.scheduler is not None and self.scheduler_interval == "epoch":
                        self.scheduler.step()
                    cbs.on_epoch_end(epoch, logs)
            except KeyboardInterrupt:
                # A second Ctrl-C, or one outside the main thread: the batch may be cut short.
                history.interrupted = True
            cbs.on_train_end(dict(logs))
        return history

    def _train_epoch(self, epoch, loader, cbs, interrupt):
        self.model.train()
        loader.set_epoch(self.epoch)
        metrics = self._make_metrics()
        loss_sum, seen = 0.0, 0
        logs: dict = {}
        cbs.on_epoch_begin(epoch, {})
        batch_begin, batch_end = cbs.overrides("on_train_batch_begin"), cbs.overrides("on_train_batch_end")
        for step, batch in enumerate(loader):
            xb, yb = self._batch(batch)
            n = int(xb.shape[0])
            if batch_begin:
                cbs.on_train_batch_begin(step, {"batch": step, "size": n})
            out, loss = self.train_step(xb, yb)
            loss_sum = loss_sum + _weighted(loss, n)  # on the loss's device: nothing waits for the GPU
            seen += n
            for m in metrics:
                m.update(out.data, yb)
            if batch_end:
                running = self._logs(loss_sum, seen, metrics) if cbs.wants_batch_logs(step) else {}
                cbs.on_train_batch_end(step, {**running, "batch": step, "size": n})
            if interrupt.requested or self.stop_training:
                break
        if seen:
            logs = self._logs(loss_sum, seen, metrics)
        if self.distributed:  # the epoch's figures over all ranks
            sums = [v for m in metrics for v in (host_value(m.total), m.count)]
            totals = np.array([host_value(loss_sum), seen] + sums, np.float64)
            totals = dist.all_reduce(totals)
            loss_sum, seen = float(totals[0]), int(totals[1])
            for i, m in enumerate(metrics):
                m.total, m.count = float(totals[2 + 2 * i]), int(totals[3 + 2 * i])
            logs = self._logs(loss_sum, seen, metrics)
        return logs

    @no_grad()
    def _evaluate(self, loader, cbs, prefix=""):
        self.model.eval()
        metrics = self._make_metrics()
        loss_sum, seen = 0.0, 0
        cbs.on_test_begin({})
        batch_end = cbs.overrides("on_test_batch_end")  # its logs would wait for a GPU each batch
        for step, batch in enumerate(loader):
            xb, yb = self._batch(batch)
            n = int(xb.shape[0])
            cbs.on_test_batch_begin(step, {"batch": step, "size": n})
            out = self.model(Tensor._wrap(xb, False))
            loss_sum = loss_sum + _weighted(self.loss(out, yb), n)
            seen += n
            for m in metrics:
                m.update(out.data, yb)
            if batch_end:
                cbs.on_test_batch_end(step, self._logs(loss_sum, seen, metrics))
        logs = self._logs(loss_sum, seen, metrics, prefix)
        cbs.on_test_end(logs)
        return logs

    def evaluate(self, x, y=None, *, batch_size: int = 256, callbacks=None) -> dict:
        """{"loss": ..., metric: ...} over the data (the loss averaged over samples)."""
        loader = self._loader_for(x, y, batch_size, False, "evaluate")
        cbs = CallbackList(callbacks or [], self, {"steps": len(loader), "samples": len(loader.dataset)})
        return self._evaluate(loader, cbs)

    @no_grad()
    def predict(self, x, *, batch_size: int = 256, callbacks=None) -> np.ndarray:
        """The model's outputs for x (an array or a DataLoader), as one NumPy array."""
        if isinstance(x, DataLoader):
            loader = x
        else:
            loader = DataLoader(TensorDataset(_native(x)), batch_size=batch_size, shuffle=False, seed=0,
                                device=self.device)
        cbs = CallbackList(callbacks or [], self, {"steps": len(loader), "samples": len(loader.dataset)})
        self.model.eval()
        outputs = []
        cbs.on_predict_begin({})
        for step, batch in enumerate(loader):
            xb = batch[0] if isinstance(batch, (tuple, list)) else batch
            xb = to_device(_native(xb), self.device)
            cbs.on_predict_batch_begin(step, {"batch": step, "size": int(xb.shape[0])})
            out = self.model(Tensor._wrap(xb, False))
            outputs.append(out.numpy())
            cbs.on_predict_batch_end(step, {"batch": step, "size": int(xb.shape[0])})
        cbs.on_predict_end({})
        if not outputs:
            raise ValueError("predict: no samples")
        return np.concatenate(outputs)

    # -- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self, path, extra: dict | None = None) -> None:
        """Model, optimizer and scheduler state, the epoch, fusegrad's RNG state and the shuffling
        seed, in one safetensors file, atomically (train/checkpoint.py). extra: your own dict of
        JSON values kept beside them (returned by load_checkpoint as info["extra"], and readable
        without loading by fusegrad.train.checkpoint.read_info(path)). Distributed: every rank
        calls it (a sharded optimizer gathers its state), rank 0 alone writes."""
        if self.rank != 0:
            if getattr(self.optimizer, "state_dict_is_collective", False):
                self.optimizer.state_dict()
            return
        checkpoint.save_checkpoint(self, path, extra)

    def load_checkpoint(self, path) -> dict:
        """Restores everything save_checkpoint stored; continue with fit(..., initial_epoch=trainer.epoch).
        A corrupt file raises ValueError; a checkpoint of another model KeyError naming the weights;
        wrong shapes ValueError. On any error the trainer is left as it was. Returns the metadata
        (info["epoch"], info["extra"], ...)."""
        return checkpoint.load_checkpoint(self, path)
