"""The Gradescope bundle, unzipped and run the way Gradescope does, in a stand-in /autograder."""

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

import nbformat
import pytest

from autograder.gradescope import GRADING_PACKAGES, TORCH_INDEX, build_bundle, pinned_requirements

from .conftest import DEMO, ROOT

ASSIGNMENT = "02_self_attention"
SCRIPTS = ["setup.sh", "run_autograder"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_bundle(ASSIGNMENT, tmp_path_factory.mktemp("bundle"))


def unzip_keeping_modes(zip_path, folder):
    """Extract like ``unzip``: Python's zipfile drops the Unix modes, so apply them."""
    with zipfile.ZipFile(zip_path) as bundle:
        for info in bundle.infolist():
            path = bundle.extract(info, folder)
            os.chmod(path, (info.external_attr >> 16) & 0o777)


@pytest.fixture
def autograder_root(bundle, tmp_path):
    """/autograder as Gradescope lays it out: source/ (the bundle), run_autograder, submission/, results/."""
    root = tmp_path / "autograder"
    unzip_keeping_modes(bundle, root / "source")
    shutil.copy2(root / "source" / "run_autograder", root / "run_autograder")
    (root / "submission").mkdir()
    (root / "results").mkdir()
    return root


def run_autograder(root):
    """Run the submission step; returns results/results.json."""
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "AUTOGRADER_PYTHON": sys.executable}
    completed = subprocess.run(
        [root / "run_autograder"], cwd=root, env=env, capture_output=True, text=True, timeout=1800
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads((root / "results" / "results.json").read_text())


def demo_notebook(student):
    return DEMO / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"


def test_bundle_has_executable_valid_scripts_at_its_root(bundle, tmp_path):
    with zipfile.ZipFile(bundle) as archive:
        infos = {info.filename: info for info in archive.infolist()}
    for script in SCRIPTS:
        assert script in infos, f"{script} must be at the zip's root"
        assert (infos[script].external_attr >> 16) & 0o111 == 0o111, f"{script} must be executable"
    assert "requirements.txt" in infos
    unzip_keeping_modes(bundle, tmp_path)
    for script in SCRIPTS:
        checked = subprocess.run(["bash", "-n", tmp_path / script], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
        assert not re.search(r"__[A-Z_]+__", (tmp_path / script).read_text()), "a template key was left"


def test_bundle_holds_the_whole_grader_package(bundle):
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
    package = ROOT / "autograder"
    expected = {
        f"autograder/{p.relative_to(package).as_posix()}" for p in package.rglob("*.py") if "__pycache__" not in p.parts
    }
    assert expected <= names
    assert f"autograder/hidden_tests/test_{ASSIGNMENT}.py" in names
    assert not any("__pycache__" in name for name in names)


def test_bundle_installs_cpu_torch_and_only_what_grading_needs(bundle):
    pins = pinned_requirements(ROOT / "requirements.txt")
    setup = (bundle.parent / "setup.sh").read_text()
    assert f"pip install {pins['torch']} --index-url {TORCH_INDEX}" in setup
    with zipfile.ZipFile(bundle) as archive:
        requirements = archive.read("requirements.txt").decode()
    lines = [line for line in requirements.splitlines() if line and not line.startswith("#")]
    assert sorted(lines) == sorted(pins[name] for name in GRADING_PACKAGES), "the repository's exact pins"
    for tool in ["torch", "jupyter-book", "nbval", "ruff", "pytest-xdist", "nbgrader"]:
        assert not any(line.startswith(f"{tool}==") for line in lines), f"{tool} is not installed from requirements"


def test_bundle_is_reproducible(bundle, tmp_path):
    assert build_bundle(ASSIGNMENT, tmp_path).read_bytes() == bundle.read_bytes()


def test_full_marks_notebook_gets_full_marks_among_other_files(autograder_root):
    """A renamed Colab download is found, and preferred to another notebook by its name."""
    submission = autograder_root / "submission"
    shutil.copy(demo_notebook("ada"), submission / f"Copy of {ASSIGNMENT}.ipynb")
    nbformat.write(nbformat.v4.new_notebook(), submission / "scratch.ipynb")
    result = run_autograder(autograder_root)
    assert result["max_score"] > 0
    assert result["score"] == result["max_score"]
    assert result["extra_data"]["status"] == "graded"
    assert f"You submitted 2 notebooks; this is the grade of Copy of {ASSIGNMENT}.ipynb." in result["output"]


def test_broken_notebook_gets_zero_with_the_reason(autograder_root):
    shutil.copy(demo_notebook("eve"), autograder_root / "submission")
    result = run_autograder(autograder_root)
    assert result["score"] == 0
    assert result["max_score"] > 0
    assert "not valid JSON" in result["output"]


def test_submission_without_a_notebook_gets_zero_with_a_message(autograder_root):
    (autograder_root / "submission" / "answers.py").write_text("print('hello')\n")
    result = run_autograder(autograder_root)
    assert result["score"] == 0
    assert result["tests"] == []
    assert "No notebook (.ipynb file) was found" in result["output"]
