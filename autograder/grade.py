"""``python -m autograder grade``: a class of notebooks in, results and grades out.

For each submission, as a pipeline of small steps:

1. ``prepare``: ``read_notebook`` and ``extract_code`` (here, trusted; only JSON and
   the AST are looked at, nothing is executed);
2. ``grade_batch``: a separate trusted pytest process runs the assignment's hidden
   tests on a batch of submissions, one after the other; it starts each student's
   code in a child process of its own (``plugin.py``);
3. ``write_result``: ``results.json`` (Gradescope's schema) and ``feedback.md``,
   each written atomically;
4. one row of ``grades.csv`` per submission, and a table on stdout.

A submission that can't be read or run gets a result with the reason and zero
points; the rest of the class is graded as usual.
"""

import csv
import functools
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
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
# submissions graded by one trusted pytest process: it starts once (torch, pytest, the
# hidden tests) for the whole batch, and each child starts while the one before is tested
BATCH_SIZE = 8


def gradable_assignments():
    return sorted(name for name in GRADED_NAMES if (HIDDEN_TESTS / f"test_{name}.py").exists())


@dataclass
class Job:
    path: Path
    student: str
    assignment: str | None
    problems: list = field(default_factory=list)
    seconds: float = 0.0  # time spent reading and extracting the notebook


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


def prepare(job, out, force=False):
    """Read a submission and extract its graded code (trusted: only JSON and the AST are
    looked at). Returns (result, None) when it is graded already or can't be, else
    (None, extracted code)."""
    started = time.monotonic()
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
            return json.loads(previous.read_text()), None
        extracted = extract_code(notebook, GRADED_NAMES[job.assignment])
        job.problems += extracted.problems
        job.seconds = time.monotonic() - started
        return None, extracted
    except SubmissionError as exc:
        return failed_result(job, str(exc), time.monotonic() - started, out), None
    except Exception as exc:  # noqa: BLE001 - a grader bug must not stop the class
        return failed_result(job, internal_error(exc), time.monotonic() - started, out), None


def internal_error(exc):
    return f"internal grader error ({type(exc).__name__}: {exc}); please tell your instructor"


def failed_result(job, error, seconds, out):
    """Zero points on every hidden test, with the reason; written like any result."""
    catalogue = collect_tests(job.assignment) if job.assignment in gradable_assignments() else []
    tests = [{**t, "score": 0, "status": "failed", "output": f"Not graded: {error}"} for t in catalogue]
    result = make_result(job, tests, error, seconds)
    write_result(out, result)
    return result


def grade_batch(assignment, batch, device, out):
    """Run the hidden tests of ``assignment`` on a batch of [(job, extracted code)] in one
    trusted pytest process, and write each result. A submission whose result is missing
    (the batch's process died) is graded again on its own."""
    with tempfile.TemporaryDirectory(prefix="grade-") as tmp:
        entries = []
        for index, (_, extracted) in enumerate(batch):
            code = Path(tmp) / f"{index}.code.json"
            code.write_text(json.dumps({"chunks": extracted.chunks}))
            entries.append({"id": str(index), "code": str(code), "results": str(Path(tmp) / f"{index}.results.json")})
        manifest = Path(tmp) / "batch.json"
        manifest.write_text(json.dumps(entries))
        reason = None
        try:
            completed = run_pytest(
                assignment, ["--batch", str(manifest), "--device", device], timeout=SUBMISSION_TIMEOUT_S * len(batch)
            )
            reason = f"the grader failed on this submission (pytest exit {completed.returncode})"
        except subprocess.TimeoutExpired:
            reason = f"grading took longer than {SUBMISSION_TIMEOUT_S} s and was stopped"
        results = []
        for (job, extracted), entry in zip(batch, entries, strict=True):
            if Path(entry["results"]).exists():
                outcome = json.loads(Path(entry["results"]).read_text())
                job.problems += outcome["load_problems"]
                seconds = job.seconds + outcome["seconds"]
                result = make_result(job, outcome["tests"], None, seconds, outcome["isolation"])
                write_result(out, result)
                results.append(result)
            elif len(batch) > 1:
                results += grade_batch(assignment, [(job, extracted)], device, out)
            else:
                results.append(failed_result(job, reason, job.seconds, out))
        return results


def batches(ready, jobs):
    """Split [(job, extracted)] into per-assignment batches, enough of them to keep
    ``jobs`` workers busy, none larger than BATCH_SIZE."""
    by_assignment = {}
    for job, extracted in ready:
        by_assignment.setdefault(job.assignment, []).append((job, extracted))
    for assignment, items in by_assignment.items():
        size = max(1, min(BATCH_SIZE, math.ceil(len(items) / jobs)))
        for start in range(0, len(items), size):
            yield assignment, items[start : start + size]


def make_result(job, tests, error, seconds, isolation=None):
    """The Gradescope-schema result of one submission."""
    header = []
    if error:
        header.append(f"This submission could not be graded: {error}")
    if job.problems:
        header.append("Problems in your notebook (these statements were skipped):")
        header += [f"  - {p}" for p in job.problems]
    # bonus tests are extra credit: their points count in the score, not in the maximum
    bonus = [t for t in tests if t.get("bonus")]
    return {
        "score": sum(t["score"] for t in tests),
        "max_score": sum(t["max_score"] for t in tests if not t.get("bonus")),
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
                **({"tags": ["bonus"]} if t.get("bonus") else {}),
            }
            for t in tests
        ],
        "extra_data": {
            "student": job.student,
            "assignment": job.assignment,
            "status": "error" if error else "graded",
            "isolation": isolation,
            "bonus": sum(t["score"] for t in bonus),
            "bonus_max": sum(t["max_score"] for t in bonus),
        },
    }


def full_marks(result):
    """Every point a result's hidden tests can give: its max_score and the bonus (extra credit) beyond it."""
    return result["max_score"] + result["extra_data"].get("bonus_max", 0)


def feedback_text(result):
    """The human-readable feedback beside results.json."""
    extra = result["extra_data"]
    lines = [
        f"# {extra['assignment']}: feedback for {extra['student']}",
        "",
        f"Score: {result['score']:g} / {result['max_score']:g}",
        "",
    ]
    if extra.get("bonus_max"):
        lines[-1:-1] = [
            f"(The score includes {extra['bonus']:g} of {extra['bonus_max']:g} bonus points, "
            f"extra credit beyond the {result['max_score']:g} of the assignment.)"
        ]
    if result["output"]:
        lines += [result["output"], ""]
    if extra.get("isolation"):
        lines += [f"(Your code ran in: {extra['isolation']}.)", ""]
    for test in result["tests"]:
        mark = "PASS" if test["status"] == "passed" else "FAIL"
        bonus = " bonus" if "bonus" in test.get("tags", []) else ""
        lines.append(f"## {mark} {test['name']} ({test['score']:g}/{test['max_score']:g}{bonus})")
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
    jobs = max(1, jobs)
    results = []
    with (
        ThreadPoolExecutor(max_workers=jobs) as pool,
        tqdm(
            total=len(submissions), desc="grading", unit="nb", file=sys.stderr, disable=not sys.stderr.isatty()
        ) as progress,
    ):
        ready = []
        for job, (result, extracted) in zip(
            submissions, pool.map(lambda job: prepare(job, out, force), submissions), strict=True
        ):
            if result is not None:
                results.append(result)
                progress.update()
            else:
                ready.append((job, extracted))
        running = {pool.submit(grade_batch, a, batch, device, out): batch for a, batch in batches(ready, jobs)}
        for done in as_completed(running):
            try:
                batch_results = done.result()
            except Exception as exc:  # noqa: BLE001 - a grader bug must not lose the rest of the class
                batch_results = [failed_result(job, internal_error(exc), job.seconds, out) for job, _ in running[done]]
            results += batch_results
            progress.update(len(batch_results))
    print_table(write_grades(out, results))
    return results
