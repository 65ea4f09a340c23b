"""Whole models trained to a set accuracy on real data: the first 8,000 images of the MNIST test set
in ../shared/data/mnist (or $FUSEGRAD_MNIST_DIR) for training, the other 2,000 for testing."""
import os
from pathlib import Path

import numpy as np
import pytest

import fusegrad as fg
from fusegrad import models, nn, optim
from fusegrad.data import load_mnist

MNIST_DIR = os.environ.get("FUSEGRAD_MNIST_DIR",
                           str(Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"))


def mnist_split():
    if not Path(MNIST_DIR).is_dir():
        pytest.skip(f"the MNIST files are not at {MNIST_DIR} (set FUSEGRAD_MNIST_DIR)")  # data, not hardware
    x, y = load_mnist(MNIST_DIR, "test")
    return x[:8000], y[:8000], x[8000:], y[8000:]


def train(model, x, y, epochs, batch, lr=1e-3, seed=0):
    opt = optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        model.train()
        order = rng.permutation(len(x))
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            opt.zero_grad()
            loss = loss_fn(model(fg.tensor(x[idx])), y[idx])
            loss.backward()
            opt.step()
    return model


@fg.no_grad()
def accuracy(model, x, y):
    model.eval()
    pred = np.concatenate([model(fg.tensor(x[i:i + 500])).numpy().argmax(1) for i in range(0, len(x), 500)])
    return float((pred == y).mean())


def test_mlp_on_mnist_reaches_95_5_percent():
    xtr, ytr, xte, yte = mnist_split()
    fg.manual_seed(0)
    model = train(models.mlp(), xtr, ytr, epochs=4, batch=64)
    acc = accuracy(model, xte, yte)
    print(f"MLP 784-500-300-10, Adam, 4 epochs, batch 64: test accuracy {acc:.4f}")
    assert acc >= 0.955


def test_cnn_on_mnist_reaches_97_5_percent():
    xtr, ytr, xte, yte = mnist_split()
    fg.manual_seed(0)
    model = train(models.mnist_cnn(), xtr, ytr, epochs=4, batch=64)
    acc = accuracy(model, xte, yte)
    print(f"MNIST CNN, Adam, 4 epochs, batch 64: test accuracy {acc:.4f}")
    assert acc >= 0.975
