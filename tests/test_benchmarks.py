"""The benchmarks keep running, and the solutions' fused attention path computes what the explicit one does.

Nothing here times anything: ``make bench`` measures, these tests only keep it from rotting.
"""

import json
import subprocess
import sys

import pytest
import torch

from benchmarks.bench import use_fused_attention
from benchmarks.solutions import load

from .conftest import ROOT

# the assignments whose solution's MultiHeadAttention has the opt-in fused path
FUSED = ["03_multihead_attention", "04_transformer", "05_vision_transformer"]


@pytest.mark.parametrize("assignment", FUSED)
def test_fused_attention_equals_the_explicit_path(assignment):
    """fused = True (F.scaled_dot_product_attention) gives the explicit path's output, with and without a mask."""
    attention_class = load(assignment)["MultiHeadAttention"]
    torch.manual_seed(0)
    attention = attention_class(32, 4)
    assert attention.fused is False, "the explicit path is the default: the hidden tests measure it"
    query, memory = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    mask = torch.rand(2, 1, 5, 7) > 0.3
    mask[..., 0] = True  # every query may attend somewhere
    for args, kwargs in [((query,), {}), ((query, memory), {"mask": mask})]:
        explicit = attention(*args, **kwargs)
        attention.fused = True
        fused = attention(*args, **kwargs)
        weights_asked = attention(*args, **kwargs, need_weights=True)
        attention.fused = False
        torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(weights_asked[0], explicit, rtol=1e-5, atol=1e-6)  # weights: explicit path


def test_fused_vision_transformer_equals_the_explicit_one():
    vit_class = load("05_vision_transformer")["VisionTransformer"]
    config = dict(image_size=16, patch_size=4, in_channels=3, num_classes=5, embed_dim=32, depth=2, num_heads=4)
    torch.manual_seed(0)
    model = vit_class(**config)
    images = torch.randn(2, 3, 16, 16)
    explicit = model(images)
    torch.testing.assert_close(use_fused_attention(model)(images), explicit, rtol=1e-5, atol=1e-5)


def test_quick_benchmarks_run_and_write_their_table(tmp_path):
    """`python -m benchmarks.bench --quick` (without the grader section, which the course tests cover) runs."""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.bench",
            "--quick",
            "--sections",
            "attention,mha,vit",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    implementations = {(r["section"], r["implementation"]) for r in rows}
    assert ("mha", "solution, fused = True") in implementations
    assert ("vit", "reference ViT (nn modules)") in implementations
    assert all(r["ms"] > 0 and r["peak_mib"] > 0 for r in rows)
    table = (tmp_path / "bench.md").read_text()
    assert "| cpu | float32 |" in table and (tmp_path / "bench.png").stat().st_size > 0
