"""The classic small models of the benchmark suite, the tests and the examples."""
from __future__ import annotations

from . import nn


def mlp(in_features: int = 784, hidden=(500, 300), classes: int = 10) -> nn.Sequential:
    """Flatten -> Linear/ReLU per hidden size -> Linear (the 784-500-300-10 MNIST MLP by default)."""
    layers = [nn.Flatten()]
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


def mnist_cnn(channels: int = 1, classes: int = 10, image_size: int = 28) -> nn.Sequential:
    """conv 3x3 32 -> pool -> conv 3x3 64 -> pool -> dense 64 -> classes, on NHWC input."""
    side = ((image_size - 2) // 2 - 2) // 2
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(side * side * 64, 64), nn.ReLU(), nn.Linear(64, classes),
    )
