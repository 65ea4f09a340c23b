"""The MNIST CNN (conv 32 -> pool -> conv 64 -> pool -> dense 64), with light augmentation.

    python examples/mnist_cnn.py [--data-dir DIR] [--epochs 10]
"""
import sys

import _common

import fusegrad as fg
from fusegrad import models, optim
from fusegrad.data import DataLoader, RandomShift, TensorDataset
from fusegrad.train import Trainer


def main(argv=None) -> dict:
    p = _common.parser(__doc__.splitlines()[0], epochs=10)
    p.add_argument("--data-dir", default=_common.MNIST_DIR, help="a directory of MNIST IDX files")
    p.add_argument("--shift", type=int, default=1, help="random shifts of up to this many pixels (0: none)")
    args = p.parse_args(argv)
    (x, y), (xt, yt) = _common.mnist_split(args.data_dir)
    x, y = _common.limit(x, y, args.limit)
    xt, yt = _common.limit(xt, yt, args.limit)
    (x, y), validation = _common.split_validation(x, y)  # the loader augments, so split up front
    fg.manual_seed(args.seed)
    model = models.mnist_cnn()
    opt = optim.Adam(model.parameters(), lr=1e-3)
    steps = args.epochs * -(-len(x) // args.batch_size)
    trainer = Trainer(model, "cross_entropy", opt, device=args.device, scheduler_interval="step",
                      scheduler=optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps))
    train = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True, seed=args.seed,
                       transform=RandomShift(args.shift) if args.shift else None)
    history = trainer.fit(train, epochs=args.epochs, validation_data=validation, verbose=args.verbose)
    result = trainer.evaluate(xt, yt)
    _common.report("MNIST CNN, test set", result)
    return {"history": history.history, **result}


if __name__ == "__main__":
    main(sys.argv[1:])
