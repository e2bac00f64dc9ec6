"""Command line:

- ``python -m autograder grade PATH... --out DIR [--assignment NAME] [--jobs N] [--device cpu|cuda]
  [--force] [--gradebook DB_URL]``
- ``python -m autograder gradescope NAME -o DIR``
"""

import argparse
import sys
from pathlib import Path

from .grade import GRADED_NAMES, gradable_assignments, grade


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
    grade_parser.add_argument("--force", action="store_true", help="regrade submissions that already have results")
    grade_parser.add_argument(
        "--gradebook",
        metavar="DB_URL",
        help="also record the scores in this nbgrader gradebook, e.g. sqlite:///gradebook.db, for formgrader",
    )
    gradescope_parser = commands.add_parser("gradescope", help="build a Gradescope autograder bundle (autograder.zip)")
    gradescope_parser.add_argument("assignment", choices=gradable_assignments(), help="the assignment it grades")
    gradescope_parser.add_argument("-o", "--out", required=True, help="folder for autograder.zip and its scripts")
    args = parser.parse_args(argv)

    if args.command == "gradescope":
        from .gradescope import build_bundle

        print(build_bundle(args.assignment, args.out))
        return 0

    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        parser.error(f"no such file or folder: {', '.join(missing)}")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: this machine has no CUDA device")
    if args.gradebook:
        # nbgrader is needed only here (Gradescope's image doesn't have it)
        from .gradebook import GradebookError, absolute_db_url, record_results

        try:
            absolute_db_url(args.gradebook)
        except GradebookError as exc:
            grade_parser.error(f"--gradebook: {exc}")
    results = grade(
        args.paths, args.out, assignment=args.assignment, jobs=args.jobs, device=args.device, force=args.force
    )
    if args.gradebook:
        try:
            left_out = record_results(results, args.gradebook)
        except GradebookError as exc:
            grade_parser.exit(2, f"{grade_parser.prog}: error: --gradebook: {exc}\n")
        for result in left_out:
            print(f"not in the gradebook: {result['extra_data']['student']} (no assignment with hidden tests)")
        print(f"gradebook {args.gradebook}: {len(results) - len(left_out)} scores recorded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
