"""The MLP 784-500-300-10 on MNIST, trained with the Trainer.

    python examples/mnist_mlp.py [--data-dir DIR] [--epochs 4]
"""
import sys

import _common

import fusegrad as fg
from fusegrad import models, optim
from fusegrad.train import Trainer


def main(argv=None) -> dict:
    p = _common.parser(__doc__.splitlines()[0], epochs=4)
    p.add_argument("--data-dir", default=_common.MNIST_DIR, help="a directory of MNIST IDX files")
    args = p.parse_args(argv)
    (x, y), (xt, yt) = _common.mnist_split(args.data_dir)
    x, y = _common.limit(x, y, args.limit)
    xt, yt = _common.limit(xt, yt, args.limit)
    fg.manual_seed(args.seed)
    model = models.mlp(784, hidden=(500, 300), classes=10)
    trainer = Trainer(model, "cross_entropy", optim.Adam(model.parameters(), lr=1e-3), device=args.device)
    history = trainer.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, validation_split=0.1,
                          verbose=args.verbose)
    result = trainer.evaluate(xt, yt)
    _common.report("MLP 784-500-300-10, test set", result)
    return {"history": history.history, **result}


if __name__ == "__main__":
    main(sys.argv[1:])
