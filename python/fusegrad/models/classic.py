"""The classic small models of the benchmark suite, the tests and the examples."""
from __future__ import annotations

from .. import nn


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


def digits_cnn(channels: int = 1, classes: int = 10) -> nn.Sequential:
    """For 8x8 images (scikit-learn's digits): conv 3x3 32 (same) -> pool -> conv 3x3 64 (same) ->
    pool -> dense 128 -> classes. 'Same' padding keeps the border pixels of so small an image."""
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * 2 * 64, 128), nn.ReLU(), nn.Linear(128, classes),
    )


def cifar_cnn(channels: int = 3, classes: int = 10, image_size: int = 32, dropout: float = 0.5) -> nn.Sequential:
    """The CIFAR-style CNN: three blocks of conv 3x3 (same) + ReLU + 2x2 pooling with 32, 64 and 128
    channels, then dense 512 (with dropout) -> classes."""
    if image_size % 8:
        raise ValueError(f"cifar_cnn: image_size must be a multiple of 8, got {image_size}")
    side = image_size // 8
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(side * side * 128, 512), nn.ReLU(), nn.Dropout(dropout), nn.Linear(512, classes),
    )
