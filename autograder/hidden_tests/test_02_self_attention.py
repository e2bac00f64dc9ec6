"""Hidden tests for 02_self_attention.

Every test talks to the student's code through the ``student`` proxy (their code
runs in another process) and computes what is expected here, from PyTorch's own
functions or from the module's own weights, never from stored outputs.
"""

import pytest
import torch
import torch.nn.functional as F

from autograder.feedback import Feedback, close, expect, expect_close, expect_tensor, loglog_slope, randn


def random_mask(*shape, device="cpu", seed=0):
    """A boolean mask with at least one True (may attend) per row."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(*shape, generator=generator) > 0.4
    mask[..., 0] = True
    return mask.to(device)


def reference_weights(q, k, mask=None, scale=None, dim=-1):
    scores = (q.double() @ k.double().transpose(-2, -1)) * (scale if scale is not None else q.size(-1) ** -0.5)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=dim)


def diagnose_attention(output, q, k, v, mask=None, dtype=torch.float32):
    """Name the usual mistake that reproduces a wrong attention output, if one does."""
    d_k, d_v = q.size(-1), v.size(-1)
    candidates = {
        "scores divided by d_k instead of sqrt(d_k) (the lecture notes' mistake)": dict(scale=1 / d_k),
        "scores not scaled by 1/sqrt(d_k)": dict(scale=1.0),
        "scores scaled with the value dimension instead of d_k": dict(scale=d_v**-0.5),
        "softmax taken over the queries (dim=-2) instead of the keys (dim=-1)": dict(dim=-2),
    }
    if mask is not None:
        candidates["mask ignored"] = dict(mask=None)
        candidates["mask inverted: True must mean 'may attend'"] = dict(mask=~mask)
    for mistake, change in candidates.items():
        args = {"mask": mask, **change}
        try:
            weights = reference_weights(q, k, **args)
        except RuntimeError:
            continue
        if close(output, (weights @ v.double()).to(output.dtype), dtype):
            return mistake
    return None


def expect_attention_matches(output, weights, q, k, v, mask=None, dtype=torch.float32):
    """Compare with PyTorch's fused kernel (output) and the reference softmax (weights)."""
    expected_out = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=mask)
    expect_tensor(output, "output", shape=expected_out.shape)
    if not close(output, expected_out, dtype):
        mistake = diagnose_attention(output, q, k, v, mask, dtype)
        raise Feedback(
            "output differs from torch.nn.functional.scaled_dot_product_attention"
            + (f"; it matches the result of this mistake: {mistake}" if mistake else ""),
            diagnosed=mistake is not None,
        )
    expect_close(weights, reference_weights(q, k, mask), "weights", dtype)


# --------------------------------------------------------------------------------------
# scaled_dot_product_attention


@pytest.mark.points(2, hint="use k.transpose(-2, -1), which works for any number of leading batch dimensions")
def test_attention_shapes_for_any_batch_dims(student, device):
    """Output (..., Nq, dv) and weights (..., Nq, Nk) for 0, 1 and 2 batch dims, Nq != Nk and N = 1."""
    cases = [
        ((5, 8), (7, 8), (7, 4)),
        ((2, 5, 8), (2, 7, 8), (2, 7, 3)),
        ((2, 3, 5, 8), (2, 3, 7, 8), (2, 3, 7, 6)),
        ((4, 1, 8), (4, 1, 8), (4, 1, 8)),
    ]
    for q_shape, k_shape, v_shape in cases:
        q, k, v = (randn(*s, device=device, seed=i) for i, s in enumerate((q_shape, k_shape, v_shape)))
        result = student.scaled_dot_product_attention(q, k, v)
        expect(isinstance(result, tuple) and len(result) == 2, "return a tuple (output, weights)")
        output, weights = result
        where = f" for q {q_shape}, k {k_shape}, v {v_shape}"
        expect_tensor(output, "output" + where, shape=q_shape[:-1] + v_shape[-1:])
        expect_tensor(weights, "weights" + where, shape=q_shape[:-1] + k_shape[-2:-1])


@pytest.mark.points(3, hint="scores = q @ k^T / sqrt(d_k), softmax over the last (key) dimension, then @ v")
def test_attention_matches_pytorch_in_float32(student, device):
    """Output equals F.scaled_dot_product_attention and weights equal softmax(q k^T / sqrt(d_k)), d_k = 64."""
    q, k, v = (
        randn(2, 3, 6, 64, device=device, seed=1),
        randn(2, 3, 9, 64, device=device, seed=2),
        randn(2, 3, 9, 16, device=device, seed=3),
    )
    output, weights = student.scaled_dot_product_attention(q, k, v)
    expect_attention_matches(output, weights, q, k, v)


@pytest.mark.points(2, hint="masked_fill(~mask, float('-inf')) before the softmax gives exactly 0")
def test_masked_weights_are_exactly_zero(student, device):
    """Masked keys get weight exactly 0 and the output matches PyTorch, for broadcast masks of several shapes."""
    q, k, v = (
        randn(2, 3, 5, 16, device=device, seed=4),
        randn(2, 3, 7, 16, device=device, seed=5),
        randn(2, 3, 7, 8, device=device, seed=6),
    )
    for mask_shape in [(2, 3, 5, 7), (5, 7), (2, 1, 1, 7)]:
        mask = random_mask(*mask_shape, device=device, seed=len(mask_shape))
        output, weights = student.scaled_dot_product_attention(q, k, v, mask=mask)
        expect_tensor(weights, f"weights with a mask of shape {mask_shape}", shape=(2, 3, 5, 7))
        full_mask = mask.expand(2, 3, 5, 7)
        masked = weights[~full_mask]
        expect(
            bool((masked == 0).all()),
            f"with a mask of shape {mask_shape}, masked positions have weights up to {masked.abs().max().item():.3g}; "
            "they must be exactly 0",
        )
        expect_attention_matches(output, weights, q, k, v, mask=mask)


@pytest.mark.points(1, hint="softmax over dim=-1 normalises each query's weights over the keys")
def test_attention_weight_rows_sum_to_one(student, device):
    """Each query's weights over the keys sum to 1, with and without a mask."""
    q, k, v = (
        randn(3, 6, 8, device=device, seed=7),
        randn(3, 10, 8, device=device, seed=8),
        randn(3, 10, 8, device=device, seed=9),
    )
    for mask in [None, random_mask(3, 6, 10, device=device, seed=10)]:
        _, weights = student.scaled_dot_product_attention(q, k, v, mask=mask)
        expect_tensor(weights, "weights", shape=(3, 6, 10))
        sums = weights.double().sum(-1)
        expect(
            torch.allclose(sums, torch.ones_like(sums), atol=1e-5),
            f"weight rows sum to values between {sums.min().item():.4g} and {sums.max().item():.4g}, not 1"
            + (" (with a mask)" if mask is not None else ""),
        )


@pytest.mark.points(2, hint="don't convert to float32 inside; tensors you create must take the input's dtype")
def test_attention_keeps_half_precision(student, device):
    """float16 and bfloat16 inputs give outputs and weights in the same dtype, numerically right."""
    for dtype in (torch.float16, torch.bfloat16):
        q, k, v = (randn(2, 4, 5, 16, device=device, dtype=dtype, seed=s) for s in (11, 12, 13))
        mask = random_mask(4, 5, 5, device=device, seed=14)
        output, weights = student.scaled_dot_product_attention(q, k, v, mask=mask)
        expect_tensor(output, f"output for {dtype} inputs", dtype=dtype)
        expect_tensor(weights, f"weights for {dtype} inputs", dtype=dtype)
        expect_attention_matches(output, weights, q, k, v, mask=mask, dtype=dtype)


# --------------------------------------------------------------------------------------
# SelfAttention


@pytest.mark.points(
    1, hint="q_proj, k_proj, v_proj = nn.Linear(embed_dim, head_dim, bias=False); head_dim defaults to embed_dim"
)
def test_self_attention_projections_follow_the_spec(student, device):
    """q_proj, k_proj and v_proj are bias-free linear maps from embed_dim to head_dim (default embed_dim)."""
    for args, head_dim in [((12, 4), 4), ((12,), 12)]:
        module = student.SelfAttention(*args)
        for name in ("q_proj", "k_proj", "v_proj"):
            layer = getattr(module, name)
            expect_tensor(layer.weight, f"SelfAttention{args}.{name}.weight", shape=(head_dim, 12))
            expect(layer.bias is None, f"SelfAttention{args}.{name} has a bias; the spec asks for bias=False")


@pytest.mark.points(3, hint="q, k, v come from q_proj, k_proj, v_proj of x; then your scaled_dot_product_attention")
def test_self_attention_matches_formula_with_its_own_weights(student, device):
    """SelfAttention(x) = softmax(Q K^T / sqrt(d)) V from the module's own q/k/v weights, with and without a mask."""
    module = student.SelfAttention(16, 8).to(device)
    wq, wk, wv = (getattr(module, n).weight.double() for n in ("q_proj", "k_proj", "v_proj"))
    x = randn(3, 7, 16, device=device, seed=15)
    for mask in [None, random_mask(3, 7, 7, device=device, seed=16)]:
        q, k, v = x.double() @ wq.T, x.double() @ wk.T, x.double() @ wv.T
        expected = reference_weights(q, k, mask) @ v
        actual = module(x) if mask is None else module(x, mask=mask)
        expect_tensor(actual, "SelfAttention output", shape=(3, 7, 8))
        if not close(actual, expected, torch.float32):
            mistake = diagnose_attention(actual, q, k, v, mask)
            raise Feedback(
                "SelfAttention's output differs from attention over its own q/k/v projections"
                + (" with a mask" if mask is not None else "")
                + (f"; it matches the result of this mistake: {mistake}" if mistake else ""),
                diagnosed=mistake is not None,
            )


@pytest.mark.points(2, hint="nothing in self-attention depends on position: no position-dependent term may sneak in")
def test_self_attention_is_permutation_equivariant(student, device):
    """Permuting the input tokens permutes the output tokens the same way: f(x[:, p]) == f(x)[:, p]."""
    module = student.SelfAttention(16, 16).to(device)
    x = randn(2, 9, 16, device=device, seed=17)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(0)).to(device)
    out, out_of_permuted = module(x), module(x[:, perm])
    expect_tensor(out, "SelfAttention output", shape=(2, 9, 16))
    expect(
        close(out_of_permuted, out[:, perm], torch.float32),
        "SelfAttention(x[:, perm]) differs from SelfAttention(x)[:, perm]: the layer is not permutation equivariant",
    )


# --------------------------------------------------------------------------------------
# positional encodings


def reference_sinusoidal(num_positions, dim):
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]
    column = torch.arange(dim)
    two_i = (column - column % 2).double()
    angle = position / 10000 ** (two_i / dim)
    return torch.where(column % 2 == 0, torch.sin(angle), torch.cos(angle))


def diagnose_sinusoidal(table, num_positions, dim):
    expected = reference_sinusoidal(num_positions, dim)
    half = dim // 2
    angle_first_half = torch.arange(num_positions, dtype=torch.float64)[:, None] / 10000 ** (
        torch.arange(0, dim, 2, dtype=torch.float64) / dim
    )
    candidates = {
        "sin and cos swapped: even columns take sin, odd columns take cos": torch.stack(
            [expected[:, 1::2], expected[:, 0::2]], dim=-1
        ).reshape(num_positions, dim),
        "sin in the first half and cos in the second: the spec interleaves them (sin at 2i, cos at 2i+1)": torch.cat(
            [torch.sin(angle_first_half[:, :half]), torch.cos(angle_first_half[:, :half])], dim=-1
        ),
        "exponent i/dim instead of 2i/dim": reference_sinusoidal_with_exponent(num_positions, dim, lambda i: i / dim),
    }
    for mistake, candidate in candidates.items():
        if close(table, candidate.float(), torch.float32):
            return mistake
    return None


def reference_sinusoidal_with_exponent(num_positions, dim, exponent):
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]
    column = torch.arange(dim)
    angle = position / 10000 ** exponent((column // 2).double())
    return torch.where(column % 2 == 0, torch.sin(angle), torch.cos(angle))


@pytest.mark.points(2, hint="PE[p, 2i] = sin(p / 10000^(2i/dim)) and PE[p, 2i+1] = cos(p / 10000^(2i/dim))")
def test_sinusoidal_encoding_matches_formula(student, device):
    """The table has shape (num_positions, dim), dtype float32, and the values of the formula."""
    for num_positions, dim in [(50, 16), (7, 6), (128, 64)]:
        table = student.sinusoidal_positional_encoding(num_positions, dim)
        expect_tensor(table, f"sinusoidal_positional_encoding({num_positions}, {dim})", shape=(num_positions, dim))
        expect(table.dtype == torch.float32, f"the table has dtype {table.dtype}; the spec asks for float32")
        if not close(table, reference_sinusoidal(num_positions, dim).float(), torch.float32):
            mistake = diagnose_sinusoidal(table, num_positions, dim)
            raise Feedback(
                f"sinusoidal_positional_encoding({num_positions}, {dim}) has wrong values"
                + (f"; it matches this mistake: {mistake}" if mistake else ""),
                diagnosed=mistake is not None,
            )


@pytest.mark.points(2, hint="forward returns x + pe[:N] for an input of N positions")
def test_positional_encoding_adds_the_sinusoidal_table(student, device):
    """PositionalEncoding(dim)(x) = x + PE[:N] for inputs shorter than max_len."""
    module = student.PositionalEncoding(32, max_len=100).to(device)
    for n in (1, 17, 100):
        x = randn(2, n, 32, device=device, seed=n)
        expected = x.double() + reference_sinusoidal(100, 32)[:n].to(device)
        expect_close(module(x), expected, f"PositionalEncoding output for N = {n}")


@pytest.mark.points(1, hint="self.register_buffer('pe', table): a buffer is saved and moved by .to(), not trained")
def test_positional_encoding_table_is_a_buffer_that_moves(student, device):
    """`pe` is a registered buffer (not a parameter) and follows the module to another device."""
    module = student.PositionalEncoding(8, max_len=20)
    buffers = dict(module.named_buffers())
    expect("pe" in buffers, "PositionalEncoding has no buffer named `pe` (use self.register_buffer)")
    expect("pe" not in dict(module.named_parameters()), "`pe` should be a buffer, not a trainable parameter")
    expect_tensor(buffers["pe"], "PositionalEncoding.pe", shape=(20, 8))
    moved = module.to("meta")
    expect_tensor(moved.pe, "PositionalEncoding.pe after .to('meta')", device="meta")


@pytest.mark.points(
    2, hint="self.pos_embedding = nn.Parameter(...) of shape (max_len, dim); forward adds its first N rows"
)
def test_learned_encoding_is_a_trained_parameter(student, probe, device):
    """pos_embedding is a (max_len, dim) parameter, forward adds its first N rows, and only those rows get gradient."""
    module = student.LearnedPositionalEncoding(12, 8).to(device)
    params = dict(module.named_parameters())
    expect("pos_embedding" in params, "LearnedPositionalEncoding has no parameter named `pos_embedding`")
    table = params["pos_embedding"]
    expect_tensor(table, "pos_embedding", shape=(12, 8))
    x = randn(3, 5, 8, device=device, seed=18)
    expect_close(module(x), x.double() + table.double()[:5], "LearnedPositionalEncoding output")
    grads = probe("gradients", module, x)["params"]["pos_embedding"]
    expect(grads is not None, "no gradient reached pos_embedding: is it an nn.Parameter?")
    expect(bool((grads[:5] != 0).all()), "the first N rows of pos_embedding should receive gradient")
    expect(bool((grads[5:] == 0).all()), "rows beyond the sequence length received gradient: slice [:N] positions")


# --------------------------------------------------------------------------------------
# memory and GPU-readiness


@pytest.mark.points(
    2, hint="the N x N weights are inherent to attention, but build them with one matmul, not a (B, N, N, d) broadcast"
)
def test_attention_memory_grows_quadratically_with_sequence_length(student, probe):
    """Peak memory of SelfAttention forward + backward grows as N^2 (log-log slope), with a small constant."""
    # measured on the CPU whatever --device says, so that a grade never depends on the
    # device's choice of attention kernel
    embed_dim, sizes = 8, [64, 128, 256, 512]
    module = student.SelfAttention(embed_dim)
    peaks = []
    for n in sizes:
        x = randn(1, n, embed_dim, seed=n).requires_grad_()
        peaks.append(probe("peak_memory", module, x))
    slope = loglog_slope(sizes, peaks)
    matrices = peaks[-1] / (sizes[-1] ** 2 * 4)
    expect(
        1.8 <= slope <= 2.2,
        f"peak memory grew as N^{slope:.2f} over N = {sizes}; "
        "attention that materialises its N x N weights grows as N^2"
        + (
            " (did SelfAttention call a fused kernel instead of your scaled_dot_product_attention?)"
            if slope < 1.8
            else ""
        ),
    )
    expect(
        matrices <= 8,
        f"at N = {sizes[-1]} the peak is {matrices:.0f} times one N x N float32 matrix; a few suffice. "
        "Something of size N x N x d is being created.",
    )


@pytest.mark.points(1, hint="nothing in SelfAttention may create tensors on a fixed device")
def test_attention_memory_on_meta_device_reaches_16k_tokens(student, probe, device):
    """On the meta device, forward + backward memory still grows as N^2 up to N = 16384, without allocating."""
    sizes = [2048, 4096, 8192, 16384]
    module = student.SelfAttention(16).to("meta")
    peaks = [probe("peak_memory", module, torch.empty(1, n, 16, device="meta").requires_grad_()) for n in sizes]
    slope = loglog_slope(sizes, peaks)
    expect(1.8 <= slope <= 2.2, f"on the meta device peak memory grew as N^{slope:.2f}, not N^2")


@pytest.mark.points(2, hint="tensors created in forward must use the input's device: torch.zeros(..., device=x.device)")
def test_everything_runs_on_the_meta_device(student, device):
    """Every graded name takes and returns meta tensors of the right shape (a stand-in for 'runs on GPU')."""
    q, k, v = (
        torch.empty(2, 4, 16, device="meta"),
        torch.empty(2, 6, 16, device="meta"),
        torch.empty(2, 6, 8, device="meta"),
    )
    mask = torch.ones(2, 4, 6, dtype=torch.bool, device="meta")
    output, weights = student.scaled_dot_product_attention(q, k, v, mask=mask)
    expect_tensor(output, "scaled_dot_product_attention output on meta", shape=(2, 4, 8), device="meta")
    expect_tensor(weights, "scaled_dot_product_attention weights on meta", shape=(2, 4, 6), device="meta")
    x = torch.empty(2, 5, 16, device="meta")
    for name, module in [
        ("SelfAttention", student.SelfAttention(16).to("meta")),
        ("PositionalEncoding", student.PositionalEncoding(16, max_len=10).to("meta")),
        ("LearnedPositionalEncoding", student.LearnedPositionalEncoding(10, 16).to("meta")),
    ]:
        expect_tensor(module(x), f"{name} output on meta", shape=(2, 5, 16), device="meta")


@pytest.mark.points(1, hint="add the encoding in the input's dtype: self.pe[:N].to(x.dtype)")
def test_modules_keep_half_precision(student, device):
    """Half-precision modules and inputs give half-precision outputs (float16 and bfloat16)."""
    for dtype in (torch.float16, torch.bfloat16):
        x = randn(2, 5, 16, device=device, dtype=dtype, seed=19)
        attention = student.SelfAttention(16).to(device=device, dtype=dtype)
        expect_tensor(attention(x), f"SelfAttention output for {dtype}", dtype=dtype)
        # the encodings are often kept in float32 while activations are half: the output keeps x's dtype
        for name, module in [
            ("PositionalEncoding", student.PositionalEncoding(16, max_len=10).to(device)),
            ("LearnedPositionalEncoding", student.LearnedPositionalEncoding(10, 16).to(device)),
        ]:
            expect_tensor(module(x), f"{name} output for a {dtype} input", dtype=dtype)


@pytest.mark.points(2, hint="batched matmul handles every batch item and position at once: no Python loop")
def test_no_python_loop_over_batch_items_or_positions(student, probe, device):
    """The number of dispatched tensor ops does not grow with the batch size or the sequence length."""

    def ops(fn, *args):
        return probe("count_ops", fn, *args)

    def attention_inputs(batch, n):
        return tuple(randn(batch, n, 8, device=device, seed=s) for s in (20, 21, 22))

    sdpa = student.scaled_dot_product_attention
    module = student.SelfAttention(8).to(device)
    for name, fn, small, large in [
        ("scaled_dot_product_attention", sdpa, attention_inputs(1, 6), attention_inputs(6, 6)),
        ("SelfAttention", module, (randn(1, 6, 8, device=device),), (randn(6, 6, 8, device=device),)),
    ]:
        n_small, n_large = ops(fn, *small), ops(fn, *large)
        expect(
            n_small == n_large,
            f"{name} runs {n_small} tensor ops for batch size 1 but {n_large} for 6: a loop over batch items",
        )
    n_short, n_long = ops(sdpa, *attention_inputs(2, 3)), ops(sdpa, *attention_inputs(2, 12))
    expect(
        n_short == n_long,
        f"scaled_dot_product_attention runs {n_short} ops for N = 3 but {n_long} for N = 12: a loop over positions",
    )
