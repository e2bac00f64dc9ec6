"""``python -m autograder gradescope NAME -o DIR``: a Gradescope autograder bundle.

Gradescope unzips ``autograder.zip`` into ``/autograder/source`` and runs its
``setup.sh`` there once, as root, to build the grading image; then, for each
submission, it runs ``/autograder/run_autograder``, which must leave
``/autograder/results/results.json`` (the format ``python -m autograder grade``
already writes). The bundle holds, at the zip's root:

- ``setup.sh``: a Python >= 3.11 virtual environment with the pinned packages
  that grading needs (torch from PyTorch's CPU index);
- ``run_autograder``: finds the submitted notebook and grades it as the assignment;
- ``requirements.txt``: those pins, taken from the repository's ``requirements.txt``;
- ``autograder/``: this package's Python files, hidden tests included.

The two scripts are templates in ``gradescope_files/``. Entries are sorted and
dated 1980-01-01, so the same sources always give the same zip.
"""

import zipfile
from pathlib import Path

from .grade import PACKAGE_DIR

TEMPLATES = PACKAGE_DIR / "gradescope_files"
REQUIREMENTS = PACKAGE_DIR.parent / "requirements.txt"
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
# what grading imports, and what a student's notebook may import at the top
# level (COURSE_SPEC.md: Colab preinstalls torch, numpy, matplotlib, ipywidgets);
# torch itself is installed apart, from the CPU index
GRADING_PACKAGES = ["ipython", "ipywidgets", "matplotlib", "nbformat", "numpy", "pytest", "tqdm"]
EXECUTABLE = 0o100755 << 16  # a regular file, rwxr-xr-x, in zip's external attributes
READABLE = 0o100644 << 16


def pinned_requirements(path=REQUIREMENTS):
    """{lower-case package name: its ``name==version`` line} of a requirements file."""
    pins = {}
    for line in path.read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if "==" in requirement:
            pins[requirement.split("==", 1)[0].strip().lower()] = requirement
    return pins


def grading_requirements(pins):
    """The requirements.txt of the bundle: the pins of ``GRADING_PACKAGES``."""
    missing = [name for name in GRADING_PACKAGES if name not in pins]
    if missing:
        raise ValueError(f"{REQUIREMENTS} pins no version of {', '.join(missing)}")
    lines = [
        "# The packages grading needs, pinned as in the course's requirements.txt.",
        f"# torch ({pins['torch']}) is installed before these, from {TORCH_INDEX}.",
    ]
    return "\n".join(lines + [pins[name] for name in GRADING_PACKAGES]) + "\n"


def render(template, **values):
    """A script of ``gradescope_files/`` with each ``__KEY__`` replaced by its value."""
    text = (TEMPLATES / template).read_text()
    for key, value in values.items():
        text = text.replace(f"__{key.upper()}__", value)
    return text


def package_files():
    """(path in the zip, path here) of every Python file of the ``autograder`` package."""
    files = [p for p in PACKAGE_DIR.rglob("*.py") if "__pycache__" not in p.parts]
    return sorted((f"autograder/{p.relative_to(PACKAGE_DIR).as_posix()}", p) for p in files)


def add_file(bundle, name, data, mode):
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = mode
    info.compress_type = zipfile.ZIP_DEFLATED
    bundle.writestr(info, data)


def build_bundle(assignment, out):
    """Write ``setup.sh``, ``run_autograder``, ``requirements.txt`` and ``autograder.zip`` into ``out``;
    returns the zip's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pins = pinned_requirements()
    scripts = {
        "setup.sh": render("setup.sh", assignment=assignment, torch_requirement=pins["torch"]),
        "run_autograder": render("run_autograder", assignment=assignment),
    }
    requirements = grading_requirements(pins)
    for name, text in scripts.items():
        (out / name).write_text(text)
        (out / name).chmod(0o755)
    (out / "requirements.txt").write_text(requirements)
    zip_path = out / "autograder.zip"
    with zipfile.ZipFile(zip_path, "w") as bundle:
        for name, text in scripts.items():
            add_file(bundle, name, text, EXECUTABLE)
        add_file(bundle, "requirements.txt", requirements, READABLE)
        for name, path in package_files():
            add_file(bundle, name, path.read_bytes(), READABLE)
    return zip_path
