"""The pytest plugin that turns hidden tests into a grade for one submission.

Loaded with ``pytest -p autograder.plugin``, in a trusted process of its own:

- ``--submission FILE`` names the JSON file of extracted code (see ``grade.py``);
  the ``student`` fixture starts that code in a child process (``remote.py``).
- every hidden test carries ``@pytest.mark.points(n, hint=...)``;
- ``--results-json FILE`` receives one record per test: its points, and on failure
  a message for the student built only from the test's docstring, its hint, an
  explicit ``Feedback`` message and the student's own exception. Assertion
  introspection and tracebacks of the hidden tests are never shown.
"""

import json
import os
from pathlib import Path

import pytest
import torch

from . import sandbox
from .feedback import Feedback
from .remote import StudentCrash, StudentError, Submission


def pytest_addoption(parser):
    group = parser.getgroup("autograder")
    group.addoption("--submission", help="JSON file with the submission's extracted code")
    group.addoption("--results-json", help="where to write the per-test results")
    group.addoption("--device", default="cpu", help="device the hidden tests run on (cpu or cuda)")
    group.addoption("--collect-json", help="write the collected tests and their points here")
    group.addoption("--request-timeout", type=float, default=20.0, help="seconds one call into student code may take")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "points(n, hint=''): points the test is worth, and the likely mistake when it fails"
    )
    config._autograder_results = []
    config._autograder_submission = None
    path = config.getoption("--submission")
    if path:
        chunks = [tuple(c) for c in json.loads(Path(path).read_text())["chunks"]]
        config._autograder_submission = Submission(
            chunks, timeout=config.getoption("--request-timeout"), gpu=config.getoption("--device") == "cuda"
        )
        # start now: the child imports torch while pytest collects the tests
        config._autograder_submission.start()


def pytest_unconfigure(config):
    if config._autograder_submission is not None:
        config._autograder_submission.shutdown()


@pytest.fixture(scope="session")
def submission(request):
    if request.config._autograder_submission is None:
        pytest.exit("--submission is required", returncode=4)
    return request.config._autograder_submission


class StudentNames:
    """``student.SelfAttention`` is the student's ``SelfAttention``, as a proxy."""

    def __init__(self, submission):
        self._submission = submission

    def __getattr__(self, name):
        return self._submission.request({"op": "global", "name": name})


@pytest.fixture
def student(submission):
    """The student's top-level names, as proxies into the student's process."""
    torch.manual_seed(0)
    return StudentNames(submission)


@pytest.fixture
def probe(submission):
    """``probe(name, fn, *args)`` runs a measuring instrument on a student callable."""
    return submission.probe


@pytest.fixture(scope="session")
def device(request):
    name = request.config.getoption("--device")
    if name == "cuda" and not torch.cuda.is_available():
        pytest.exit("--device cuda asked for, but this machine has no CUDA device", returncode=4)
    return torch.device(name)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("points") is None:
            raise pytest.UsageError(f"hidden test {item.nodeid} has no @pytest.mark.points")
    path = config.getoption("--collect-json")
    if path:
        catalogue = [
            {"name": item.name, "description": describe(item), "max_score": item.get_closest_marker("points").args[0]}
            for item in items
        ]
        Path(path).write_text(json.dumps(catalogue, indent=1))


def describe(item):
    """The first line of a test's docstring: the property it checks, for students."""
    lines = (item.function.__doc__ or "").strip().splitlines()
    return lines[0] if lines else ""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" or (report.when == "setup" and not report.passed):
        item.config._autograder_results.append(result_record(item, report, call))
    return report


def result_record(item, report, call):
    marker = item.get_closest_marker("points")
    points = marker.args[0]
    record = {
        "name": item.name,
        "description": describe(item),
        "max_score": points,
        "score": points if report.passed else 0,
        "status": "passed" if report.passed else "failed",
        "output": "",
    }
    if not report.passed:
        submission = item.config._autograder_submission
        record["output"] = failure_message(call.excinfo, marker.kwargs.get("hint", ""), submission)
    return record


def failure_message(excinfo, hint, submission):
    exc = excinfo.value if excinfo is not None else None
    if isinstance(exc, Feedback):
        detail = str(exc)
    elif isinstance(exc, StudentError):
        detail = f"Your code raised {exc.type_name}: {exc.message}"
        if exc.type_name == "NotImplementedError":
            detail = "Not implemented yet (your code raised NotImplementedError)."
        elif exc.student_traceback:
            detail += "\n" + exc.student_traceback.rstrip()
    elif isinstance(exc, StudentCrash):
        detail = f"Your code's process failed: {exc}"
        if submission is not None and submission.output_tail().strip():
            detail += "\nThe last thing it printed:\n" + submission.output_tail(800)
    else:
        # a check that failed without a message written for students: say which, never how
        detail = "The check failed."
    parts = [detail]
    not_implemented = isinstance(exc, StudentError) and exc.type_name == "NotImplementedError"
    diagnosed = isinstance(exc, Feedback) and exc.diagnosed
    if hint and not isinstance(exc, StudentCrash) and not not_implemented and not diagnosed:
        parts.append(f"Likely mistake: {hint}")
    return "\n".join(parts)


def pytest_sessionfinish(session):
    path = session.config.getoption("--results-json")
    if not path:
        return
    submission = session.config._autograder_submission
    results = {
        "tests": session.config._autograder_results,
        "load_problems": submission.load_problems if submission is not None else [],
        "isolation": sandbox.isolation_in_force(),
    }
    tmp = f"{path}.tmp"
    Path(tmp).write_text(json.dumps(results, indent=1))
    os.replace(tmp, path)
