"""LSTM and GRU sequence classification: each 8x8 digit read as a sequence of 8 rows of 8 pixels.

    python examples/sequence_rnn.py [--cell lstm|gru|both] [--epochs 15]
"""
import sys

import _common

import fusegrad as fg
from fusegrad import nn, optim
from fusegrad.data import load_digits
from fusegrad.train import Trainer


class SequenceClassifier(nn.Module):
    """A recurrent layer over the rows, then a linear head on the last step's hidden state."""

    def __init__(self, cell: str, features: int = 8, hidden: int = 64, classes: int = 10):
        super().__init__()
        self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def main(argv=None) -> dict:
    p = _common.parser(__doc__.splitlines()[0], epochs=15, batch_size=32)
    p.add_argument("--cell", choices=["lstm", "gru", "both"], default="both")
    args = p.parse_args(argv)
    (x, y), (xt, yt) = load_digits()
    seq, seq_test = x[..., 0], xt[..., 0]  # (N, 8 steps, 8 features)
    seq, y = _common.limit(seq, y, args.limit)
    seq_test, yt = _common.limit(seq_test, yt, args.limit)
    results = {}
    for cell in (["lstm", "gru"] if args.cell == "both" else [args.cell]):
        fg.manual_seed(args.seed)
        model = SequenceClassifier(cell)
        trainer = Trainer(model, "cross_entropy", optim.Adam(model.parameters(), lr=3e-3), device=args.device)
        trainer.fit(seq, y, epochs=args.epochs, batch_size=args.batch_size, validation_split=0.1,
                    verbose=args.verbose)
        results[cell] = trainer.evaluate(seq_test, yt)
        _common.report(f"{cell.upper()}, test set", results[cell])
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
