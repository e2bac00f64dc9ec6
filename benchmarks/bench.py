"""``make bench``: the solutions against PyTorch's own modules, and the grader's speed.

For each device (the CPU, and CUDA when there is one) and dtype, forward + backward
time (median, ``torch.utils.benchmark``) and peak memory of:

- attention: the chapter-2 solution's explicit ``scaled_dot_product_attention``, the
  same math written directly in PyTorch, and the fused ``F.scaled_dot_product_attention``;
- multi-head attention: the chapter-3 solution's ``MultiHeadAttention`` (its explicit
  path, and with ``fused = True``: ``F.scaled_dot_product_attention``) and
  ``nn.MultiheadAttention(batch_first=True)``;
- ViT-B/16: the chapter-5 solution's ``VisionTransformer`` (explicit and fused) and a
  reference ViT built from PyTorch's modules (``nn.TransformerEncoderLayer``), same
  configuration;
- the grader: seconds per submission of each chapter's solution, and submissions
  per minute with ``--jobs 1`` and ``--jobs 2``.

Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA and the grader's own
allocation tracker (``PeakMemory``, tensor storage bytes) on the CPU. Results go to
``OUT/bench.md``, ``OUT/bench.json`` and ``OUT/bench.png``. Nothing here asserts a
time: benchmarks are not tests.

    python -m benchmarks.bench [--out _build/bench] [--quick] [--sections attention,mha,vit,grader]
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.benchmark import Timer

from autograder.grade import gradable_assignments
from autograder.student_process import PeakMemory

from .solutions import ROOT, load, solution_notebook

SECTIONS = ("attention", "mha", "vit", "grader")


def devices():
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def sequence_lengths(device, dtype, quick):
    """64 to 4096; bfloat16 matrix products are slow on CPUs without bf16 units, so they stop at 1024 there."""
    if quick:
        return [64, 256]
    if device == "cpu" and dtype == torch.bfloat16:
        return [64, 256, 1024]
    return [64, 256, 1024, 4096]


def forward_backward(fn, inputs):
    """A step: forward, then backward from the sum of the (first) output."""

    def step():
        out = fn(*inputs)
        out = out[0] if isinstance(out, tuple) else out
        out.float().sum().backward()

    return step


def measure(step, device, min_run_time):
    """(median seconds, peak bytes) of one step."""
    step()  # warm-up: kernels chosen, caches filled
    seconds = Timer("step()", globals={"step": step}).blocked_autorange(min_run_time=min_run_time).median
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        with PeakMemory() as tracker:
            step()
        peak = tracker.peak
    return seconds, peak


def row(section, name, device, dtype, size, seconds, peak, **extra):
    return {
        "section": section,
        "implementation": name,
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
        "size": size,
        "ms": seconds * 1e3,
        "peak_mib": peak / 2**20,
        **extra,
    }


def bench_attention(quick, min_run_time):
    """Explicit attention (chapter 2) against the same math in PyTorch and the fused kernel."""
    solution = load("02_self_attention")["scaled_dot_product_attention"]

    def plain(q, k, v):
        return torch.softmax(q @ k.transpose(-2, -1) * q.size(-1) ** -0.5, dim=-1) @ v

    implementations = {
        "solution (explicit)": solution,
        "same math in PyTorch": plain,
        "F.scaled_dot_product_attention": F.scaled_dot_product_attention,
    }
    rows = []
    for device in devices():
        for dtype in (torch.float32, torch.bfloat16):
            for n in sequence_lengths(device, dtype, quick):
                shape = (1, 4, n, 64)  # (B, H, N, d)
                for name, fn in implementations.items():
                    inputs = [torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in range(3)]
                    seconds, peak = measure(forward_backward(fn, inputs), device, min_run_time)
                    rows.append(row("attention", name, device, dtype, n, seconds, peak))
    return rows


def bench_mha(quick, min_run_time):
    """The chapter-3 MultiHeadAttention against nn.MultiheadAttention."""
    solution_class = load("03_multihead_attention")["MultiHeadAttention"]
    embed_dim, num_heads = 256, 4
    rows = []
    for device in devices():
        for dtype in (torch.float32, torch.bfloat16):
            ours = solution_class(embed_dim, num_heads).to(device=device, dtype=dtype)
            fused = use_fused_attention(solution_class(embed_dim, num_heads)).to(device=device, dtype=dtype)
            theirs = nn.MultiheadAttention(embed_dim, num_heads, batch_first=True).to(device=device, dtype=dtype)
            implementations = {
                "solution MultiHeadAttention": lambda x, m=ours: m(x),
                "solution, fused = True": lambda x, m=fused: m(x),
                "nn.MultiheadAttention": lambda x, m=theirs: m(x, x, x, need_weights=False)[0],
            }
            for n in sequence_lengths(device, dtype, quick):
                for name, fn in implementations.items():
                    x = torch.randn(1, n, embed_dim, device=device, dtype=dtype, requires_grad=True)
                    seconds, peak = measure(forward_backward(fn, [x]), device, min_run_time)
                    rows.append(row("mha", name, device, dtype, n, seconds, peak))
    return rows


class ReferenceViT(nn.Module):
    """ViT built from PyTorch's own modules: the yardstick for the solution's speed."""

    def __init__(self, image_size, patch_size, embed_dim, depth, num_heads, num_classes, mlp_ratio=4.0):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)
        num_patches = (image_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        layer = nn.TransformerEncoderLayer(
            embed_dim,
            num_heads,
            int(embed_dim * mlp_ratio),
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, images):
        x = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B, N, E)
        x = torch.cat([self.cls_token.expand(x.size(0), -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.encoder(x))[:, 0])


def use_fused_attention(model):
    """``model`` with every attention module switched to F.scaled_dot_product_attention."""
    for module in model.modules():
        if hasattr(module, "fused"):
            module.fused = True
    return model


def bench_vit(quick, min_run_time):
    """The chapter-5 VisionTransformer against the reference, ViT-B/16 (a small ViT with --quick)."""
    solution_class = load("05_vision_transformer")["VisionTransformer"]
    config = dict(image_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12, num_classes=1000)
    if quick:
        config = dict(image_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=10)
    rows = []
    for device in devices():
        batch = 32 if device == "cuda" else 2
        for dtype in (torch.float32, torch.bfloat16) if device == "cuda" else (torch.float32,):
            models = {
                "solution VisionTransformer": solution_class(**config),
                "solution, fused = True": use_fused_attention(solution_class(**config)),
                "reference ViT (nn modules)": ReferenceViT(**config),
            }
            for name, model in models.items():
                model = model.to(device=device, dtype=dtype)
                parameters = sum(p.numel() for p in model.parameters())
                images = torch.randn(batch, 3, config["image_size"], config["image_size"], device=device, dtype=dtype)
                seconds, peak = measure(forward_backward(model, [images]), device, min_run_time)
                speed = {"images_per_s": batch / seconds, "params": parameters}
                rows.append(row("vit", name, device, dtype, batch, seconds, peak, **speed))
    return rows


def bench_grader(quick):
    """Seconds per submission of each chapter's solution, with --jobs 1 and --jobs 2."""
    copies = 2 if quick else 6
    rows = []
    for assignment in gradable_assignments():
        for jobs in (1, 2):
            with tempfile.TemporaryDirectory() as tmp:
                submitted = Path(tmp) / "submitted"
                for i in range(copies):
                    path = submitted / f"student{i}" / assignment / f"{assignment}.ipynb"
                    path.parent.mkdir(parents=True)
                    shutil.copy(solution_notebook(assignment), path)
                started = time.monotonic()
                subprocess.run(
                    [sys.executable, "-m", "autograder", "grade", str(submitted), "--out", f"{tmp}/out"]
                    + ["--jobs", str(jobs)],
                    cwd=ROOT,
                    check=True,
                    capture_output=True,
                )
                wall = time.monotonic() - started
                rows.append(
                    {
                        "section": "grader",
                        "assignment": assignment,
                        "jobs": jobs,
                        "submissions": copies,
                        "wall_s": wall,
                        "s_per_submission": wall / copies,
                        "per_minute": 60 * copies / wall,
                    }
                )
    return rows


def markdown(rows, machine):
    lines = [f"# Benchmarks\n\n{machine}\n"]
    timed = [r for r in rows if r["section"] != "grader"]
    for section in ("attention", "mha", "vit"):
        part = [r for r in timed if r["section"] == section]
        if not part:
            continue
        size = "batch" if section == "vit" else "N"
        extra = " | images/s" if section == "vit" else ""
        lines += [
            f"\n## {section}\n",
            f"| device | dtype | {size} | implementation | fwd+bwd ms | peak MiB | vs PyTorch{extra} |",
            "|---|---|---|---|---|---|---" + ("|---|" if extra else "|"),
        ]
        for r in part:
            ratio = time_ratio(r, timed)
            line = (
                f"| {r['device']} | {r['dtype']} | {r['size']} | {r['implementation']} | {r['ms']:.2f} "
                f"| {r['peak_mib']:.1f} | {ratio} |"
            )
            if extra:
                line += f" {r['images_per_s']:.1f} |"
            lines.append(line)
    grader = [r for r in rows if r["section"] == "grader"]
    if grader:
        lines += [
            "\n## grader (each chapter's solution notebook, several copies)\n",
            "| assignment | --jobs | submissions | wall s | s per submission | submissions per minute |",
            "|---|---|---|---|---|---|",
        ]
        for r in grader:
            lines.append(
                f"| {r['assignment']} | {r['jobs']} | {r['submissions']} | {r['wall_s']:.1f} "
                f"| {r['s_per_submission']:.2f} | {r['per_minute']:.1f} |"
            )
    return "\n".join(lines) + "\n"


# the PyTorch yardstick of each section: "same math" for the explicit attention, the library module otherwise
YARDSTICK = {
    "attention": "same math in PyTorch",
    "mha": "nn.MultiheadAttention",
    "vit": "reference ViT (nn modules)",
}


def time_ratio(r, rows):
    """This implementation's time over the yardstick's at the same device, dtype and size."""
    for other in rows:
        same = all(other[k] == r[k] for k in ("section", "device", "dtype", "size"))
        if same and other["implementation"] == YARDSTICK[r["section"]]:
            return f"{r['ms'] / other['ms']:.2f}x"
    return ""


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sections = [s for s in ("attention", "mha") if any(r["section"] == s for r in rows)]
    if not sections:
        return
    figure, axes = plt.subplots(1, len(sections), figsize=(6 * len(sections), 4.5), squeeze=False)
    for ax, section in zip(axes[0], sections, strict=True):
        part = [r for r in rows if r["section"] == section]
        for key in sorted({(r["implementation"], r["device"], r["dtype"]) for r in part}):
            points = [r for r in part if (r["implementation"], r["device"], r["dtype"]) == key]
            ax.loglog([r["size"] for r in points], [r["ms"] for r in points], "o-", label=" / ".join(key))
        ax.set(xlabel="sequence length N", ylabel="forward + backward (ms)", title=section)
        ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def machine_line():
    import platform

    cpu = f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    gpu = f"; GPU: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "; no GPU"
    return f"torch {torch.__version__}; {cpu}{gpu}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "_build" / "bench"))
    parser.add_argument("--quick", action="store_true", help="small sizes: checks that the benchmarks run")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    args = parser.parse_args(argv)
    sections = args.sections.split(",")
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {sorted(unknown)}")
    min_run_time = 0.05 if args.quick else 0.5
    torch.manual_seed(0)
    rows = []
    for section in sections:
        started = time.monotonic()
        if section == "grader":
            rows += bench_grader(args.quick)
        else:
            rows += {"attention": bench_attention, "mha": bench_mha, "vit": bench_vit}[section](
                args.quick, min_run_time
            )
        print(f"{section}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps({"machine": machine_line(), "rows": rows}, indent=1))
    text = markdown(rows, machine_line())
    (out / "bench.md").write_text(text)
    plot(rows, out / "bench.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
