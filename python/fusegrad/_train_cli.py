"""`python -m fusegrad train`: a whole training run from the command line.

What the user must see whatever --verbose says (nothing left to train, an interruption and what was
saved) goes to stderr; the run's own report (the header, test figures, the files written) to stdout,
unless --verbose 0.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from . import models, optim
from .data import load_digits, load_mnist
from .random import manual_seed
from .train import Callback, ModelCheckpoint, Trainer
from .train.checkpoint import read_info

MNIST_TRAIN_FRACTION_OF_TEST_SET = 0.8  # with only the MNIST test set at hand: 8,000 to train on, 2,000 to test
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a program stopped by Ctrl-C


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
            k = int(len(x) * MNIST_TRAIN_FRACTION_OF_TEST_SET)
            return (x[:k], y[:k]), (x[k:], y[k:]), "MNIST's test set split in two"
        return train, load_mnist(directory, "test"), "MNIST"
    raise ValueError(f"--data: expected 'digits' or 'mnist:DIR', got {spec!r}")


def data_kind(spec: str) -> str:
    """'digits' or 'mnist': what a checkpoint must match (the MNIST directory may have moved)."""
    return spec.split(":", 1)[0]


def build_model(kind: str, x_shape):
    h, w, c = x_shape[1:]
    if kind == "mlp":
        return models.mlp(in_features=h * w * c, hidden=(500, 300) if h >= 28 else (128, 64))
    if h == 8 and w == 8:
        return models.digits_cnn(channels=c)
    if h == w == 28:
        return models.mnist_cnn(channels=c)
    raise ValueError(f"--model cnn: no CNN for {h}x{w} images")


def check_args(args) -> None:
    if args.epochs is not None and args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not args.lr > 0:
        raise ValueError(f"--lr must be > 0, got {args.lr}")
    for flag, path in (("--save", args.save), ("--json", args.json)):
        # Found out now rather than after the whole run.
        directory = os.path.dirname(os.path.abspath(path)) if path else None
        if directory and not os.path.isdir(directory):
            raise FileNotFoundError(f"{flag} {path}: no directory {directory!r}")


def check_resume(args) -> dict:
    """The checkpoint's own description (header only), after checking that it was made by this
    command for the same --model and kind of --data, before any weights are loaded."""
    info = read_info(args.resume)
    made_by = info["extra"]
    if "model" not in made_by:  # a Trainer checkpoint from elsewhere: the weights will tell
        return info
    if made_by["model"] != args.model:
        raise ValueError(f"--resume {args.resume}: the checkpoint holds the {made_by['model']} model "
                         f"(trained on --data {made_by.get('data')}), not {args.model}; pass --model {made_by['model']}")
    if data_kind(made_by.get("data", "")) != data_kind(args.data):
        raise ValueError(f"--resume {args.resume}: the checkpoint was trained on --data {made_by.get('data')}, "
                         f"this run asks for --data {args.data}")
    return info


class SamplesSeen(Callback):
    """Counts the samples trained on, a partial epoch included."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def on_train_batch_end(self, batch, logs=None):
        self.count += int((logs or {}).get("size", 0))


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def run(args) -> int:
    check_args(args)
    rank = 0
    if getattr(args, "distributed", False):
        from . import distributed  # noqa: PLC0415

        distributed.init()
        rank = distributed.get_rank()
    resumed = check_resume(args) if args.resume else None
    (x_train, y_train), (x_test, y_test), data_name = load_data(args.data)
    epochs = args.epochs if args.epochs is not None else (15 if data_name == "digits" else 5)
    manual_seed(args.seed)
    model = build_model(args.model, x_train.shape)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    steps = -(-len(x_train) // args.batch_size) * epochs
    scheduler = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    trainer = Trainer(model, "cross_entropy", opt, metrics=["accuracy"], device=args.device,
                      scheduler=scheduler, scheduler_interval="step", seed=args.seed,
                      distributed=bool(getattr(args, "distributed", False)))
    world = trainer.world_size
    if args.resume:
        trainer.load_checkpoint(args.resume)
    quiet = args.verbose == 0 or rank != 0  # only rank 0 reports

    def report_line(text):
        if not quiet:
            print(text, flush=True)

    def note(text):
        if rank == 0:
            print(text, file=sys.stderr, flush=True)

    report_line(f"fusegrad train: {args.model} on {data_name} ({len(x_train)} train / {len(x_test)} test), "
                f"{plural(epochs, 'epoch')}, batch {args.batch_size}, device {trainer.device}"
                + (f", {world} processes" if world > 1 else "")
                + (f", resumed at epoch {trainer.epoch}" if resumed else ""))
    checkpoint = (ModelCheckpoint(args.save, full=True, extra={"model": args.model, "data": args.data})
                  if args.save else None)
    samples = SamplesSeen()
    interrupted = False
    start = time.perf_counter()
    if trainer.epoch >= epochs:
        note(f"checkpoint {args.resume} is at epoch {trainer.epoch}; nothing to train for --epochs {epochs}; "
             "pass a larger --epochs")
    else:
        history = trainer.fit(x_train, y_train, epochs=epochs, batch_size=args.batch_size,
                              callbacks=[samples] + ([checkpoint] if checkpoint else []),
                              verbose=args.verbose, initial_epoch=trainer.epoch)
        interrupted = history.interrupted
    seconds = time.perf_counter() - start
    result = None
    if not interrupted:  # after a Ctrl-C the user wants out, not a test pass over a half-trained model
        try:
            result = trainer.evaluate(x_test, y_test)
        except KeyboardInterrupt:
            interrupted = True
    report = {
        "test_accuracy": None if result is None else round(float(result["accuracy"]), 6),
        "test_loss": None if result is None else round(float(result["loss"]), 6),
        "epochs": trainer.epoch,
        "samples_per_second": round(samples.count * world / seconds, 1) if samples.count and seconds > 0 else None,
        "seconds": round(seconds, 3), "device": trainer.device,
    }
    if world > 1:
        report["processes"] = world
    if interrupted:
        report["interrupted"] = True
    if result is not None:
        report_line(f"test accuracy {report['test_accuracy']:.4f} - test loss {report['test_loss']:.4f}"
                    + (f" - {report['samples_per_second']} samples/s - {seconds:.1f} s" if samples.count else ""))
    say = note if interrupted else report_line
    if interrupted:
        note(f"interrupted after {plural(trainer.epoch, 'completed epoch')}")
    if checkpoint is not None and rank == 0:
        if checkpoint.last_saved is not None:
            say(f"checkpoint of epoch {checkpoint.last_saved[0]} written to {checkpoint.last_saved[1]}")
        else:
            say(f"no epoch completed in this run: {args.save} not written")
    if args.json and rank == 0:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        say(f"results written to {args.json}")
    if interrupted:
        return EXIT_INTERRUPTED
    return 0 if np.isfinite(report["test_loss"]) else 1
