"""What the grader takes from a notebook: definitions, and only the constants they need."""

import nbformat

from autograder.notebook import extract_code


def notebook(*sources):
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])


def kept(extracted):
    return "\n".join(source for _, source in extracted.chunks)


def test_graded_code_keeps_its_helpers_and_constants():
    extracted = extract_code(
        notebook(
            "import torch\nPAD, BOS = 0, 1\nSCALE: float = 2.0",
            "def helper(x):\n    return x * SCALE + PAD",
            "def graded(x):\n    return helper(x)",
        ),
        graded_names=["graded"],
    )
    code = kept(extracted)
    assert "import torch" in code and "PAD, BOS = 0, 1" in code and "SCALE: float = 2.0" in code
    assert extracted.defined == ["helper", "graded"]


def test_top_level_work_is_not_rerun():
    extracted = extract_code(
        notebook(
            "def graded(x):\n    return x",
            "def train():\n    raise SystemExit('training must not run')",
            "model = train()\nfor step in range(10**9):\n    pass",
            "def translate(s):\n    return model(s)",
            "graded(3)\nprint('checked')",
        ),
        graded_names=["graded"],
    )
    code = kept(extracted)
    assert "model = train()" not in code and "range(10**9)" not in code and "graded(3)" not in code
    assert "def translate" in code  # a definition is harmless: it runs only when called


def test_magics_cell_magics_and_broken_cells():
    extracted = extract_code(
        notebook(
            "!pip install torch\n%matplotlib inline\nimport math",
            "%%time\ndef timed():\n    return math.pi",
            "%%bash\necho not python",
            "def broken(:\n    pass",
        )
    )
    code = kept(extracted)
    assert "import math" in code and "def timed" in code and "echo" not in code
    assert len(extracted.problems) == 1 and "syntax error" in extracted.problems[0]


def test_a_later_definition_wins_and_keeps_its_line_numbers():
    extracted = extract_code(notebook("def f():\n    return 1", "x = 1\n\n@staticmethod\ndef f():\n    return 2"))
    label, source = extracted.chunks[-1]
    assert label == "<cell 2>"
    assert source.splitlines()[2] == "@staticmethod"  # decorators included, at their own line
