"""The hidden tests are honest: solutions pass, blanks and mutants lose points.

Everything here reads the results of one grading run (see ``graded_class``).
"""

import pytest

from autograder.grade import GRADED_NAMES, full_marks

from .conftest import ASSIGNMENTS, mutants, variants

MUTANT_CASES = [(a, m) for a in ASSIGNMENTS for m in mutants(a)]
VARIANT_CASES = [(a, v.stem) for a in ASSIGNMENTS for v in variants(a)]


def result_of(graded_class, student, assignment):
    results, completed, _ = graded_class
    assert (student, assignment) in results, f"no result for {student}/{assignment}:\n{completed.stderr[-2000:]}"
    return results[(student, assignment)]


def failed_tests(result):
    return {t["name"] for t in result["tests"] if t["status"] == "failed"}


def test_every_assignment_with_a_solution_is_graded():
    assert ASSIGNMENTS, "no solution notebooks found"
    assert set(ASSIGNMENTS) <= set(GRADED_NAMES)


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_solution_scores_full_marks(graded_class, assignment):
    result = result_of(graded_class, "solution", assignment)
    assert result["max_score"] > 0
    assert result["score"] == full_marks(result), {
        t["name"]: t["output"] for t in result["tests"] if t["status"] == "failed"
    }


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_blank_assignment_scores_zero_and_says_why(graded_class, assignment):
    result = result_of(graded_class, "blank", assignment)
    assert result["score"] == 0
    assert result["extra_data"]["status"] == "graded"
    for test in result["tests"]:
        assert "Not implemented yet" in test["output"], test


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_catalogue_is_large_enough(assignment):
    assert len(mutants(assignment)) >= 10
    assert len(variants(assignment)) >= 2


@pytest.mark.parametrize(("assignment", "mutant"), MUTANT_CASES, ids=[f"{a}-{m.name}" for a, m in MUTANT_CASES])
def test_mutant_is_caught(graded_class, assignment, mutant):
    result = result_of(graded_class, f"mutant-{mutant.name}", assignment)
    assert result["score"] < full_marks(result), f"{mutant.bug}: full marks"
    missed = set(mutant.caught_by) - failed_tests(result)
    assert not missed, f"{mutant.bug}: expected {sorted(missed)} to fail; failed: {sorted(failed_tests(result))}"


@pytest.mark.parametrize(("assignment", "variant"), VARIANT_CASES, ids=[f"{a}-{v}" for a, v in VARIANT_CASES])
def test_correct_variant_scores_full_marks(graded_class, assignment, variant):
    result = result_of(graded_class, f"variant-{variant}", assignment)
    assert result["score"] == full_marks(result), {
        t["name"]: t["output"] for t in result["tests"] if t["status"] == "failed"
    }


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_hidden_test_catches_some_mutant(graded_class, assignment):
    """A test that no plausible bug fails is a test that cannot fail."""
    caught = set()
    for mutant in mutants(assignment):
        caught |= failed_tests(result_of(graded_class, f"mutant-{mutant.name}", assignment))
    all_tests = {t["name"] for t in result_of(graded_class, "solution", assignment)["tests"]}
    assert all_tests - caught == set()


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_feedback_never_shows_hidden_test_source(graded_class, assignment):
    """Failure messages are written for students: no test code, tracebacks of the tests, or expected tensors."""
    results, _, _ = graded_class
    for (student, graded_assignment), result in results.items():
        if graded_assignment != assignment:
            continue
        for test in result["tests"]:
            assert "hidden_tests" not in test["output"]
            assert "def test_" not in test["output"]
            assert "tensor(" not in test["output"], (student, test)
