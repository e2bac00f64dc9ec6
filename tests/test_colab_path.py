"""The Colab path: every notebook a student opens in Colab runs there as it is.

A fresh Colab runtime has the standard library and a fixed set of preinstalled
packages, and none of this repository's files. So (a) every import in a solution
notebook or a book chapter is of such a module, and (b) each solution notebook,
copied alone into an empty folder outside the repository, runs top to bottom in a
fresh kernel. The book chapters are executed by the strict book build.
"""

import ast
import shutil
import sys

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from .conftest import ASSIGNMENTS, ROOT, solution_path

# Preinstalled on Colab, by import name. IPython is the kernel itself.
COLAB_PACKAGES = {"torch", "numpy", "matplotlib", "ipywidgets", "sklearn", "tqdm", "IPython"}
AVAILABLE_ON_COLAB = COLAB_PACKAGES | set(sys.stdlib_module_names)
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))
CELL_TIMEOUT_S = 600


def imports_of(notebook):
    """(cell index, line, module) for every import in the notebook's code cells, magics and shell lines removed."""
    transformer = TransformerManager()
    found = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        # magics become get_ipython() calls; shell lines too: what is left is plain Python
        tree = ast.parse(transformer.transform_cell(cell.source))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [(index, node.lineno, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                # a relative import names a file beside the notebook: level dots, then the module
                found.append((index, node.lineno, "." * node.level + (node.module or "")))
    return found


def imports_missing_on_colab(path):
    notebook = nbformat.read(path, as_version=4)
    return [
        f"{path.relative_to(ROOT)} cell {index} line {line}: import {module}"
        for index, line, module in imports_of(notebook)
        if module.startswith(".") or module.split(".")[0] not in AVAILABLE_ON_COLAB
    ]


def test_imports_of_modules_outside_colab_are_found():
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("%matplotlib inline\n!pip list\nimport torch, autograder.grade"),
            nbformat.v4.new_code_cell("from . import helpers\nfrom sklearn.datasets import load_digits"),
        ]
    )
    modules = [module for _, _, module in imports_of(notebook)]
    assert modules == ["torch", "autograder.grade", ".", "sklearn.datasets"]


@pytest.mark.parametrize(
    "path", [solution_path(a) for a in ASSIGNMENTS] + CHAPTERS, ids=lambda p: str(p.relative_to(ROOT))
)
def test_notebook_imports_only_what_colab_has(path):
    missing = imports_missing_on_colab(path)
    assert not missing, (
        "these imports are not available in a fresh Colab runtime (standard library, "
        f"{', '.join(sorted(COLAB_PACKAGES))}) or need a file from this repository:\n" + "\n".join(missing)
    )


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_solution_runs_alone_outside_the_repository(assignment, tmp_path):
    # tmp_path is under the system temp folder, never inside the repository
    assert ROOT not in tmp_path.parents
    copy = tmp_path / f"{assignment}.ipynb"
    shutil.copy(solution_path(assignment), copy)
    notebook = nbformat.read(copy, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
        shutdown_kernel="immediate",  # a graceful shutdown costs 2 s a notebook and checks nothing
    )
    try:
        client.execute()
    except CellExecutionError as error:
        pytest.fail(f"solutions/{assignment} fails when run alone in a fresh kernel outside the repository:\n{error}")
