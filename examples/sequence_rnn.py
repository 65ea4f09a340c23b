"""LSTM and GRU sequence classification: each 8x8 digit read as a sequence of 8 rows of 8 pixels.

    python examples/sequence_rnn.py [--cell lstm|gru|both] [--epochs 15] [--compare-torch]

--compare-torch also times one epoch of training steps of the same model (same weights, batches and
Adam) in fusegrad and in PyTorch eager, and prints both.
"""
import sys
import time

import numpy as np

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


def epoch_seconds(cell: str, x, y, batch_size: int, seed: int) -> dict:
    """Seconds for one epoch of hand-written training steps, fusegrad and (if installed) PyTorch,
    the same model from the same weights; the best of three epochs each."""
    fg.manual_seed(seed)
    model = SequenceClassifier(cell)
    opt, loss_fn = optim.Adam(model.parameters(), lr=3e-3), nn.CrossEntropyLoss()

    def ours():
        for i in range(0, len(x), batch_size):
            opt.zero_grad()
            loss_fn(model(fg.tensor(x[i:i + batch_size])), y[i:i + batch_size]).backward()
            opt.step()

    runs = {"fusegrad": ours}
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        rnn = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(8, 64, batch_first=True)
        head = torch.nn.Linear(64, 10)
        state = {k: torch.from_numpy(v.numpy().copy()) for k, v in model.state_dict().items()}
        rnn.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("rnn.")})
        head.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("head.")})
        topt = torch.optim.Adam(list(rnn.parameters()) + list(head.parameters()), lr=3e-3)
        tx, ty, tloss = torch.from_numpy(x), torch.from_numpy(y), torch.nn.CrossEntropyLoss()

        def theirs():
            for i in range(0, len(x), batch_size):
                topt.zero_grad()
                tloss(head(rnn(tx[i:i + batch_size])[0][:, -1]), ty[i:i + batch_size]).backward()
                topt.step()

        runs["pytorch"] = theirs
    best = {name: float("inf") for name in runs}
    for _ in range(3):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main(argv=None) -> dict:
    p = _common.parser(__doc__.splitlines()[0], epochs=15, batch_size=32)
    p.add_argument("--cell", choices=["lstm", "gru", "both"], default="both")
    p.add_argument("--compare-torch", action="store_true", help="time an epoch of steps against PyTorch eager")
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
        if args.compare_torch:
            seconds = epoch_seconds(cell, np.ascontiguousarray(seq, np.float32), np.asarray(y), args.batch_size,
                                    args.seed)
            print(f"{cell.upper()} epoch of training steps: "
                  + ", ".join(f"{name} {1e3 * s:.1f} ms" for name, s in seconds.items()))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
