"""Command line: python -m fusegrad info | train | bench."""
from __future__ import annotations

import argparse
import sys


def _add_train_parser(sub):
    p = sub.add_parser("train", help="train a model (default: the CNN on scikit-learn's 8x8 digits)",
                       description="Train a model and report its test accuracy. Defaults: the small CNN on "
                       "the 8x8 digits bundled with scikit-learn.")
    p.add_argument("--model", choices=["cnn", "mlp"], default="cnn")
    p.add_argument("--data", default="digits", metavar="digits|mnist:DIR",
                   help="'digits' (bundled with scikit-learn) or 'mnist:DIR', a directory of MNIST IDX files")
    p.add_argument("--epochs", type=int, default=None, help="default: 15 on digits, 5 on MNIST")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (cosine-annealed per step)")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", metavar="PATH", help="write a Trainer checkpoint (safetensors) after each epoch")
    p.add_argument("--resume", metavar="PATH", help="continue from a Trainer checkpoint")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--verbose", type=int, choices=[0, 1, 2], default=1, help="0 silent, 1 progress bar, "
                   "2 one line per epoch")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusegrad")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="show the build, ISA level, threads and devices")
    _add_train_parser(sub)
    bench = sub.add_parser("bench", help="run the benchmark suite")
    bench.add_argument("--filter", default="", help="run only cases whose name contains PATTERN "
                       "(comma-separated alternatives)", metavar="PATTERN")
    bench.add_argument("--json", help="write the results to FILE as JSON", metavar="FILE")
    bench.add_argument("--repeat", type=int, default=None, help="timed repetitions per case")
    bench.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    bench.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args(argv)

    if args.command == "info":
        from ._info import format_info, info

        print(format_info(info()))
        return 0
    if args.command == "train":
        from ._train_cli import run

        try:
            return run(args)
        except (ValueError, FileNotFoundError, ImportError, KeyError) as err:
            print(f"python -m fusegrad train: error: {err}", file=sys.stderr)
            return 2
    from .bench import main as bench_main

    return bench_main(args)


if __name__ == "__main__":
    sys.exit(main())
