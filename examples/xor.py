"""A binary classifier: sigmoid output and binary cross-entropy, on the XOR problem.

The four corners of the square, each jittered into a cloud of points; the class is the XOR of the
two coordinates' signs, which no linear model can separate.

    python examples/xor.py [--epochs 60]
"""
import sys

import _common
import numpy as np

import fusegrad as fg
from fusegrad import nn, optim
from fusegrad.train import Trainer


def xor_data(n, rng):
    corners = rng.integers(0, 2, (n, 2))
    x = (corners * 2 - 1 + rng.normal(0, 0.25, (n, 2))).astype(np.float32)
    y = (corners[:, 0] ^ corners[:, 1]).astype(np.float32)[:, None]
    return x, y


def main(argv=None) -> dict:
    p = _common.parser(__doc__.splitlines()[0], epochs=60, batch_size=32)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    (x, y), (xt, yt) = xor_data(400, rng), xor_data(200, rng)
    x, y = _common.limit(x, y, args.limit)
    fg.manual_seed(args.seed)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1), nn.Sigmoid())
    trainer = Trainer(model, nn.BCELoss(), optim.Adam(model.parameters(), lr=0.03), metrics=["accuracy"],
                      device=args.device)
    history = trainer.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, validation_split=0.1,
                          verbose=args.verbose)
    result = trainer.evaluate(xt, yt)
    _common.report("XOR, test set", result)
    corners = trainer.predict(np.array([[-1, -1], [-1, 1], [1, -1], [1, 1]], np.float32))[:, 0]
    print("p(class 1) at the corners (-1,-1), (-1,1), (1,-1), (1,1): " + ", ".join(f"{p:.3f}" for p in corners))
    return {"history": history.history, "corners": corners, **result}


if __name__ == "__main__":
    main(sys.argv[1:])
