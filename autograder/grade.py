"""``python -m autograder grade``: a class of notebooks in, results and grades out.

For each submission, as a pipeline of small steps:

1. ``read_notebook`` and ``extract_code`` (here, trusted; only JSON and the AST are
   looked at, nothing is executed);
2. ``run_hidden_tests``: a separate trusted pytest process runs the assignment's
   hidden tests; it starts the student's code in a child process of its own;
3. ``write_result``: ``results.json`` (Gradescope's schema) and ``feedback.md``,
   each written atomically;
4. one row of ``grades.csv`` per submission, and a table on stdout.

A submission that can't be read or run gets a result with the reason and zero
points; the rest of the class is graded as usual.
"""

import csv
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .notebook import SubmissionError, extract_code, read_notebook

PACKAGE_DIR = Path(__file__).resolve().parent
HIDDEN_TESTS = PACKAGE_DIR / "hidden_tests"

# the graded names of each assignment (COURSE_SPEC.md)
GRADED_NAMES = {
    "01_rnn_attention": ["Encoder", "AdditiveAttention", "AttentionDecoder", "Seq2SeqWithAttention"],
    "02_self_attention": [
        "scaled_dot_product_attention",
        "SelfAttention",
        "sinusoidal_positional_encoding",
        "PositionalEncoding",
        "LearnedPositionalEncoding",
    ],
    "03_multihead_attention": ["split_heads", "merge_heads", "MultiHeadAttention"],
    "04_transformer": [
        "FeedForward",
        "TransformerBlock",
        "TransformerDecoderBlock",
        "TransformerEncoder",
        "causal_mask",
    ],
    "05_vision_transformer": ["PatchEmbedding", "VisionTransformer", "attention_memory_bytes", "chunked_attention"],
}

SUBMISSION_TIMEOUT_S = 600


def gradable_assignments():
    return sorted(name for name in GRADED_NAMES if (HIDDEN_TESTS / f"test_{name}.py").exists())


@dataclass
class Job:
    path: Path
    student: str
    assignment: str | None
    problems: list = field(default_factory=list)


def safe_id(text):
    """A student or assignment id usable as a folder name."""
    return re.sub(r"[^A-Za-z0-9_.@+-]+", "_", text).strip("._") or "unnamed"


def discover(paths, assignment=None):
    """Submissions under ``paths``: notebooks, or folders of them (nbgrader's
    ``submitted/<student>/<assignment>/<notebook>.ipynb`` included)."""
    notebooks = []
    for path in map(Path, paths):
        if path.is_dir():
            notebooks += sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        else:
            notebooks.append(path)
    jobs, seen = [], {}
    for notebook in notebooks:
        parts = notebook.resolve().parts
        if "submitted" in parts[:-3]:
            at = len(parts) - 1 - parts[::-1].index("submitted")
            student, folder_assignment = parts[at + 1], parts[at + 2]
        else:
            student, folder_assignment = notebook.stem, None
        job = Job(
            notebook, safe_id(student), assignment or (folder_assignment if folder_assignment in GRADED_NAMES else None)
        )
        key = (job.student, job.assignment or notebook.stem)
        if key in seen:
            # two notebooks for one student and assignment: grade both, under distinct ids
            seen[key] += 1
            job.student = f"{job.student}-{seen[key]}"
        else:
            seen[key] = 1
        jobs.append(job)
    return jobs


def infer_assignment(path, extracted):
    """The assignment a notebook belongs to: by its file name, else by the graded
    names it defines (a Colab copy may be called 'Copy of ...' or 'Untitled3')."""
    for name in GRADED_NAMES:
        if name in path.name:
            return name
    overlap = {name: len(set(names) & set(extracted.defined)) for name, names in GRADED_NAMES.items()}
    best = max(overlap, key=overlap.get)
    return best if overlap[best] else None


@functools.cache
def collect_tests(assignment):
    """The hidden tests of an assignment, with their points, without running them."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "tests.json"
        completed = run_pytest(assignment, ["--collect-only", "--collect-json", str(out)], timeout=300)
        if not out.exists():
            raise RuntimeError(f"could not collect the hidden tests of {assignment}:\n{completed.stdout[-3000:]}")
        return json.loads(out.read_text())


def run_pytest(assignment, extra_args, timeout):
    env = {
        **os.environ,
        "PYTHONPATH": str(PACKAGE_DIR.parent),
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        # the tests' tensors are small: one thread per process beats oversubscribing with --jobs
        "OMP_NUM_THREADS": "1",
    }
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(HIDDEN_TESTS / f"test_{assignment}.py"),
        "-p",
        "autograder.plugin",
        "-p",
        "no:cacheprovider",
        "-q",
        "--no-header",
        "-o",
        "console_output_style=classic",
        *extra_args,
    ]
    return subprocess.run(
        command,
        env=env,
        cwd=PACKAGE_DIR.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def run_hidden_tests(assignment, extracted, device):
    """Run the hidden tests on extracted code; returns the plugin's results."""
    with tempfile.TemporaryDirectory(prefix="grade-") as tmp:
        code, results = Path(tmp) / "submission.json", Path(tmp) / "results.json"
        code.write_text(json.dumps({"chunks": extracted.chunks}))
        try:
            completed = run_pytest(
                assignment,
                ["--submission", str(code), "--results-json", str(results), "--device", device],
                timeout=SUBMISSION_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            raise SubmissionError(f"grading took longer than {SUBMISSION_TIMEOUT_S} s and was stopped") from None
        if not results.exists():
            raise SubmissionError(f"the grader failed on this submission (pytest exit {completed.returncode})")
        return json.loads(results.read_text())


def grade_one(job, device, out, force=False):
    """Grade one submission and write its result; never raises for anything a
    submission contains. A submission graded before is skipped unless ``force``."""
    started = time.monotonic()
    isolation = None
    try:
        notebook = read_notebook(job.path)
        if job.assignment is None:
            job.assignment = infer_assignment(job.path, extract_code(notebook))
        if job.assignment is None:
            raise SubmissionError("no graded function or class of any assignment was found in this notebook")
        if job.assignment not in gradable_assignments():
            raise SubmissionError(f"assignment {job.assignment} has no hidden tests yet")
        previous = result_path(out, job.student, job.assignment)
        if previous.exists() and not force:
            return json.loads(previous.read_text())
        extracted = extract_code(notebook, GRADED_NAMES[job.assignment])
        job.problems += extracted.problems
        outcome = run_hidden_tests(job.assignment, extracted, device)
        job.problems += outcome["load_problems"]
        tests, error, isolation = outcome["tests"], None, outcome["isolation"]
    except SubmissionError as exc:
        tests, error = None, str(exc)
    except Exception as exc:  # noqa: BLE001 - a grader bug must not stop the class
        tests, error = None, f"internal grader error ({type(exc).__name__}: {exc}); please tell your instructor"
    if tests is None:
        catalogue = collect_tests(job.assignment) if job.assignment in gradable_assignments() else []
        tests = [{**t, "score": 0, "status": "failed", "output": f"Not graded: {error}"} for t in catalogue]
    result = make_result(job, tests, error, time.monotonic() - started, isolation)
    write_result(out, result)
    return result


def make_result(job, tests, error, seconds, isolation=None):
    """The Gradescope-schema result of one submission."""
    header = []
    if error:
        header.append(f"This submission could not be graded: {error}")
    if job.problems:
        header.append("Problems in your notebook (these statements were skipped):")
        header += [f"  - {p}" for p in job.problems]
    return {
        "score": sum(t["score"] for t in tests),
        "max_score": sum(t["max_score"] for t in tests),
        "execution_time": round(seconds, 2),
        "output": "\n".join(header),
        "tests": [
            {
                "name": t["name"],
                "score": t["score"],
                "max_score": t["max_score"],
                "status": t["status"],
                "output": "\n".join(filter(None, [t.get("description", ""), t.get("output", "")])),
                "visibility": "visible",
            }
            for t in tests
        ],
        "extra_data": {
            "student": job.student,
            "assignment": job.assignment,
            "status": "error" if error else "graded",
            "isolation": isolation,
        },
    }


def feedback_text(result):
    """The human-readable feedback beside results.json."""
    extra = result["extra_data"]
    lines = [
        f"# {extra['assignment']}: feedback for {extra['student']}",
        "",
        f"Score: {result['score']:g} / {result['max_score']:g}",
        "",
    ]
    if result["output"]:
        lines += [result["output"], ""]
    if extra.get("isolation"):
        lines += [f"(Your code ran in: {extra['isolation']}.)", ""]
    for test in result["tests"]:
        mark = "PASS" if test["status"] == "passed" else "FAIL"
        lines.append(f"## {mark} {test['name']} ({test['score']:g}/{test['max_score']:g})")
        lines += ["", test["output"], ""]
    return "\n".join(lines)


def write_atomically(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)


def result_path(out, student, assignment):
    return out / student / (assignment or "unknown") / "results.json"


def write_result(out, result):
    extra = result["extra_data"]
    path = result_path(out, extra["student"], extra["assignment"])
    write_atomically(path, json.dumps(result, indent=1))
    write_atomically(path.with_name("feedback.md"), feedback_text(result))


def write_grades(out, results):
    rows = sorted(results, key=lambda r: (r["extra_data"]["student"], r["extra_data"]["assignment"] or ""))
    path = out / "grades.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=out, delete=False, suffix=".tmp", newline="") as tmp:
        writer = csv.writer(tmp)
        writer.writerow(["student", "assignment", "score", "max_score", "status"])
        for r in rows:
            extra = r["extra_data"]
            writer.writerow(
                [
                    extra["student"],
                    extra["assignment"] or "unknown",
                    f"{r['score']:g}",
                    f"{r['max_score']:g}",
                    extra["status"],
                ]
            )
    os.replace(tmp.name, path)
    return rows


def print_table(rows, stream=sys.stdout):
    print(f"{'student':<24} {'assignment':<24} {'score':>11}  status", file=stream)
    for r in rows:
        extra = r["extra_data"]
        score = f"{r['score']:g}/{r['max_score']:g}"
        print(
            f"{extra['student']:<24} {extra['assignment'] or 'unknown':<24} {score:>11}  {extra['status']}", file=stream
        )


def grade(paths, out, assignment=None, jobs=1, device="cpu", force=False):
    """Grade every submission under ``paths`` into ``out``; returns the results.

    Each result is written as soon as it is ready, so a run stopped midway loses
    nothing: run it again and it grades only what is missing (``force`` regrades all).
    """
    out = Path(out)
    submissions = discover(paths, assignment)
    results = []
    with (
        ThreadPoolExecutor(max_workers=max(1, jobs)) as pool,
        tqdm(
            total=len(submissions), desc="grading", unit="nb", file=sys.stderr, disable=not sys.stderr.isatty()
        ) as progress,
    ):
        for result in pool.map(lambda job: grade_one(job, device, out, force), submissions):
            results.append(result)
            progress.update()
    print_table(write_grades(out, results))
    return results
