"""Scores in nbgrader's gradebook (``grade --gradebook DB_URL``), where formgrader shows them."""

import json

import nbformat
import pytest
from nbgrader.api import Gradebook
from traitlets.config.loader import PyFileConfigLoader

from autograder.grade import collect_tests, gradable_assignments
from autograder.gradebook import GRADE_CELL, record_results, scripts_on_path

from .conftest import ASSIGNMENTS, DEMO, ROOT, grade_cli, solution_path

ASSIGNMENT = "02_self_attention"


def open_gradebook(db_url):
    with scripts_on_path():  # nbgrader runs alembic when it creates a database
        return Gradebook(db_url)


def hidden_tests_cell(notebook):
    cells = [c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == GRADE_CELL]
    assert len(cells) == 1, f"one {GRADE_CELL} grade cell, not {len(cells)}"
    return cells[0]


def result_of(student, score, status="graded", assignment=ASSIGNMENT, max_score=31, bonus=0):
    """A result as ``grade()`` returns it, reduced to what the gradebook reads."""
    extra_data = {"student": student, "assignment": assignment, "status": status, "bonus": bonus}
    return {"score": score, "max_score": max_score, "extra_data": extra_data}


@pytest.mark.parametrize("assignment", [name for name in ASSIGNMENTS if name in gradable_assignments()])
def test_grade_cell_is_worth_the_hidden_tests_points(assignment):
    """Every solution whose assignment has hidden tests carries the grade cell that the gradebook scores."""
    notebook = nbformat.read(solution_path(assignment), as_version=4)
    cell = hidden_tests_cell(notebook)
    meta = cell.metadata.nbgrader
    assert cell.cell_type == "code"
    assert (meta.grade, meta.solution, meta.locked) == (True, False, True)
    assert meta.points == sum(test["max_score"] for test in collect_tests(assignment) if not test["bonus"])
    assert all(line.startswith("#") for line in cell.source.splitlines()), "a comment only: nothing to run"
    position = notebook.cells.index(cell)
    solutions = [i for i, c in enumerate(notebook.cells) if c.metadata.get("nbgrader", {}).get("solution")]
    assert position > max(solutions), "after the graded part"


def test_grading_records_scores_and_regrading_updates_them(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'gradebook.db'}"
    students = ["ada", "eve"]
    completed = grade_cli([DEMO / s for s in students], tmp_path / "out", "--gradebook", db_url)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "2 scores recorded" in completed.stdout
    assert "Warning" not in completed.stderr
    results = {s: json.loads((tmp_path / "out" / s / ASSIGNMENT / "results.json").read_text()) for s in students}
    full = results["ada"]["max_score"]

    with open_gradebook(db_url) as gb:
        course = PyFileConfigLoader("nbgrader_config.py", path=str(ROOT)).load_config().CourseDirectory.course_id
        assert gb.find_assignment(ASSIGNMENT).course_id == course, "recorded as nbgrader generate_assignment does"
        assert gb.find_grade_cell(GRADE_CELL, ASSIGNMENT, ASSIGNMENT).max_score == full
        assert gb.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, "ada").score == full
        assert gb.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, "eve").score == 0
        assert not gb.find_grade(GRADE_CELL, ASSIGNMENT, ASSIGNMENT, "ada").needs_manual_grade

    regraded = {**results["ada"], "score": full - 5}
    assert record_results([regraded], db_url) == []
    with open_gradebook(db_url) as gb:
        assert gb.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, "ada").score == full - 5
        assert sorted(s.id for s in gb.students) == students
        assert len(gb.find_assignment(ASSIGNMENT).submissions) == 2
        assert len(gb.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, "ada").grades) == 1


@pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")  # from nbgrader's add_submission
def test_gradebook_made_before_the_grade_cell_gets_it(tmp_path):
    """A gradebook whose assignment and submission predate the hidden_tests cell: both get it."""
    db_url = f"sqlite:///{tmp_path / 'gradebook.db'}"
    with open_gradebook(db_url) as gb:
        gb.add_assignment(ASSIGNMENT)
        gb.add_notebook(ASSIGNMENT, ASSIGNMENT)
        gb.add_student("old")
        gb.add_submission(ASSIGNMENT, "old")
    left_out = record_results([result_of("old", 7), result_of("lost", 0, "error", assignment=None)], db_url)
    assert [r["extra_data"]["student"] for r in left_out] == ["lost"]
    with open_gradebook(db_url) as gb:
        assert gb.find_grade_cell(GRADE_CELL, ASSIGNMENT, ASSIGNMENT).max_score == 31
        assert gb.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, "old").score == 7


def test_bonus_points_are_extra_credit(tmp_path):
    """Bonus points go to nbgrader's extra credit: the grade may pass the cell's maximum, the auto score may not."""
    db_url = f"sqlite:///{tmp_path / 'gradebook.db'}"
    record_results([result_of("dan", 34, bonus=3), result_of("eli", 31)], db_url)
    with open_gradebook(db_url) as gb:
        dan = gb.find_grade(GRADE_CELL, ASSIGNMENT, ASSIGNMENT, "dan")
        assert (dan.auto_score, dan.extra_credit, dan.score, dan.max_score) == (31, 3, 34, 31)
        eli = gb.find_grade(GRADE_CELL, ASSIGNMENT, ASSIGNMENT, "eli")
        assert (eli.auto_score, eli.extra_credit, eli.score) == (31, None, 31)


def test_score_typed_in_formgrader_wins_and_is_flagged_when_regraded(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'gradebook.db'}"
    with open_gradebook(db_url) as gb:
        gb.add_assignment(ASSIGNMENT)
        gb.add_notebook(ASSIGNMENT, ASSIGNMENT)
    record_results([result_of("cleo", 12)], db_url)
    with open_gradebook(db_url) as gb:
        gb.find_grade(GRADE_CELL, ASSIGNMENT, ASSIGNMENT, "cleo").manual_score = 20
        gb.db.commit()
    record_results([result_of("cleo", 0, "error")], db_url)
    with open_gradebook(db_url) as gb:
        grade = gb.find_grade(GRADE_CELL, ASSIGNMENT, ASSIGNMENT, "cleo")
        assert (grade.auto_score, grade.score, grade.needs_manual_grade) == (0, 20, True)


@pytest.mark.parametrize("db_url", ["not a url", "sqlite:////no/such/folder/gradebook.db"])
def test_unusable_gradebook_is_a_usage_error_before_grading(tmp_path, db_url):
    completed = grade_cli([DEMO / "ada"], tmp_path / "out", "--gradebook", db_url)
    assert completed.returncode == 2
    assert "--gradebook" in completed.stderr
    assert not (tmp_path / "out").exists(), "nothing graded"
