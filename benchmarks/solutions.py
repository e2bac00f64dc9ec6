"""The instructor's solutions as importable namespaces, for benchmarks and the GPU check.

The code is taken from ``solutions/<name>/<name>.ipynb`` exactly as the grader takes
it from a student's notebook (definitions only: no training loop or plot runs).
"""

import functools
from pathlib import Path

from autograder.grade import GRADED_NAMES
from autograder.notebook import extract_code, read_notebook

ROOT = Path(__file__).resolve().parent.parent


def solution_notebook(assignment):
    return ROOT / "solutions" / assignment / f"{assignment}.ipynb"


@functools.cache
def load(assignment):
    """The solution's top-level names, as a dict."""
    extracted = extract_code(read_notebook(solution_notebook(assignment)), GRADED_NAMES[assignment])
    namespace = {"__name__": f"solution_{assignment}"}
    for label, source in extracted.chunks:
        exec(compile(source, label, "exec"), namespace)  # noqa: S102 - the course's own solution code
    return namespace
