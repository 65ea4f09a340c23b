"""Command line: python -m fusegrad info | train | bench."""
from __future__ import annotations

import argparse
import os
import sys

EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for a program stopped by Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what `ls | head` reports for ls


def _add_info_parser(sub):
    sub.add_parser("info", help="show the build, ISA level, threads and devices",
                   description="Show this installation: version, the CPU instruction set in use and the best "
                   "one available, the thread count, whether the CUDA module was built, and the devices.")


def _add_train_parser(sub):
    p = sub.add_parser("train", help="train a model (default: the CNN on scikit-learn's 8x8 digits)",
                       description="Train a model and report its test accuracy. Defaults: the small CNN on "
                       "the 8x8 digits bundled with scikit-learn. Ctrl-C stops after the running batch, "
                       "keeps what --save and --json promised and exits with status 130.")
    p.add_argument("--model", choices=["cnn", "mlp"], default="cnn", help="(default: %(default)s)")
    p.add_argument("--data", default="digits", metavar="digits|mnist:DIR",
                   help="'digits' (bundled with scikit-learn) or 'mnist:DIR', a directory of MNIST IDX files "
                   "(default: %(default)s)")
    p.add_argument("--epochs", type=int, default=None, help="train up to this many epochs in all, resumed "
                   "ones included (default: 15 on digits, 5 on MNIST)")
    p.add_argument("--batch-size", type=int, default=32, help="(default: %(default)s)")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate, cosine-annealed per step "
                   "(default: %(default)s)")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--save", metavar="PATH", help="write a Trainer checkpoint (safetensors) after each epoch")
    p.add_argument("--resume", metavar="PATH", help="continue from a checkpoint written by --save")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over the processes of mpirun/srun (mpirun -n 2 python -m fusegrad train "
                        "--distributed ...); --batch-size is the global batch; only rank 0 reports and writes")
    p.add_argument("--verbose", type=int, choices=[0, 1, 2], default=1, help="0 silent, 1 progress bar, "
                   "2 one line per epoch (default: %(default)s)")


def _add_bench_parser(sub):
    p = sub.add_parser("bench", help="run the benchmark suite",
                       description="Time every kernel and a few training steps beside NumPy (and PyTorch and "
                       "CuPy when importable), interleaved in one run, and report throughput, the speedup "
                       "over each baseline and the fraction of this machine's limits measured at start-up.")
    p.add_argument("--filter", default="", metavar="PATTERN", help="run only cases whose name contains "
                   "PATTERN (comma-separated alternatives; default: all cases)")
    p.add_argument("--json", metavar="FILE", help="also write the results to FILE as JSON")
    p.add_argument("--repeat", type=int, default=None, help="timed rounds per case (default: as many as "
                   "fit a few seconds per case, 5 to 30)")
    p.add_argument("--device", choices=["cpu", "cuda", "all"], default="all",
                   help="which cases: cpu, cuda (fails without a usable GPU) or all (default: %(default)s; "
                   "the cuda cases only where a GPU is usable)")
    p.add_argument("--list", action="store_true", help="list the cases and exit")


def _main(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusegrad")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_info_parser(sub)
    _add_train_parser(sub)
    _add_bench_parser(sub)
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


def main(argv=None) -> int:
    """Runs a command; its exit status. Ctrl-C outside training (imports, loading data, the
    benchmarks) ends it with one line, not a traceback."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED


def _exit_quietly_on_broken_pipe() -> int:
    # The reader of our output went away (`python -m fusegrad bench --list | head -3`). Point
    # stdout at /dev/null so that the interpreter's final flush does not fail a second time.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    try:
        status = main()
        sys.stdout.flush()  # a closed pipe shows here at the latest, while we can still handle it
    except BrokenPipeError:
        status = _exit_quietly_on_broken_pipe()
    sys.exit(status)
