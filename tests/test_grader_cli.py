"""The command line and its outputs, as an instructor sees them."""

import csv
import json

import nbformat

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


def test_a_notebook_with_50_mb_of_outputs_is_graded_normally(tmp_path):
    """Outputs are never looked at: a huge notebook grades like its code."""
    notebook = nbformat.read(DEMO / "ada" / "02_self_attention" / "02_self_attention.ipynb", as_version=4)
    code_cell = next(c for c in notebook.cells if c.cell_type == "code")
    code_cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="x" * (50 * 2**20))]
    nbformat.write(notebook, tmp_path / "large.ipynb")
    assert (tmp_path / "large.ipynb").stat().st_size > 50 * 2**20
    completed = grade_cli([tmp_path / "large.ipynb"], tmp_path / "out")
    assert completed.returncode == 0, completed.stderr
    result = json.loads((tmp_path / "out" / "large" / "02_self_attention" / "results.json").read_text())
    assert result["score"] == result["max_score"] > 0


def test_grading_is_deterministic_and_a_rerun_skips_what_is_graded(tmp_path):
    cleo = DEMO / "cleo" / "02_self_attention" / "02_self_attention.ipynb"
    runs = []
    for extra in (["--force"], ["--force"], []):
        completed = grade_cli([cleo], tmp_path / "out", "--assignment", "02_self_attention", *extra)
        assert completed.returncode == 0, completed.stderr
        path = tmp_path / "out" / "cleo" / "02_self_attention" / "results.json"
        runs.append((json.loads(path.read_text()), path.stat().st_mtime_ns))
    (first, _), (second, second_mtime), (third, third_mtime) = runs
    assert first["tests"] == second["tests"] and 0 < first["score"] < first["max_score"]
    assert third == second and third_mtime == second_mtime, "without --force a graded submission is not regraded"
