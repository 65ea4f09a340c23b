"""Fine-tuning: train a CNN on digits 0-4, freeze its convolutional layers, replace the head, and
train on a new task (digits 5-9) with only the new head and the dense layer learning.

    python examples/finetune.py [--epochs 8] [--finetune-epochs 5]
"""
import sys

import _common
import numpy as np

import fusegrad as fg
from fusegrad import models, nn, optim
from fusegrad.data import load_digits
from fusegrad.train import Trainer


def main(argv=None) -> dict:
    p = _common.parser(__doc__.splitlines()[0], epochs=8, batch_size=32)
    p.add_argument("--finetune-epochs", type=int, default=5)
    args = p.parse_args(argv)
    (x, y), (xt, yt) = load_digits()
    first, first_t = y < 5, yt < 5
    fg.manual_seed(args.seed)

    # 1. Pretrain on digits 0-4.
    model = models.digits_cnn(classes=5)
    xa, ya = _common.limit(x[first], y[first], args.limit)
    base = Trainer(model, "cross_entropy", optim.Adam(model.parameters(), lr=2e-3), device=args.device)
    base.fit(xa, ya, epochs=args.epochs, batch_size=args.batch_size, validation_split=0.1, verbose=args.verbose)
    pretrained = base.evaluate(xt[first_t], yt[first_t])
    _common.report("pretrained on 0-4, test set", pretrained)

    # 2. Freeze the convolutions and put a new head for digits 5-9 (labels 0-4 there) in place.
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    for conv in convs:
        conv.requires_grad_(False)
    frozen = {id(p): p.numpy().copy() for conv in convs for p in conv.parameters()}
    layers = list(model)
    model = nn.Sequential(*layers[:-1], nn.Linear(layers[-1].in_features, 5))
    trainable = [p for p in model.parameters() if p.requires_grad]
    xb, yb = _common.limit(x[~first], y[~first] - 5, args.limit)
    tuned = Trainer(model, "cross_entropy", optim.Adam(trainable, lr=2e-3), device=args.device)
    tuned.fit(xb, yb, epochs=args.finetune_epochs, batch_size=args.batch_size, validation_split=0.1,
              verbose=args.verbose)
    new_task = tuned.evaluate(xt[~first_t], yt[~first_t] - 5)
    _common.report("fine-tuned on 5-9 with frozen convolutions, test set", new_task)
    unchanged = all(np.array_equal(p.numpy(), frozen[id(p)]) for conv in convs for p in conv.parameters())
    print(f"convolutions unchanged: {unchanged}; trainable tensors {len(trainable)} of "
          f"{len(list(model.parameters()))}")
    return {"pretrained_accuracy": pretrained["accuracy"], "finetuned_accuracy": new_task["accuracy"],
            "convs_unchanged": unchanged, "trainable": len(trainable)}


if __name__ == "__main__":
    main(sys.argv[1:])
