"""``python -m autograder grade ... --gradebook DB_URL``: scores into nbgrader's gradebook.

nbgrader keeps grades per *grade cell*. Each source notebook has one autograded
grade cell, ``hidden_tests``, whose points are the hidden tests' total; this module
stores a submission's score as that cell's ``auto_score``, so that ``formgrader``
and ``nbgrader export`` show it like any autograded score. The steps:

1. ``ensure_assignments``: an assignment the gradebook lacks is recorded exactly as
   ``nbgrader generate_assignment`` records it (run on a scratch copy of the
   course, so the committed release is not touched); one recorded before the
   ``hidden_tests`` cell existed gets that cell;
2. ``record_results``: the student, the submission and the grade are created or
   updated (re-grading overwrites the score, it never adds a row).

A score typed in formgrader (``manual_score``) still wins over the autograder's,
as in nbgrader itself; such a grade is flagged for review when re-graded.
"""

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

from nbgrader.api import Grade, Gradebook, InvalidEntry, MissingEntry, SubmittedNotebook
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SAWarning, SQLAlchemyError

from .grade import PACKAGE_DIR

COURSE_ROOT = PACKAGE_DIR.parent
GRADE_CELL = "hidden_tests"


class GradebookError(Exception):
    """The gradebook can't take these scores (a bad URL, an unknown assignment)."""


def absolute_db_url(db_url):
    """``db_url`` with a relative SQLite path made absolute, so it names one file whatever the working folder."""
    try:
        url = make_url(db_url)
    except ArgumentError as exc:
        raise GradebookError(f"not a database URL: {db_url!r} (e.g. sqlite:///gradebook.db)") from exc
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        url = url.set(database=os.path.abspath(url.database))
        if not Path(url.database).parent.is_dir():
            raise GradebookError(f"no folder {Path(url.database).parent} for the gradebook")
    return url.render_as_string(hide_password=False)


@contextlib.contextmanager
def scripts_on_path():
    """nbgrader runs ``alembic`` by name when it creates a gradebook: put the scripts beside this Python on PATH."""
    saved = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{saved}"
    try:
        yield
    finally:
        os.environ["PATH"] = saved


def register_assignment(db_url, assignment):
    """Record the assignment's notebook and cells in the gradebook with ``nbgrader generate_assignment``."""
    source = COURSE_ROOT / "solutions" / assignment
    if not (source / f"{assignment}.ipynb").exists():
        raise GradebookError(
            f"the gradebook has no assignment {assignment}, and {source} has no notebook to record it from"
        )
    with tempfile.TemporaryDirectory(prefix="nbgrader-root-") as root:
        shutil.copytree(source, Path(root) / "solutions" / assignment)
        shutil.copy(COURSE_ROOT / "nbgrader_config.py", root)
        completed = subprocess.run(
            [sys.executable, "-m", "nbgrader", "generate_assignment", assignment, "--force", f"--db={db_url}"],
            cwd=root,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
    if completed.returncode != 0:
        raise GradebookError(f"nbgrader generate_assignment {assignment} failed:\n{completed.stderr[-3000:]}")


def has_assignment(db_url, assignment):
    """Whether the gradebook knows the assignment."""
    with Gradebook(db_url) as gb:
        try:
            gb.find_assignment(assignment)
        except MissingEntry:
            return False
    return True


def ensure_assignments(db_url, max_scores):
    """Each assignment of ``max_scores`` ({name: points}), with its notebook (named like the assignment)
    and its ``hidden_tests`` grade cell worth those points."""
    for name in max_scores:
        if not has_assignment(db_url, name):
            register_assignment(db_url, name)
    with Gradebook(db_url) as gb:
        for name, points in max_scores.items():
            gb.update_or_create_notebook(name, name)
            gb.update_or_create_grade_cell(GRADE_CELL, name, name, max_score=points, cell_type="code")


def grade_of(gb, grade_cell, assignment, student):
    """The student's grade for the ``hidden_tests`` cell; made here when the submission predates the cell."""
    try:
        return gb.find_grade(GRADE_CELL, assignment, assignment, student)
    except MissingEntry:
        pass
    try:
        notebook = gb.find_submission_notebook(assignment, assignment, student)
    except MissingEntry:
        notebook = SubmittedNotebook(notebook=grade_cell.notebook, assignment=gb.find_submission(assignment, student))
    grade = Grade(cell=grade_cell, notebook=notebook)
    gb.db.add(grade)
    gb.db.commit()
    return grade


def record_result(gb, result):
    """Store one result's score as the auto score of its ``hidden_tests`` grade, its bonus points as extra credit."""
    extra = result["extra_data"]
    assignment, student = extra["assignment"], extra["student"]
    gb.update_or_create_student(student)
    gb.update_or_create_submission(assignment, student)
    grade = grade_of(gb, gb.find_grade_cell(GRADE_CELL, assignment, assignment), assignment, student)
    score, bonus = (0.0, 0.0) if extra["status"] == "error" else (float(result["score"]), float(extra.get("bonus", 0)))
    # nbgrader keeps extra credit apart from the auto score and adds it to the grade's score
    grade.auto_score = score - bonus
    grade.extra_credit = bonus or None
    grade.needs_manual_grade = grade.manual_score is not None
    gb.db.commit()


def recordable(result):
    """Whether the gradebook can hold this result: it belongs to an assignment with hidden tests."""
    return result["extra_data"]["assignment"] is not None and result["max_score"] > 0


def record_results(results, db_url):
    """Write every recordable result's score into the gradebook at ``db_url``; returns the others."""
    db_url = absolute_db_url(db_url)
    kept = [result for result in results if recordable(result)]
    try:
        with scripts_on_path(), warnings.catch_warnings():
            # nbgrader's add_submission builds rows in a way SQLAlchemy warns about; the rows are right
            warnings.filterwarnings("ignore", category=SAWarning, module="nbgrader")
            ensure_assignments(db_url, {r["extra_data"]["assignment"]: float(r["max_score"]) for r in kept})
            with Gradebook(db_url) as gb:
                for result in kept:
                    record_result(gb, result)
    except (SQLAlchemyError, InvalidEntry) as exc:
        raise GradebookError(f"{db_url}: {exc}") from exc
    return [result for result in results if not recordable(result)]
