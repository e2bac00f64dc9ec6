"""The command line and its outputs, as an instructor sees them."""

import csv
import json

from .conftest import DEMO, grade_cli


def test_grades_csv_has_one_row_per_submission(graded_class):
    results, _, out = graded_class
    with open(out / "grades.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["student", "assignment", "score", "max_score", "status"]
    assert len(rows) == len(results)
    assert {(r["student"], r["assignment"]) for r in rows} == set(results)


def test_results_follow_gradescopes_schema(graded_class):
    results, _, out = graded_class
    for (student, assignment), result in results.items():
        assert {"score", "max_score", "execution_time", "tests"} <= set(result)
        assert result["score"] == sum(t["score"] for t in result["tests"])
        for test in result["tests"]:
            assert {"name", "score", "max_score", "status", "output", "visibility"} <= set(test)
            assert test["status"] in {"passed", "failed"}
        assert (out / student / assignment / "feedback.md").exists()


def test_demo_class_gets_the_expected_grades(graded_class):
    results, completed, _ = graded_class
    demo = {student: results[(student, "02_self_attention")] for student in [p.name for p in DEMO.iterdir()]}
    full = demo["ada"]["max_score"]
    assert demo["ada"]["score"] == full
    assert demo["ben"]["score"] == 0
    assert 0 < demo["cleo"]["score"] < full
    assert demo["dev"]["score"] == full, "a Colab copy without nbgrader metadata, with magics, grades like the original"
    assert demo["eve"]["extra_data"]["status"] == "error"
    assert "not valid JSON" in demo["eve"]["output"]
    assert "cleo" in completed.stdout and "eve" in completed.stdout


def test_usage_errors_exit_nonzero(tmp_path):
    assert grade_cli([tmp_path / "missing"], tmp_path / "out").returncode == 2
    assert grade_cli([DEMO], tmp_path / "out", "--jobs", "0").returncode == 2
    assert grade_cli([DEMO], tmp_path / "out", "--assignment", "99_nothing").returncode == 2


def test_unreadable_files_get_an_error_row_each(tmp_path):
    """Empty, non-JSON, non-notebook, nbformat 3 and non-UTF-8 files: one clear row each, no crash."""
    cases = {
        "empty": b"",
        "truncated": b'{"cells": [{"cell_type": "code", "source": "def f(',
        "not_a_notebook": b'{"hello": "world"}',
        "nbformat3": json.dumps({"nbformat": 3, "nbformat_minor": 0, "worksheets": [], "metadata": {}}).encode(),
        "latin1": "# caf\xe9".encode("latin-1"),
    }
    for name, data in cases.items():
        (tmp_path / f"{name}.ipynb").write_bytes(data)
    out = tmp_path / "out"
    completed = grade_cli([tmp_path], out, "--assignment", "02_self_attention")
    assert completed.returncode == 0, completed.stderr
    for name in cases:
        result = json.loads((out / name / "02_self_attention" / "results.json").read_text())
        assert result["score"] == 0
        assert result["extra_data"]["status"] == "error"
        assert result["output"].startswith("This submission could not be graded:")
        assert result["max_score"] > 0
