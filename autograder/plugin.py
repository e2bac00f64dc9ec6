"""The pytest plugin that turns hidden tests into a grade for one submission.

Loaded with ``pytest -p autograder.plugin``, in a trusted process of its own:

- ``--batch FILE`` names a JSON list of submissions, each ``{"id", "code", "results"}``:
  the file of its extracted code (see ``grade.py``) and where its results go. Every
  hidden test runs once per submission (the ``submission`` fixture is parametrized
  over the batch, session-scoped, so pytest runs one submission's tests together);
  the ``student`` fixture talks to that submission's code in a child process of its
  own (``remote.py``), and the next submission's child starts while this one is tested.
- every hidden test carries ``@pytest.mark.points(n, hint=...)``; ``bonus=True`` makes its
  points extra credit, beyond the assignment's maximum (see ``grade.make_result``);
- each submission's results file receives, when its last test is done, one record
  per test: its points, and on failure a message for the student built only from
  the test's docstring, its hint, an explicit ``Feedback`` message and the student's
  own exception. Assertion introspection and tracebacks of the hidden tests are
  never shown.
"""

import json
import os
import time
from pathlib import Path

import pytest
import torch

from . import sandbox
from .feedback import Feedback
from .remote import StudentCrash, StudentError, Submission


def pytest_addoption(parser):
    group = parser.getgroup("autograder")
    group.addoption("--batch", help="JSON file listing the submissions to grade and where their results go")
    group.addoption("--device", default="cpu", help="device the hidden tests run on (cpu or cuda)")
    group.addoption("--collect-json", help="write the collected tests and their points here")
    group.addoption("--request-timeout", type=float, default=20.0, help="seconds one call into student code may take")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "points(n, hint='', bonus=False): points the test is worth (extra credit if bonus), "
        "and the likely mistake when it fails",
    )
    config._autograder_results = {}  # submission id -> records of its tests
    config._autograder_batch = []
    config._autograder_children = {}  # submission id -> Submission (started, not yet shut down)
    path = config.getoption("--batch")
    if path:
        config._autograder_batch = json.loads(Path(path).read_text())
        # start the first child now: it imports torch while pytest collects the tests
        start_child(config, 0)


def start_child(config, index):
    """Start the child of the batch's ``index``-th submission, if there is one and it isn't running."""
    if index >= len(config._autograder_batch):
        return
    entry = config._autograder_batch[index]
    if entry["id"] not in config._autograder_children:
        chunks = [tuple(c) for c in json.loads(Path(entry["code"]).read_text())["chunks"]]
        child = Submission(
            chunks, timeout=config.getoption("--request-timeout"), gpu=config.getoption("--device") == "cuda"
        )
        child.start()
        config._autograder_children[entry["id"]] = child


def pytest_unconfigure(config):
    for child in config._autograder_children.values():
        child.shutdown()


def pytest_generate_tests(metafunc):
    batch = metafunc.config._autograder_batch
    if not batch:
        return
    if "submission" not in metafunc.fixturenames:
        raise pytest.UsageError(f"hidden test {metafunc.function.__name__} does not use the student's code")
    ids = [f"submission{index}" for index in range(len(batch))]
    metafunc.parametrize("submission", range(len(batch)), ids=ids, indirect=True, scope="session")


def test_name(item):
    """The test's name as collected without a batch: the submission's part of its id left out."""
    if not hasattr(item, "callspec"):
        return item.name
    own = [part for part in item.callspec.id.split("-") if part != f"submission{item.callspec.params['submission']}"]
    return item.originalname + (f"[{'-'.join(own)}]" if own else "")


def batch_entry(item):
    if not hasattr(item, "callspec") or "submission" not in item.callspec.params:
        return None
    return item.config._autograder_batch[item.callspec.params["submission"]]


@pytest.fixture(scope="session")
def submission(request):
    """The submission whose tests run now; its results are written when they are all done."""
    config = request.config
    if not hasattr(request, "param"):
        pytest.exit("--batch is required", returncode=4)
    entry = config._autograder_batch[request.param]
    started = time.monotonic()
    start_child(config, request.param)
    start_child(config, request.param + 1)  # the next child imports torch while this one is tested
    child = config._autograder_children[entry["id"]]
    yield child
    child.shutdown()
    del config._autograder_children[entry["id"]]
    write_results(entry, config._autograder_results.pop(entry["id"], []), child, time.monotonic() - started)


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
        catalogue = [{"name": item.name, "description": describe(item), **points_of(item)} for item in items]
        Path(path).write_text(json.dumps(catalogue, indent=1))


def points_of(item):
    """{"max_score", "bonus"} of a test, from its ``points`` marker."""
    marker = item.get_closest_marker("points")
    return {"max_score": marker.args[0], "bonus": bool(marker.kwargs.get("bonus", False))}


def describe(item):
    """The first line of a test's docstring: the property it checks, for students."""
    lines = (item.function.__doc__ or "").strip().splitlines()
    return lines[0] if lines else ""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" or (report.when == "setup" and not report.passed):
        entry = batch_entry(item)
        submission_id = entry["id"] if entry else ""
        item.config._autograder_results.setdefault(submission_id, []).append(result_record(item, report, call))
    return report


def submission_of(item):
    """The child that ran ``item``'s student code, if it is still there."""
    entry = batch_entry(item)
    return item.config._autograder_children.get(entry["id"]) if entry else None


def result_record(item, report, call):
    marker = item.get_closest_marker("points")
    points = points_of(item)
    record = {
        "name": test_name(item),
        "description": describe(item),
        **points,
        "score": points["max_score"] if report.passed else 0,
        "status": "passed" if report.passed else "failed",
        "output": "",
    }
    if not report.passed:
        record["output"] = failure_message(call.excinfo, marker.kwargs.get("hint", ""), submission_of(item))
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


def write_results(entry, records, child, seconds):
    results = {
        "tests": records,
        "load_problems": child.load_problems,
        "isolation": sandbox.isolation_in_force(),
        "seconds": seconds,
    }
    tmp = f"{entry['results']}.tmp"
    Path(tmp).write_text(json.dumps(results, indent=1))
    os.replace(tmp, entry["results"])
