"""Shared bits of the examples: where MNIST lives, the arguments every example takes, the
validation split and the final report.

Every example follows one protocol: choices made while training (early stopping, watching the
curves) see only a validation split taken from the training data; the test set is evaluated once,
at the end, and reported rounded."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

# ../shared/data/mnist beside the repository, unless FUSEGRAD_MNIST_DIR says otherwise.
MNIST_DIR = os.environ.get("FUSEGRAD_MNIST_DIR", str(Path(__file__).resolve().parents[1].parent / "shared" / "data"
                                                      / "mnist"))


def parser(description: str, epochs: int, batch_size: int = 64) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--limit", type=int, default=None, help="use at most this many training and test samples each (quick runs)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2])
    return p


def mnist_split(directory: str):
    """MNIST train/test from `directory`; with only the test set there (as in ../shared/data/mnist),
    its first 8,000 images to train on and the other 2,000 to test."""
    from fusegrad.data import load_mnist

    try:
        return load_mnist(directory, "train"), load_mnist(directory, "test")
    except FileNotFoundError:
        x, y = load_mnist(directory, "test")
        return (x[:8000], y[:8000]), (x[8000:], y[8000:])


def limit(x, y, n):
    return (x, y) if n is None else (x[:n], y[:n])


def split_validation(x, y, fraction: float = 0.1):
    """((x_train, y_train), (x_val, y_val)): the last `fraction` of the training arrays held out,
    as Trainer.fit(validation_split=...) does it; for a DataLoader that needs the split up front."""
    n_val = max(1, int(len(x) * fraction))
    return (x[:-n_val], y[:-n_val]), (x[-n_val:], y[-n_val:])


def report(title: str, result: dict) -> None:
    """Prints `title: accuracy 0.9765 - loss 0.0812`: the metrics, then the loss, to 4 decimals."""
    ordered = [name for name in result if name != "loss"] + ["loss"] * ("loss" in result)
    print(f"{title}: " + " - ".join(f"{name} {result[name]:.4f}" for name in ordered))
