"""Shared fixtures of the course's own tests.

The expensive part, grading, happens once per session: every solution, blank
assignment, mutant, correct variant and demo submission is laid out in nbgrader's
``submitted/<student>/<assignment>/`` form and graded by one run of the real
command line, ``python -m autograder grade ... --jobs 2``.
"""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "tests" / "demo" / "submitted"
ASSIGNMENTS = sorted(p.name for p in (ROOT / "solutions").iterdir() if (p / f"{p.name}.ipynb").exists())
# COURSE_ASSIGNMENTS=03_multihead_attention,04_transformer narrows a local run to those
# assignments (quicker while writing one); CI leaves it unset and tests every one.
if os.environ.get("COURSE_ASSIGNMENTS"):
    ASSIGNMENTS = [a for a in ASSIGNMENTS if a in os.environ["COURSE_ASSIGNMENTS"].split(",")]
# `make gpu-check` grades the catalogue on CUDA with more workers: COURSE_DEVICE=cuda COURSE_JOBS=8
DEVICE = os.environ.get("COURSE_DEVICE", "cpu")
JOBS = os.environ.get("COURSE_JOBS", "2")


def solution_path(assignment):
    return ROOT / "solutions" / assignment / f"{assignment}.ipynb"


def release_path(assignment):
    return ROOT / "assignments" / assignment / f"{assignment}.ipynb"


def mutants(assignment):
    """The assignment's mutant catalogue (tests/catalogue/mutants_<assignment>.py)."""
    return importlib.import_module(f"tests.catalogue.mutants_{assignment}").MUTANTS


def variants(assignment):
    """Differently written correct solutions (tests/variants/<assignment>/*.py)."""
    return sorted((ROOT / "tests" / "variants" / assignment).glob("*.py"))


def apply_mutant(notebook, mutant):
    """The notebook with the mutant's replacements in its solution cells; each must match exactly once."""
    notebook = nbformat.from_dict(json.loads(json.dumps(notebook)))
    code_cells = [c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("solution")]
    for old, new in mutant.replace:
        hits = [c for c in code_cells if old in c.source]
        count = sum(c.source.count(old) for c in hits)
        if count != 1:
            raise AssertionError(f"mutant {mutant.name}: {old!r} occurs {count} times in the solution, not once")
        hits[0].source = hits[0].source.replace(old, new)
    return notebook


def notebook_of(source):
    """A one-cell notebook holding ``source``, as if pasted into a fresh Colab notebook."""
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])


def class_submissions(assignment):
    """{student id: notebook} for everything the course tests grade for one assignment."""
    solution = nbformat.read(solution_path(assignment), as_version=4)
    submissions = {"solution": solution, "blank": nbformat.read(release_path(assignment), as_version=4)}
    for mutant in mutants(assignment):
        submissions[f"mutant-{mutant.name}"] = apply_mutant(solution, mutant)
    for path in variants(assignment):
        submissions[f"variant-{path.stem}"] = notebook_of(path.read_text())
    return submissions


def grade_cli(paths, out, *extra):
    return subprocess.run(
        [sys.executable, "-m", "autograder", "grade", *map(str, paths), "--out", str(out), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
    )


@pytest.fixture(scope="session")
def graded_class(tmp_path_factory):
    """Grade the whole catalogue once; returns (results by (student, assignment), the completed process, out dir)."""
    submitted = tmp_path_factory.mktemp("course") / "submitted"
    for assignment in ASSIGNMENTS:
        for student, notebook in class_submissions(assignment).items():
            path = submitted / student / assignment / f"{assignment}.ipynb"
            path.parent.mkdir(parents=True)
            nbformat.write(notebook, path)
    out = submitted.parent / "graded"
    demo = [DEMO] if "02_self_attention" in ASSIGNMENTS else []
    completed = grade_cli([submitted, *demo], out, "--jobs", JOBS, "--device", DEVICE)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = {}
    for path in out.glob("*/*/results.json"):
        results[(path.parent.parent.name, path.parent.name)] = json.loads(path.read_text())
    return results, completed, out
