"""``python -m modelkin.zoo build OUT --size {tiny,small,full} --seed S``: build a reference zoo.

The summary goes to stdout as one JSON object, progress to stderr. Exit codes: 0 built (or already there),
1 the zoo cannot be built into OUT, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import NoReturn

from modelkin.zoo.build import ZooError, build_zoo
from modelkin.zoo.plan import SIZES


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (the full usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _seed(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m modelkin.zoo", description="Reproducible reference zoos with ground truth.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    build = commands.add_parser("build", help="build a zoo into a directory (returns at once if already built)")
    build.add_argument("out", metavar="OUT", help="output directory (new, empty, or holding this same zoo)")
    build.add_argument("--size", choices=list(SIZES), default="tiny", help="zoo size (default: tiny)")
    build.add_argument("--seed", type=_seed, default=0, help="seed: the same seed gives the same bytes (default: 0)")
    build.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        summary = build_zoo(args.out, size=args.size, seed=args.seed, progress=not args.quiet)
    except ZooError as exc:
        hint = f" ({exc.hint})" if exc.hint else ""
        print(f"error: {exc}{hint}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
