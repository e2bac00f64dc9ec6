"""Hostile and broken submissions cost only their own points.

Each attack is the blank assignment plus one cell of hostile code (appended, so it
overrides the stubs, as a student's later cell would). Every attacker must score
no more than an honest blank submission (0), honest students graded in the same
run keep full marks, no process outlives the run, and the run ends in bounded time.
"""

import json
import os
import subprocess
import time
from pathlib import Path

import nbformat
import pytest

from autograder import sandbox

from .conftest import ROOT, grade_cli, notebook_of, release_path, solution_path, variants

ASSIGNMENT = "02_self_attention"
HIDDEN_TEST_FILE = ROOT / "autograder" / "hidden_tests" / f"test_{ASSIGNMENT}.py"
MARKER = "attack-marker-9b1f"  # a command line to look for in the process table afterwards

ATTACKS = {
    "sys_exit_in_call": """
import sys
def scaled_dot_product_attention(q, k, v, mask=None):
    sys.exit(0)
""",
    "os_exit_while_loading": """
import os
class SelfAttention:
    os._exit(0)
""",
    "segfault_in_call": """
import ctypes
def scaled_dot_product_attention(q, k, v, mask=None):
    return ctypes.string_at(0)
""",
    "endless_loop_in_call": """
def scaled_dot_product_attention(q, k, v, mask=None):
    while True:
        pass
""",
    "sleep_while_loading": """
import time
class SelfAttention:
    time.sleep(10**6)
""",
    "output_flood": """
def scaled_dot_product_attention(q, k, v, mask=None):
    while True:
        print("x" * 2**20, flush=True)
""",
    "memory_hog": """
def scaled_dot_product_attention(q, k, v, mask=None):
    hog = [bytearray(2**30) for _ in range(64)]
    return hog
""",
    "kills_parent_and_group": """
import os, signal
def scaled_dot_product_attention(q, k, v, mask=None):
    os.kill(os.getppid(), signal.SIGKILL)
    os.killpg(0, signal.SIGKILL)
""",
    "leaves_processes_behind": f"""
import subprocess
def scaled_dot_product_attention(q, k, v, mask=None):
    for _ in range(20):
        subprocess.Popen(["sleep", "1000", "{MARKER}"], start_new_session=True)
    return q, q
""",
    "forks_many": """
import os, time
def scaled_dot_product_attention(q, k, v, mask=None):
    for _ in range(100):
        if os.fork() == 0:
            time.sleep(1000)
            os._exit(0)
    return q, q
""",
    "fork_bomb": """
import os
def scaled_dot_product_attention(q, k, v, mask=None):
    while True:
        try:
            os.fork()
        except OSError:
            pass
""",
    "monkeypatches_torch_and_pytest": """
import torch
torch.allclose = lambda *args, **kwargs: True
torch.Tensor.__eq__ = lambda self, other: torch.ones((), dtype=torch.bool)
try:
    import pytest
    pytest.fail = lambda *args, **kwargs: None
except ImportError:
    pass
def scaled_dot_product_attention(q, k, v, mask=None):
    torch.allclose = lambda *args, **kwargs: True
    return torch.zeros_like(q), torch.zeros(q.shape[:-1] + k.shape[-2:-1])
""",
    "reads_hidden_tests": f"""
import pathlib
def scaled_dot_product_attention(q, k, v, mask=None):
    found = []
    for path in [{str(HIDDEN_TEST_FILE)!r}, {str(solution_path(ASSIGNMENT))!r}]:
        try:
            found.append(pathlib.Path(path).read_text()[:3000])
        except OSError as exc:
            found.append(repr(exc))
    raise RuntimeError("\\n".join(found))
""",
    "huge_reply": """
import torch
def scaled_dot_product_attention(q, k, v, mask=None):
    return torch.zeros(80 * 2**20), torch.zeros(1)
""",
}

# A fork bomb is only safe to run where something caps the number of processes: the
# pids cgroup, or RLIMIT_NPROC outside a user namespace (the uid-65534 fallback).
PROCESS_CAP = "pids" in sandbox.cgroups_in_force() or (
    not sandbox.bubblewrap_works() and sandbox.nobody_can_run_python()
)
if not PROCESS_CAP:
    del ATTACKS["fork_bomb"]


def attacker_notebook(attack_source):
    notebook = nbformat.read(release_path(ASSIGNMENT), as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(attack_source))
    return notebook


@pytest.fixture(scope="module")
def attacked_class(tmp_path_factory):
    """One grading run: every attack, plus honest students and a blank, with --jobs 2."""
    submitted = tmp_path_factory.mktemp("attacked") / "submitted"
    class_list = {f"attack-{name}": attacker_notebook(source) for name, source in ATTACKS.items()}
    class_list["honest-solution"] = nbformat.read(solution_path(ASSIGNMENT), as_version=4)
    class_list["honest-variant"] = notebook_of(variants(ASSIGNMENT)[0].read_text())
    class_list["honest-blank"] = nbformat.read(release_path(ASSIGNMENT), as_version=4)
    for student, notebook in class_list.items():
        path = submitted / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
        path.parent.mkdir(parents=True)
        nbformat.write(notebook, path)
    out = submitted.parent / "graded"
    started = time.monotonic()
    completed = grade_cli([submitted], out, "--jobs", "2")
    seconds = time.monotonic() - started
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = {p.parent.parent.name: json.loads(p.read_text()) for p in out.glob(f"*/{ASSIGNMENT}/results.json")}
    return results, seconds, out


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attacker_scores_no_more_than_a_blank(attacked_class, attack):
    results, _, _ = attacked_class
    result = results[f"attack-{attack}"]
    assert result["score"] <= results["honest-blank"]["score"] == 0
    assert result["max_score"] == results["honest-blank"]["max_score"]
    failed = [t for t in result["tests"] if t["status"] == "failed"]
    assert all(t["output"].strip() for t in failed), "every failure carries a reason"


def test_honest_students_graded_with_attackers_keep_full_marks(attacked_class):
    results, _, _ = attacked_class
    for student in ("honest-solution", "honest-variant"):
        assert results[student]["score"] == results[student]["max_score"] > 0, student


def test_attacked_run_finishes_in_bounded_time(attacked_class):
    _, seconds, _ = attacked_class
    assert seconds < 900


def test_no_process_outlives_the_run(attacked_class):
    leftovers = subprocess.run(["pgrep", "-f", MARKER], capture_output=True, text=True, check=False).stdout.split()
    assert leftovers == [], f"processes left behind: {leftovers}"
    sleepers = subprocess.run(["pgrep", "-x", "-f", "sleep 1000"], capture_output=True, text=True, check=False)
    assert sleepers.stdout.split() == []
    students = subprocess.run(["pgrep", "-f", "student_process.py"], capture_output=True, text=True, check=False)
    assert students.stdout.split() == [], "student processes are still running"
    # groups named autograder-<pid>-<n> whose grader process is gone (others may belong to another run)
    parents = [sandbox.own_cgroup_v1(c) for c in sandbox.cgroups_in_force()]
    groups = [g for parent in parents if parent for g in parent.glob("autograder-*-*")]
    orphans = [g for g in groups if not Path("/proc", g.name.split("-")[1]).exists()]
    assert orphans == [], f"cgroups left behind: {orphans}"


def test_student_code_cannot_read_hidden_tests_or_solutions(attacked_class):
    results, _, _ = attacked_class
    text = json.dumps(results["attack-reads_hidden_tests"])
    assert "def test_" not in text and "BEGIN SOLUTION" not in text


def test_crashes_and_hangs_are_explained(attacked_class):
    results, _, _ = attacked_class

    def outputs(student):
        return " ".join(t["output"] for t in results[student]["tests"])

    assert "did not answer in time" in outputs("attack-endless_loop_in_call")
    assert "segmentation fault" in outputs("attack-segfault_in_call")
    assert "while your notebook's definitions were being loaded" in outputs("attack-os_exit_while_loading")
    assert "did not answer in time" in outputs("attack-sleep_while_loading")
    assert "MiB of data" in outputs("attack-huge_reply")
    if "fork_bomb" in ATTACKS:
        assert "did not answer in time" in outputs("attack-fork_bomb")


FORK_UNTIL_REFUSED = """
import os, time
forked = 0
try:
    while forked < 5000:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        forked += 1
except OSError:
    pass
print("forked", forked, flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not PROCESS_CAP, reason="nothing here can cap a submission's processes (no pids cgroup)")
def test_process_count_is_capped(tmp_path):
    """The sandbox refuses forks beyond Limits.processes, and its cgroups go with the child."""
    script = tmp_path / "fork_until_refused.py"
    script.write_text(FORK_UNTIL_REFUSED)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    os.chmod(scratch, 0o777)
    log = tmp_path / "log"
    with log.open("wb") as log_file:
        process, to_child, from_child = sandbox.launch(script, log_file, scratch)
        deadline = time.monotonic() + 60
        while b"forked" not in log.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.2)
        sandbox.kill_everything(process)
    os.close(to_child)
    os.close(from_child)
    forked = int(log.read_text().split("forked")[1].split()[0])
    assert 0 < forked < sandbox.Limits.processes
    assert not any(folder.exists() for folder in getattr(process.cgroups, "folders", []))
