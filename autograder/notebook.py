"""Reading a submitted notebook: from a file of unknown quality to the code to grade.

Only definitions are kept: imports, ``def`` and ``class`` statements, and the
top-level assignments those definitions read (``EPS = 1e-9``). Training loops,
plots and the notebook's own checks are not run during grading. The same rule
works whether or not nbgrader's cell metadata survived (a notebook copied into a
fresh Colab file, or rewritten by VS Code), because it looks at the code itself.
"""

import ast
import json
import symtable
from dataclasses import dataclass, field

import nbformat
from IPython.core.inputtransformer2 import TransformerManager

MAX_NOTEBOOK_BYTES = 200 * 1024 * 1024
# cell magics whose body is ordinary Python
PYTHON_CELL_MAGICS = {"time", "capture", "timeit"}
DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


class SubmissionError(Exception):
    """The file can't be graded; the message says why, for the student."""


@dataclass
class ExtractedCode:
    chunks: list  # [(label, source)] in notebook order
    defined: list  # top-level names defined by def/class
    problems: list = field(default_factory=list)


def read_notebook(path):
    """Parse a submitted file into an nbformat 4 notebook, or explain why not."""
    data = path.read_bytes() if path.stat().st_size <= MAX_NOTEBOOK_BYTES else None
    if data is None:
        raise SubmissionError(
            f"the file is larger than {MAX_NOTEBOOK_BYTES // 2**20} MB; clear the outputs and resubmit"
        )
    if not data.strip():
        raise SubmissionError("the file is empty")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SubmissionError("the file is not UTF-8 text, so it is not a Jupyter notebook") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SubmissionError(f"the file is not valid JSON (truncated or not a notebook?): {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("nbformat"), int):
        raise SubmissionError("the file is JSON but not a Jupyter notebook (no nbformat version)")
    if raw["nbformat"] != 4:
        raise SubmissionError(
            f"the notebook uses the old format version {raw['nbformat']}; "
            "open it in Jupyter or Colab, save it, and resubmit"
        )
    if not isinstance(raw.get("cells"), list):
        raise SubmissionError("the notebook has no list of cells")
    try:
        # nbformat joins multi-line sources and fills in defaults; no strict validation,
        # since Colab and VS Code write metadata of their own
        return nbformat.reads(text, as_version=nbformat.NO_CONVERT)
    except Exception as exc:  # noqa: BLE001 - any malformed structure
        raise SubmissionError(f"the notebook's structure is damaged: {type(exc).__name__}: {exc}") from None


def extract_code(notebook, graded_names=None):
    """The definitions to grade, in notebook order (a later definition wins, as when
    the cells are run top to bottom).

    Every import, ``def`` and ``class`` is kept; a top-level assignment is kept only
    if ``graded_names`` (all definitions when None) need it, directly or through the
    functions and constants they use, so a helper's dependence on a training run
    does not re-run the training.
    """
    transformer = TransformerManager()
    problems = []
    parsed = []  # (label, statement, source)
    for index, cell in enumerate(notebook.cells, start=1):
        if cell.get("cell_type") != "code" or not isinstance(cell.get("source"), str):
            continue
        label = f"<cell {index}>"
        source = unwrap_cell_magic(cell.source)
        if source is None:
            continue
        try:
            source = transformer.transform_cell(source)
            tree = ast.parse(source, filename=label)
        except SyntaxError as exc:
            problems.append(f"{label} has a syntax error and was skipped: line {exc.lineno}: {exc.msg}")
            continue
        for statement in tree.body:
            parsed.append((label, statement, source))

    definitions = [s for _, s, _ in parsed if isinstance(s, DEFINITIONS)]
    needed = globals_needed(parsed, graded_names)
    chunks = [
        (label, statement_source(source, statement))
        for label, statement, source in parsed
        if keep_statement(statement, needed)
    ]
    defined = [d.name for d in definitions]
    return ExtractedCode(chunks=chunks, defined=defined, problems=problems)


def statement_source(cell_source, statement):
    """The statement's lines (decorators included), at their line numbers in the
    cell, so that a traceback points at the student's own line."""
    first = min([statement.lineno] + [d.lineno for d in getattr(statement, "decorator_list", [])])
    lines = cell_source.splitlines()[first - 1 : statement.end_lineno]
    return "\n" * (first - 1) + "\n".join(lines) + "\n"


def unwrap_cell_magic(source):
    """The Python inside a ``%%time``-style cell, ``None`` for non-Python cell magics."""
    if not source.lstrip().startswith("%%"):
        return source
    first, _, body = source.lstrip().partition("\n")
    magic = first[2:].split()[0] if first[2:].split() else ""
    return body if magic in PYTHON_CELL_MAGICS else None


def global_names(source, statement):
    """Module-level names a statement reads when it runs, or when the functions it
    defines run (``symtable`` tells a function's globals from its locals)."""
    names = set()
    tables = [symtable.symtable(statement_source(source, statement), "<statement>", "exec")]
    while tables:
        table = tables.pop()
        tables += table.get_children()
        for symbol in table.get_symbols():
            if symbol.is_referenced() and (table.get_type() == "module" or symbol.is_global()):
                names.add(symbol.get_name())
    return names


def globals_needed(parsed, roots=None):
    """Module-level names that the definitions named in ``roots`` (all when None)
    need, following the functions, classes and constants they use in turn
    (``MAX_LEN = 2 * BASE``)."""
    providers = {}  # name -> global names its definition or assignment reads
    for _, statement, source in parsed:
        if isinstance(statement, DEFINITIONS):
            names = {statement.name}
        elif is_constant(statement):
            names = assigned_names(statement)
        else:
            continue
        reads = global_names(source, statement)
        for name in names:
            providers[name] = providers.get(name, set()) | reads
    if roots is None:
        roots = [s.name for _, s, _ in parsed if isinstance(s, DEFINITIONS)]
    needed, frontier = set(), list(roots)
    while frontier:
        name = frontier.pop()
        if name in needed:
            continue
        needed.add(name)
        frontier += providers.get(name, ())
    return needed


def target_names(target):
    """The names a plain assignment target binds (``A`` or ``A, B``), or None for
    anything else (``x[0] = ...``, ``obj.attr = ...``)."""
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, (ast.Tuple, ast.List)):
        names = [target_names(t) for t in target.elts]
        return set().union(*names) if all(n is not None for n in names) else None
    return None


def assigned_names(statement):
    targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
    return set().union(*(target_names(t) or set() for t in targets))


def is_constant(statement):
    """``NAME = ...``, ``A, B = ...`` or ``NAME: type = ...`` at top level."""
    if isinstance(statement, ast.Assign):
        return all(target_names(t) is not None for t in statement.targets)
    if isinstance(statement, ast.AnnAssign):
        return isinstance(statement.target, ast.Name) and statement.value is not None
    return False


def keep_statement(statement, needed):
    if isinstance(statement, (ast.Import, ast.ImportFrom, *DEFINITIONS)):
        return True
    return is_constant(statement) and bool(assigned_names(statement) & needed)
