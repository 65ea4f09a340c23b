"""Command line: python -m fusegrad info | bench."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusegrad")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="show the build, ISA level, threads and devices")
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
    from .bench import main as bench_main

    return bench_main(args)


if __name__ == "__main__":
    sys.exit(main())
