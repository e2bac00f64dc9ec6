"""Command line: ``python -m autograder grade PATH... --out DIR [--assignment NAME] [--jobs N] [--device cpu|cuda]``."""

import argparse
import sys
from pathlib import Path

from .grade import GRADED_NAMES, grade


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m autograder", description="Grade the course's assignment notebooks."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    grade_parser = commands.add_parser("grade", help="grade submitted notebooks and write results and grades.csv")
    grade_parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="a notebook, or a folder of them (nbgrader's submitted/ too)"
    )
    grade_parser.add_argument("--out", required=True, help="folder for results, feedback and grades.csv")
    grade_parser.add_argument(
        "--assignment", choices=sorted(GRADED_NAMES), help="grade every notebook as this assignment"
    )
    grade_parser.add_argument("--jobs", type=int, default=1, help="submissions graded in parallel (default 1)")
    grade_parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="device for the hidden tests")
    args = parser.parse_args(argv)

    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        parser.error(f"no such file or folder: {', '.join(missing)}")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: this machine has no CUDA device")
    grade(args.paths, args.out, assignment=args.assignment, jobs=args.jobs, device=args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
