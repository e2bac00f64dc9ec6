"""``make gpu-check``: the course on a CUDA device, in one run.

1. every solution graded by the hidden tests with ``--device cuda`` (full marks expected);
2. the mutant catalogue and the correct variants graded on CUDA (``tests/test_catalogue.py``);
3. the grader's allocation tracker (``PeakMemory``, which the memory tests run on the
   CPU or the meta device) against ``torch.cuda.max_memory_allocated`` for explicit
   attention, forward + backward, at several N: they must agree within 10%;
4. the benchmarks (``benchmarks/bench.py``) on the CPU and CUDA.

Without a CUDA device, steps 1 to 3 are skipped with a message and the benchmarks
run on the CPU with small sizes, so the script itself stays checked. Exits non-zero
when a check fails.

    python -m benchmarks.gpu_check [--out _build/gpu-check]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from autograder.grade import full_marks, gradable_assignments
from autograder.student_process import PeakMemory

from .solutions import ROOT, load, solution_notebook

TRACKER_TOLERANCE = 0.10


def run(command, **kwargs):
    print("$", " ".join(map(str, command)), flush=True)
    return subprocess.run(list(map(str, command)), cwd=ROOT, check=False, **kwargs).returncode


def grade_solutions_on_cuda(out):
    notebooks = [solution_notebook(a) for a in gradable_assignments()]
    jobs = str(min(8, os.cpu_count() or 1))
    code = run(
        [sys.executable, "-m", "autograder", "grade", *notebooks, "--out", out / "solutions", "--device", "cuda"]
        + ["--jobs", jobs, "--force"]
    )
    results = [json.loads(path.read_text()) for path in (out / "solutions").glob("*/*/results.json")]
    full = all(r["score"] == full_marks(r) for r in results)
    return code == 0 and full and len(results) == len(notebooks)


def catalogue_on_cuda():
    env = {**os.environ, "COURSE_DEVICE": "cuda", "COURSE_JOBS": str(min(8, os.cpu_count() or 1))}
    command = [sys.executable, "-m", "pytest", "tests/test_catalogue.py", "-p", "no:cacheprovider", "-q"]
    return run(command, env=env) == 0


def attention_step(q, k, v, attention):
    def step():
        out, _ = attention(q, k, v)
        out.sum().backward()

    return step


def tracker_against_cuda():
    """Predicted peak (tracker on the meta device) vs measured (CUDA allocator), explicit attention."""
    attention = load("02_self_attention")["scaled_dot_product_attention"]
    ok = True
    print(f"{'N':>6} {'tracker (meta) MiB':>20} {'cuda max_allocated MiB':>24} {'ratio':>7}")
    for n in (256, 1024, 2048, 4096):
        shape = (2, 8, n, 64)
        meta = [torch.randn(shape, device="meta", requires_grad=True) for _ in range(3)]
        with PeakMemory() as tracker:
            attention_step(*meta, attention)()
        cuda = [torch.randn(shape, device="cuda", requires_grad=True) for _ in range(3)]
        attention_step(*cuda, attention)()  # warm-up: cuBLAS workspaces exist before the baseline
        for t in cuda:
            t.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        attention_step(*cuda, attention)()
        torch.cuda.synchronize()
        measured = torch.cuda.max_memory_allocated() - before
        ratio = tracker.peak / measured
        ok &= abs(ratio - 1) <= TRACKER_TOLERANCE
        print(f"{n:>6} {tracker.peak / 2**20:>20.1f} {measured / 2**20:>24.1f} {ratio:>7.3f}")
    return ok


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "_build" / "gpu-check"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    checks = {}
    if torch.cuda.is_available():
        print(f"CUDA device: {torch.cuda.get_device_name()}", flush=True)
        checks["solutions graded on cuda"] = grade_solutions_on_cuda(out)
        checks["mutant catalogue on cuda"] = catalogue_on_cuda()
        checks["tracker agrees with the CUDA allocator"] = tracker_against_cuda()
        bench = [sys.executable, "-m", "benchmarks.bench", "--out", out / "bench", "--sections", "attention,mha,vit"]
    else:
        print("No CUDA device here: the CUDA checks are skipped; the benchmarks run small, on the CPU.", flush=True)
        bench = [sys.executable, "-m", "benchmarks.bench", "--out", out / "bench", "--quick"]
        bench += ["--sections", "attention,mha,vit"]
    checks["benchmarks ran"] = run(bench) == 0
    print(f"\ngpu-check ({time.monotonic() - started:.0f} s):")
    for name, passed in checks.items():
        print(f"  {'ok ' if passed else 'FAIL'} {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
