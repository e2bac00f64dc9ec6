"""A class of 200 graded in one run with --jobs 2: `make test-scale` (not part of `make test`).

The mix: correct notebooks (solutions, correct variants, Colab-style copies), buggy
ones (the mutant catalogue) and broken files, over every assignment with a
solution. Prints the wall time, seconds per submission and the peak memory of the
grader and of its busiest descendant.
"""

import json
import resource
import subprocess
import sys
import time

import nbformat

from ..conftest import ASSIGNMENTS, ROOT, class_submissions

CLASS_SIZE = 200
BROKEN = [b"", b'{"cells": [', b'{"nbformat": 3, "worksheets": []}', "caf\xe9".encode("latin-1")]


def build_class(folder):
    """{student: expected} with expected in {"full", "partial", "error"}, written in nbgrader's layout."""
    pool = []
    for assignment in ASSIGNMENTS:
        for student, notebook in class_submissions(assignment).items():
            if student != "blank":
                pool.append((assignment, "partial" if student.startswith("mutant-") else "full", notebook))
    expected = {}
    for i in range(CLASS_SIZE):
        student = f"s{i:03d}"
        if i % 7 == 6:
            assignment, kind = ASSIGNMENTS[i % len(ASSIGNMENTS)], "error"
        else:
            assignment, kind, notebook = pool[i % len(pool)]
        path = folder / student / assignment / f"{assignment}.ipynb"
        path.parent.mkdir(parents=True)
        if kind == "error":
            path.write_bytes(BROKEN[i % len(BROKEN)])
        else:
            nbformat.write(notebook, path)
        expected[(student, assignment)] = kind
    return expected


def test_a_class_of_200_grades_in_one_run(tmp_path):
    expected = build_class(tmp_path / "submitted")
    out = tmp_path / "graded"
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "autograder", "grade", str(tmp_path / "submitted"), "--out", str(out), "--jobs", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=7200,
        check=False,
    )
    seconds = time.monotonic() - started
    assert completed.returncode == 0, completed.stderr[-3000:]
    for (student, assignment), kind in expected.items():
        result = json.loads((out / student / assignment / "results.json").read_text())
        status = result["extra_data"]["status"]
        if kind == "error":
            assert status == "error" and result["score"] == 0, (student, result["output"])
        elif kind == "full":
            assert result["score"] == result["max_score"] > 0, student
        else:
            assert status == "graded" and result["score"] < result["max_score"], student
    assert len((out / "grades.csv").read_text().splitlines()) == CLASS_SIZE + 1
    peak_descendant_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"\n{CLASS_SIZE} submissions, --jobs 2: {seconds:.0f} s wall, {seconds / CLASS_SIZE:.2f} s per submission; "
        f"peak RSS of the grader or one of its processes: {peak_descendant_mib:.0f} MiB"
    )
