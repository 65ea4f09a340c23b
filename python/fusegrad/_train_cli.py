"""`python -m fusegrad train`: a whole training run from the command line."""
from __future__ import annotations

import json
import os
import time

import numpy as np

from . import models, optim
from .data import load_digits, load_mnist
from .random import manual_seed
from .train import ModelCheckpoint, Trainer

MNIST_TRAIN_OF_TEST_SET = 8000  # with only the MNIST test set at hand: 8,000 to train on, 2,000 to test


def load_data(spec: str):
    """((x_train, y_train), (x_test, y_test), name) for 'digits' or 'mnist:DIR'."""
    if spec == "digits":
        return (*load_digits(), "digits")
    if spec.startswith("mnist:"):
        directory = spec[len("mnist:"):]
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"--data: no directory {directory!r}")
        try:
            train = load_mnist(directory, "train")
        except FileNotFoundError:
            # Only the test set is there (as in ../shared/data/mnist): split it.
            x, y = load_mnist(directory, "test")
            k = MNIST_TRAIN_OF_TEST_SET
            return (x[:k], y[:k]), (x[k:], y[k:]), "mnist (test set split 8000/2000)"
        return train, load_mnist(directory, "test"), "mnist"
    raise ValueError(f"--data: expected 'digits' or 'mnist:DIR', got {spec!r}")


def build_model(kind: str, x_shape):
    h, w, c = x_shape[1:]
    if kind == "mlp":
        return models.mlp(in_features=h * w * c, hidden=(500, 300) if h >= 28 else (128, 64))
    if h == 8 and w == 8:
        return models.digits_cnn(channels=c)
    if h == w == 28:
        return models.mnist_cnn(channels=c)
    raise ValueError(f"--model cnn: no CNN for {h}x{w} images")


def run(args) -> int:
    if args.epochs is not None and args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not args.lr > 0:
        raise ValueError(f"--lr must be > 0, got {args.lr}")
    (x_train, y_train), (x_test, y_test), data_name = load_data(args.data)
    epochs = args.epochs if args.epochs is not None else (15 if data_name == "digits" else 5)
    manual_seed(args.seed)
    model = build_model(args.model, x_train.shape)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    steps = -(-len(x_train) // args.batch_size) * epochs
    scheduler = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    trainer = Trainer(model, "cross_entropy", opt, metrics=["accuracy"], device=args.device,
                      scheduler=scheduler, scheduler_interval="step", seed=args.seed)
    if args.resume:
        trainer.load_checkpoint(args.resume)
    quiet = args.verbose == 0
    if not quiet:
        print(f"fusegrad train: {args.model} on {data_name} ({len(x_train)} train / {len(x_test)} test), "
              f"{epochs} epochs, batch {args.batch_size}, device {trainer.device}"
              + (f", resumed at epoch {trainer.epoch}" if args.resume else ""), flush=True)
    callbacks = [ModelCheckpoint(args.save, full=True)] if args.save else []
    start = time.perf_counter()
    history = trainer.fit(x_train, y_train, epochs=epochs, batch_size=args.batch_size, callbacks=callbacks,
                          verbose=args.verbose, initial_epoch=trainer.epoch)
    seconds = time.perf_counter() - start
    trained = len(history.epoch) * len(x_train)
    result = trainer.evaluate(x_test, y_test)
    report = {
        "test_accuracy": round(float(result["accuracy"]), 6), "test_loss": round(float(result["loss"]), 6),
        "epochs": trainer.epoch, "samples_per_second": round(trained / seconds, 1) if seconds > 0 else None,
        "seconds": round(seconds, 3), "device": trainer.device,
    }
    if history.interrupted:
        report["interrupted"] = True
    if not quiet:
        print(f"test accuracy {report['test_accuracy']:.4f} - test loss {report['test_loss']:.4f} - "
              f"{report['samples_per_second']} samples/s - {seconds:.1f} s"
              + (" (interrupted)" if history.interrupted else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0 if np.isfinite(report["test_loss"]) else 1
