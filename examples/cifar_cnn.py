"""The CIFAR-style CNN (conv 32/64/128 with pooling, dense 512) with augmentation on 32x32x3 input.

With --data-dir pointing at CIFAR-10's binary version (cifar-10-batches-bin) it trains on CIFAR-10.
Without it, on a 32x32 colour task made from the bundled 8x8 digits (each digit upscaled 4x,
painted in a random colour on a random background), so the example runs anywhere, offline.

    python examples/cifar_cnn.py [--data-dir cifar-10-batches-bin] [--epochs 10]
"""
import sys

import _common
import numpy as np

import fusegrad as fg
from fusegrad import models, optim
from fusegrad.data import (
    Compose,
    DataLoader,
    RandomFlip,
    RandomRotation,
    RandomShift,
    TensorDataset,
    load_cifar10,
    load_digits,
)
from fusegrad.train import EarlyStopping, Trainer


def colour_digits(seed=0):
    """Digits as 32x32x3 images: glyph colour and background colour drawn per image."""
    rng = np.random.default_rng(seed)

    def paint(x):
        big = x.repeat(4, axis=1).repeat(4, axis=2)  # (N, 32, 32, 1)
        fg_colour = rng.uniform(0.5, 1.0, (len(x), 1, 1, 3)).astype(np.float32)
        bg_colour = rng.uniform(0.0, 0.4, (len(x), 1, 1, 3)).astype(np.float32)
        return big * fg_colour + (1 - big) * bg_colour

    (x, y), (xt, yt) = load_digits()
    return (paint(x), y), (paint(xt), yt)


def main(argv=None) -> dict:
    p = _common.parser(__doc__.splitlines()[0], epochs=10)
    p.add_argument("--data-dir", default=None, help="CIFAR-10 binary directory (default: colour digits)")
    args = p.parse_args(argv)
    if args.data_dir:
        (x, y), (xt, yt) = load_cifar10(args.data_dir, "train"), load_cifar10(args.data_dir, "test")
        augment = Compose([RandomShift(4), RandomFlip(horizontal=True)])
    else:
        (x, y), (xt, yt) = colour_digits(args.seed)
        augment = Compose([RandomShift(3), RandomRotation(10)])  # no flips: a mirrored digit is another glyph
    x, y = _common.limit(x, y, args.limit)
    xt, yt = _common.limit(xt, yt, args.limit)
    (x, y), validation = _common.split_validation(x, y)  # early stopping must not peek at the test set
    fg.manual_seed(args.seed)
    model = models.cifar_cnn(channels=3, classes=10, image_size=32)
    trainer = Trainer(model, "cross_entropy", optim.AdamW(model.parameters(), lr=1e-3, weight_decay=5e-4),
                      metrics=["accuracy", "top3_accuracy"], device=args.device)
    train = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True, seed=args.seed,
                       transform=augment)
    history = trainer.fit(train, epochs=args.epochs, validation_data=validation, verbose=args.verbose,
                          callbacks=[EarlyStopping("val_accuracy", patience=3, restore_best_weights=True)])
    result = trainer.evaluate(xt, yt)
    _common.report("CIFAR-style CNN, test set", result)
    return {"history": history.history, **result}


if __name__ == "__main__":
    main(sys.argv[1:])
