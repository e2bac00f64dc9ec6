"""The released notebooks are exactly what nbgrader makes from the solutions."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml  # PyYAML, which jupyter-book reads _config.yml with

from .conftest import ASSIGNMENTS, ROOT, release_path

NBGRADER = Path(sys.executable).with_name("nbgrader")


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    """A copy of the course's nbgrader root, with every assignment generated afresh."""
    root = tmp_path_factory.mktemp("nbgrader-root")
    shutil.copytree(ROOT / "solutions", root / "solutions")
    shutil.copy(ROOT / "nbgrader_config.py", root)
    # nbgrader calls alembic by name: the venv's bin must be on PATH
    env = {**os.environ, "PATH": f"{NBGRADER.parent}{os.pathsep}{os.environ['PATH']}"}
    for assignment in ASSIGNMENTS:
        subprocess.run(
            [str(NBGRADER), "generate_assignment", assignment, "--force"],
            cwd=root,
            env=env,
            check=True,
            capture_output=True,
        )
    return root


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_committed_assignment_is_fresh(regenerated, assignment):
    fresh = json.loads((regenerated / "assignments" / assignment / f"{assignment}.ipynb").read_text())
    committed = json.loads(release_path(assignment).read_text())
    assert committed == fresh, f"assignments/{assignment} is stale: run `make assignments` and commit"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_has_no_solution_left(assignment):
    text = release_path(assignment).read_text()
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
    assert "raise NotImplementedError()" in text


def repository_from_config():
    """(owner/name, branch) of the repository named once in _config.yml."""
    repository = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    assert repository["url"].startswith("https://github.com/"), repository["url"]
    return repository["url"].removeprefix("https://github.com/").strip("/"), repository["branch"]


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_opens_in_colab_from_its_own_path(assignment):
    """The first cell's badge opens this very notebook in Colab, from the repository _config.yml names."""
    repository, branch = repository_from_config()
    first = json.loads(release_path(assignment).read_text())["cells"][0]
    source = "".join(first["source"])
    link = f"https://colab.research.google.com/github/{repository}/blob/{branch}/assignments/{assignment}/{assignment}.ipynb"
    assert first["cell_type"] == "markdown"
    assert "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]" in source
    assert f"]({link})" in source, f"the badge should link to {link}"
