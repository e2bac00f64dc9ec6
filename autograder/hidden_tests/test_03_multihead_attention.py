"""Hidden tests for 03_multihead_attention.

The student's code runs in another process (``student``). Expected values come from
PyTorch's own ``nn.MultiheadAttention``, loaded with random weights that are then
copied into the student's module, never from stored outputs. A hand-written
reference with switchable mistakes only names the mistake once a check has failed.
"""

import pytest
import torch
from torch import nn

from autograder.feedback import Feedback, close, expect, expect_close, expect_tensor, loglog_slope, randn

E, H = 24, 4  # embed_dim and num_heads of most tests; head_dim d = 6 differs from H, so swapped sizes show
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")


# --------------------------------------------------------------------------------------
# references


def reference_state(embed_dim=E, bias=True, seed=0):
    """Random weights in nn.MultiheadAttention's layout (float64 holding float32 values).

    PyTorch initialises the biases to zero; random ones make a forgotten bias visible.
    """
    scale = embed_dim**-0.5
    state = {
        "in_proj_weight": randn(3 * embed_dim, embed_dim, seed=seed) * scale,
        "out_proj.weight": randn(embed_dim, embed_dim, seed=seed + 1) * scale,
    }
    if bias:
        state["in_proj_bias"] = 0.5 * randn(3 * embed_dim, seed=seed + 2)
        state["out_proj.bias"] = 0.5 * randn(embed_dim, seed=seed + 3)
    return {name: value.double() for name, value in state.items()}


def pytorch_attention(state, num_heads, device):
    """PyTorch's nn.MultiheadAttention (float64, batch first) holding ``state``."""
    embed_dim = state["out_proj.weight"].size(0)
    module = nn.MultiheadAttention(
        embed_dim, num_heads, bias="in_proj_bias" in state, batch_first=True, dtype=torch.float64, device=device
    )
    module.load_state_dict(state)
    return module.eval()


def student_state(state):
    """The same weights under the spec's names: in_proj_weight's rows are W_q, then W_k, then W_v."""
    embed_dim = state["out_proj.weight"].size(0)
    ours = {
        f"{role}_proj.weight": state["in_proj_weight"][i * embed_dim : (i + 1) * embed_dim]
        for i, role in enumerate("qkv")
    }
    ours["out_proj.weight"] = state["out_proj.weight"]
    if "in_proj_bias" in state:
        for i, role in enumerate("qkv"):
            ours[f"{role}_proj.bias"] = state["in_proj_bias"][i * embed_dim : (i + 1) * embed_dim]
        ours["out_proj.bias"] = state["out_proj.bias"]
    return ours


def student_module(student, state, num_heads, device, dtype=torch.float32):
    """The student's MultiHeadAttention holding ``state``, on ``device`` in ``dtype``."""
    embed_dim = state["out_proj.weight"].size(0)
    module = student.MultiHeadAttention(embed_dim, num_heads, bias="in_proj_bias" in state)
    load_weights(module, state)
    return module.to(device=device, dtype=dtype)


def load_weights(module, state):
    """Load ``state`` into the student's module, explaining a missing or superfluous projection or bias."""
    ours = student_state(state)
    missing, unexpected = module.load_state_dict({k: v.float() for k, v in ours.items()}, strict=False)
    expect(
        not unexpected,
        f"MultiHeadAttention has no parameter {', '.join(sorted(unexpected))}: the spec asks for attributes "
        "q_proj, k_proj, v_proj, out_proj, each nn.Linear(embed_dim, embed_dim, bias=bias)",
    )
    biases = sorted(name for name in missing if name in {f"{p}.bias" for p in PROJECTIONS})
    expect(not biases, f"with bias=False the module still has {', '.join(biases)}: pass bias=bias to nn.Linear")


def pytorch_mask(mask, batch, num_heads, n_q, n_k):
    """Our mask (True = may attend, broadcast to (B, H, Nq, Nk)) as nn.MultiheadAttention's attn_mask:
    (B * H, Nq, Nk) with True = may NOT attend."""
    return ~mask.expand(batch, num_heads, n_q, n_k).reshape(batch * num_heads, n_q, n_k)


def expected_attention(state, num_heads, query, key, value, mask=None):
    """(out (B, Nq, E), per-head weights (B, H, Nq, Nk)) from nn.MultiheadAttention, in float64."""
    reference = pytorch_attention(state, num_heads, query.device)
    attn_mask = None
    if mask is not None:
        attn_mask = pytorch_mask(mask, query.size(0), num_heads, query.size(1), key.size(1))
    with torch.no_grad():
        return reference(
            query.double(),
            key.double(),
            value.double(),
            attn_mask=attn_mask,
            need_weights=True,
            average_attn_weights=False,
        )


SPLITS = {
    "blocks": lambda t, h: t.unflatten(-1, (h, -1)).transpose(1, 2),
    "view": lambda t, h: t.reshape(t.size(0), h, t.size(1), -1),
    "strided": lambda t, h: t.unflatten(-1, (-1, h)).permute(0, 3, 1, 2),
}
MERGES = {
    "blocks": lambda t: t.transpose(1, 2).flatten(2),
    "view": lambda t: t.reshape(t.size(0), t.size(2), -1),
    "strided": lambda t: t.permute(0, 2, 3, 1).flatten(2),
}


def manual_attention(
    state, num_heads, query, key, value, mask=None, split="blocks", merge="blocks", scale=None, dim=-1, **change
):
    """Multi-head attention written out, in float64, with one of the usual mistakes switched on."""
    embed_dim = query.size(-1)
    state = {name: value.to(query.device) for name, value in state.items()}
    weight, bias = state["in_proj_weight"], state.get("in_proj_bias")

    def project(x, role):
        rows = slice(role * embed_dim, (role + 1) * embed_dim)
        y = x.double() @ weight[rows].T
        return y if bias is None else y + bias[rows]

    q, k = project(query, 0), project(key, 1)
    v = project(value, 1 if change.get("values_from_k_proj") else 2)
    q, k, v = (SPLITS[split](t, num_heads) for t in (q, k, v))
    scores = (q @ k.transpose(-2, -1)) * (scale if scale is not None else q.size(-1) ** -0.5)
    if mask is not None and not change.get("mask_ignored"):
        scores = scores.masked_fill(mask if change.get("mask_inverted") else ~mask, float("-inf"))
    weights = torch.softmax(scores, dim=dim)
    out = MERGES[merge](weights @ v)
    if not change.get("no_out_proj"):
        out = out @ state["out_proj.weight"].T
        if "out_proj.bias" in state:
            out = out + state["out_proj.bias"]
    return out, weights


def mistakes(num_heads, embed_dim, mask):
    d = embed_dim // num_heads
    candidates = {
        "split_heads reshapes (B, N, E) straight to (B, H, N, d), without the transpose "
        "(the classic view bug: whole tokens land in one head)": dict(split="view", merge="view"),
        "split_heads reshapes (B, N, E) straight to (B, H, N, d), without the transpose": dict(split="view"),
        "merge_heads reshapes (B, H, N, d) straight to (B, N, E), without transposing back": dict(merge="view"),
        "head h takes every H-th feature instead of the block h*d:(h+1)*d": dict(split="strided", merge="strided"),
        "scores scaled by 1/sqrt(embed_dim) instead of 1/sqrt(head_dim)": dict(scale=embed_dim**-0.5),
        "scores divided by head_dim instead of sqrt(head_dim)": dict(scale=1 / d),
        "scores not scaled": dict(scale=1.0),
        "softmax over the queries (dim=2 of (B, H, Nq, Nk)) instead of the keys (dim=-1)": dict(dim=2),
        "softmax over the heads (dim=1) instead of the keys (dim=-1)": dict(dim=1),
        "out_proj is not applied to the merged heads": dict(no_out_proj=True),
        "the values are projected with k_proj instead of v_proj": dict(values_from_k_proj=True),
    }
    if mask is not None:
        candidates["mask inverted: True must mean 'may attend' (nn.MultiheadAttention's masks mean the opposite)"] = (
            dict(mask_inverted=True)
        )
        candidates["mask ignored"] = dict(mask_ignored=True)
    return candidates


def diagnose(actual, state, num_heads, query, key, value, mask=None, weights=False):
    """The usual mistake that reproduces ``actual`` (the output, or the weights), if one does."""
    for mistake, change in mistakes(num_heads, query.size(-1), mask).items():
        try:
            candidate = manual_attention(state, num_heads, query, key, value, mask, **change)[1 if weights else 0]
        except RuntimeError:
            continue
        if close(actual, candidate.to(actual.device), torch.float32):
            return mistake
    return None


def expect_matches_pytorch(module, state, num_heads, query, key, value, mask=None, what="output"):
    result = module(query, key, value, mask=mask, need_weights=True)
    expect(isinstance(result, tuple) and len(result) == 2, "with need_weights=True, return a tuple (out, weights)")
    out, weights = result
    expected_out, _ = expected_attention(state, num_heads, query, key, value, mask)
    expect_tensor(out, what, shape=expected_out.shape)
    if mask is not None and not bool(torch.isfinite(out).all()):
        raise Feedback(
            f"{what} contains NaN: some query has every key masked, which a mask with True = 'may attend' never "
            "does here. Is the mask inverted (nn.MultiheadAttention's convention)?",
            diagnosed=True,
        )
    if not close(out, expected_out, torch.float32):
        mistake = diagnose(out, state, num_heads, query, key, value, mask)
        raise Feedback(
            f"{what} differs from nn.MultiheadAttention with the same weights"
            + (f"; it matches the result of this mistake: {mistake}" if mistake else ""),
            diagnosed=mistake is not None,
        )
    return weights


def random_mask(*shape, device="cpu", seed=0):
    """A boolean mask (True = may attend) with at least one key per query."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(*shape, generator=generator) > 0.4
    mask[..., 0] = True
    return mask.to(device)


# --------------------------------------------------------------------------------------
# split_heads and merge_heads


@pytest.mark.points(2, hint="x.reshape(B, N, H, d).transpose(1, 2): first cut the features, then move heads forward")
def test_split_heads_gives_head_h_the_features_h_d_to_h_plus_1_d(student, device):
    """split_heads(x (B, N, E), H) has shape (B, H, N, E/H) and out[:, h] == x[:, :, h*d:(h+1)*d]."""
    batch, n, embed_dim, num_heads = 2, 5, 12, 3
    d = embed_dim // num_heads
    x = randn(batch, n, embed_dim, device=device, seed=1)
    heads = student.split_heads(x, num_heads)
    expect_tensor(heads, "split_heads output", device=device.type)
    if tuple(heads.shape) == (batch, n, num_heads, d):
        raise Feedback(
            f"split_heads(x {tuple(x.shape)}, {num_heads}) returned (B, N, H, d) = {tuple(heads.shape)}: "
            "transpose(1, 2) to put the heads before the tokens, (B, H, N, d)",
            diagnosed=True,
        )
    expect_tensor(heads, f"split_heads(x {tuple(x.shape)}, {num_heads})", shape=(batch, num_heads, n, d))
    if not close(heads, SPLITS["blocks"](x, num_heads), torch.float32):
        for name, mistake in [
            (
                "view",
                "this is x.view(B, H, N, d) without the transpose: head 0 gets the first N*d numbers of the "
                "sequence (all of token 0, then part of token 1), not features 0:d of every token",
            ),
            ("strided", "head h gets every H-th feature (h, h + H, ...) instead of the block h*d:(h+1)*d"),
        ]:
            if close(heads, SPLITS[name](x, num_heads), torch.float32):
                raise Feedback(f"split_heads puts the wrong numbers in each head: {mistake}", diagnosed=True)
        raise Feedback("split_heads(x, H)[:, h] should be x[:, :, h*d:(h+1)*d], the features of head h")


@pytest.mark.points(2, hint="x.transpose(1, 2).reshape(B, N, H * d); a transposed tensor needs reshape, not view")
def test_merge_heads_inverts_split_heads(student, device):
    """merge_heads(x (B, H, N, d)) concatenates the heads per token, (B, N, H*d), and undoes split_heads."""
    batch, num_heads, n, d = 2, 3, 5, 4
    y = randn(batch, num_heads, n, d, device=device, seed=2)
    merged = student.merge_heads(y)
    expect_tensor(merged, f"merge_heads(x {tuple(y.shape)})", shape=(batch, n, num_heads * d))
    if not close(merged, MERGES["blocks"](y), torch.float32):
        mistake = None
        if close(merged, MERGES["view"](y), torch.float32):
            mistake = "this is x.reshape(B, N, H * d) without transposing the heads back behind the tokens"
        raise Feedback(
            "merge_heads(x)[:, n, h*d:(h+1)*d] should be x[:, h, n], head h's vector for token n"
            + (f"; {mistake}" if mistake else ""),
            diagnosed=mistake is not None,
        )
    x = randn(batch, n, num_heads * d, device=device, seed=3)
    expect_close(student.merge_heads(student.split_heads(x, num_heads)), x, "merge_heads(split_heads(x, H))")
    # heads stored token-major, as a transpose leaves them: not contiguous
    strided = randn(batch, n, num_heads, d, device=device, seed=4).transpose(1, 2)
    expect_close(student.merge_heads(strided), MERGES["blocks"](strided), "merge_heads of a non-contiguous input")


# --------------------------------------------------------------------------------------
# MultiHeadAttention: interface


@pytest.mark.points(1, hint="q_proj, k_proj, v_proj, out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)")
def test_projections_follow_the_spec(student, device):
    """Four nn.Linear(E, E) projections, with or without bias, and 4E^2 (+4E) parameters whatever num_heads."""
    for bias in (True, False):
        for num_heads in (1, 2, 8):
            module = student.MultiHeadAttention(E, num_heads, bias=bias)
            for name in PROJECTIONS:
                layer = getattr(module, name)
                where = f"MultiHeadAttention({E}, {num_heads}, bias={bias}).{name}"
                expect(layer._type == "Linear", f"{where} is a {layer._type}, expected nn.Linear")
                expect_tensor(layer.weight, f"{where}.weight", shape=(E, E))
                if bias:
                    expect_tensor(layer.bias, f"{where}.bias", shape=(E,))
                else:
                    expect(layer.bias is None, f"{where} has a bias; bias=False asks for none")
            count = sum(p.numel() for p in module.parameters())
            expected = 4 * E * E + (4 * E if bias else 0)
            expect(
                count == expected,
                f"MultiHeadAttention({E}, {num_heads}, bias={bias}) has {count} parameters, expected "
                f"4 E^2{' + 4 E' if bias else ''} = {expected}, the same for every number of heads",
            )


@pytest.mark.points(2, hint="return out alone unless need_weights=True, then (out, weights) with per-head weights")
def test_output_shapes_for_self_and_cross_attention(student, device):
    """out (B, Nq, E) alone, or (out, weights (B, H, Nq, Nk)) with need_weights, for Nq == Nk and Nq != Nk."""
    module = student.MultiHeadAttention(E, H).to(device)
    x, memory = randn(3, 5, E, device=device, seed=5), randn(3, 7, E, device=device, seed=6)
    for args, n_k, what in [((x,), 5, "self-attention"), ((x, memory), 7, "cross-attention (Nq = 5, Nk = 7)")]:
        out = module(*args)
        expect(
            isinstance(out, torch.Tensor),
            f"{what} with need_weights=False should return one tensor, not a {type(out).__name__}",
        )
        expect_tensor(out, f"{what} output", shape=(3, 5, E))
        result = module(*args, need_weights=True)
        expect(
            isinstance(result, tuple) and len(result) == 2,
            f"{what} with need_weights=True should return a tuple (out, weights)",
        )
        out, weights = result
        expect_tensor(out, f"{what} output with need_weights=True", shape=(3, 5, E))
        if isinstance(weights, torch.Tensor) and tuple(weights.shape) == (3, 5, n_k):
            raise Feedback(
                f"{what} weights have shape (B, Nq, Nk) = {tuple(weights.shape)}: return every head's weights, "
                f"(B, H, Nq, Nk) = (3, {H}, 5, {n_k}), without averaging over the heads",
                diagnosed=True,
            )
        expect_tensor(weights, f"{what} weights", shape=(3, H, 5, n_k))


@pytest.mark.points(1, hint="key = query if key is None else key; value = key if value is None else value")
def test_key_defaults_to_query_and_value_to_key(student, device):
    """forward(x) == forward(x, x, x) and forward(x, memory) == forward(x, memory, memory)."""
    module = student.MultiHeadAttention(E, H).to(device)
    x, memory = randn(2, 4, E, device=device, seed=7), randn(2, 6, E, device=device, seed=8)
    out = module(x)
    expect_tensor(out, "forward(x) with need_weights=False", shape=(2, 4, E))
    expect_close(out, module(x, x, x), "forward(x) compared with forward(x, x, x)")
    expect_close(
        module(x, memory), module(x, memory, memory), "forward(x, memory) compared with forward(x, memory, memory)"
    )


# --------------------------------------------------------------------------------------
# MultiHeadAttention: numerics against PyTorch


@pytest.mark.points(3, hint="project, split into heads, attend, merge the heads, then out_proj")
def test_matches_pytorch_multihead_attention(student, device):
    """Equal to nn.MultiheadAttention(batch_first=True) with copied weights, for self- and cross-attention."""
    state = reference_state(seed=10)
    module = student_module(student, state, H, device)
    x, memory, values = (
        randn(2, 5, E, device=device, seed=11),
        randn(2, 7, E, device=device, seed=12),
        randn(2, 7, E, device=device, seed=13),
    )
    expect_matches_pytorch(module, state, H, x, x, x, what="self-attention output")
    expect_matches_pytorch(module, state, H, x, memory, values, what="cross-attention output (Nq = 5, Nk = 7)")


@pytest.mark.points(
    3, hint="pass the mask on unchanged (True = may attend); nn.MultiheadAttention's masks mean the opposite"
)
def test_masks_match_pytorch(student, device):
    """Masks of shape (Nq, Nk), (B, 1, 1, Nk) and (B, H, Nq, Nk) give nn.MultiheadAttention's output.

    PyTorch's module gets each mask in its own convention, where True means "may not attend".
    """
    state = reference_state(seed=20)
    module = student_module(student, state, H, device)
    x, memory = randn(2, 5, E, device=device, seed=21), randn(2, 7, E, device=device, seed=22)
    causal = torch.ones(5, 5, dtype=torch.bool, device=device).tril()
    cases = [
        ("a causal (Nq, Nk) mask", x, causal),
        (
            "a (B, 1, 1, Nk) padding mask",
            memory,
            torch.tensor([[True] * 7, [True] * 3 + [False] * 4], device=device)[:, None, None, :],
        ),
        ("a (B, H, Nq, Nk) mask", memory, random_mask(2, H, 5, 7, device=device, seed=23)),
    ]
    for what, keys, mask in cases:
        weights = expect_matches_pytorch(module, state, H, x, keys, keys, mask, what=f"output with {what}")
        # the shape of the weights is test_per_head_weights_match_pytorch's business
        if isinstance(weights, torch.Tensor) and weights.shape == (2, H, 5, keys.size(1)):
            masked = weights[~mask.expand(weights.shape)]
            expect(bool((masked == 0).all()), f"with {what}, masked keys must get weight exactly 0 in every head")


@pytest.mark.points(2, hint="return the (B, H, Nq, Nk) weights of the attention call itself, one map per head")
def test_per_head_weights_match_pytorch(student, device):
    """need_weights=True returns the per-head weights of nn.MultiheadAttention(average_attn_weights=False)."""
    state = reference_state(seed=30)
    module = student_module(student, state, H, device)
    x, memory = randn(2, 5, E, device=device, seed=31), randn(2, 7, E, device=device, seed=32)
    mask = random_mask(2, 1, 5, 7, device=device, seed=33)
    out, weights = module(x, memory, mask=mask, need_weights=True)
    _, expected = expected_attention(state, H, x, memory, memory, mask)
    if isinstance(weights, torch.Tensor) and close(weights, expected.mean(1), torch.float32):
        raise Feedback(
            "the weights are averaged over the heads (nn.MultiheadAttention's default); return each head's",
            diagnosed=True,
        )
    expect_tensor(weights, "weights", shape=expected.shape)
    if not close(weights, expected, torch.float32):
        mistake = diagnose(weights, state, H, x, memory, memory, mask, weights=True)
        raise Feedback(
            "the per-head weights differ from nn.MultiheadAttention's (average_attn_weights=False)"
            + (f"; they match the result of this mistake: {mistake}" if mistake else ""),
            diagnosed=mistake is not None,
        )


@pytest.mark.points(1, hint="nn.Linear(embed_dim, embed_dim, bias=bias) for all four projections")
def test_bias_false_matches_pytorch(student, device):
    """MultiHeadAttention(E, H, bias=False) equals nn.MultiheadAttention(E, H, bias=False) with copied weights."""
    state = reference_state(bias=False, seed=40)
    module = student_module(student, state, H, device)
    x, memory = randn(2, 5, E, device=device, seed=41), randn(2, 6, E, device=device, seed=42)
    expect_matches_pytorch(module, state, H, x, memory, memory, what="output with bias=False")


# --------------------------------------------------------------------------------------
# MultiHeadAttention: structure


@pytest.mark.points(2, hint="head h must read only its own features h*d:(h+1)*d: reshape to (B, N, H, d), transpose")
def test_heads_are_independent(student, device):
    """Changing the rows h*d:(h+1)*d of q_proj (head h's queries) changes head h's weights and no other head's."""
    state = reference_state(seed=50)
    module = student_module(student, state, H, device)
    x = randn(2, 6, E, device=device, seed=51)
    _, before = module(x, need_weights=True)
    head, d = 1, E // H
    changed_state = dict(state)
    rows = slice(head * d, (head + 1) * d)
    changed_state["in_proj_weight"] = state["in_proj_weight"].clone()
    changed_state["in_proj_weight"][rows] += randn(d, E, seed=52).double()
    load_weights(module, changed_state)
    _, after = module(x, need_weights=True)
    expect_tensor(after, "weights", shape=(2, H, 6, 6))
    changed = [g for g in range(H) if not close(after[:, g], before[:, g], torch.float32)]
    expect(
        changed == [head],
        f"changing rows {rows.start}:{rows.stop} of q_proj (the queries of head {head}) changed the weights of "
        f"heads {changed}, expected head {head} alone: head h must own features h*d:(h+1)*d "
        "(a bare view to (B, H, N, d) mixes tokens and features across heads)",
    )


@pytest.mark.points(1, hint="nothing in self-attention may depend on where a token sits")
def test_self_attention_is_permutation_equivariant(student, device):
    """Without a mask, permuting the tokens permutes the output the same way: f(x[:, p]) == f(x)[:, p]."""
    module = student.MultiHeadAttention(E, H).to(device)
    x = randn(2, 9, E, device=device, seed=60)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(0)).to(device)
    out, out_of_permuted = module(x), module(x[:, perm])
    expect_tensor(out, "output", shape=(2, 9, E))
    expect(
        close(out_of_permuted, out[:, perm], torch.float32),
        "MultiHeadAttention(x[:, perm]) differs from MultiHeadAttention(x)[:, perm]: the layer is not "
        "permutation equivariant (does a reshape move numbers between tokens?)",
    )


@pytest.mark.points(2, hint="one batched attention call for all heads (B, H, N, d): no Python loop over heads")
def test_no_python_loop_over_heads_or_batch_items(student, probe, device):
    """The number of dispatched tensor ops does not grow with the number of heads or the batch size."""
    # from 2 heads and 2 sequences up: a size of 1 may take a different (shorter) path in PyTorch
    counts = {}
    for num_heads in (2, 4, 8):
        module = student.MultiHeadAttention(E, num_heads).to(device)
        for batch in (2, 5):
            counts[num_heads, batch] = probe("count_ops", module, randn(batch, 6, E, device=device, seed=batch))
    by_heads = [counts[num_heads, 2] for num_heads in (2, 4, 8)]
    expect(
        len(set(by_heads)) == 1,
        f"MultiHeadAttention runs {by_heads} tensor ops for 2, 4 and 8 heads: a loop over the heads; "
        "split into (B, H, N, d) and attend once",
    )
    expect(
        counts[4, 2] == counts[4, 5],
        f"MultiHeadAttention runs {counts[4, 2]} tensor ops for batch size 2 but {counts[4, 5]} for 5: "
        "a loop over batch items",
    )


@pytest.mark.points(
    2, hint="use the given scaled_dot_product_attention on (B, H, N, d): it stores one N x N map per head"
)
def test_attention_memory_grows_as_heads_times_n_squared(student, probe):
    """Peak memory of forward + backward grows as N^2 for a fixed H, and as H for a fixed N (log-log slopes)."""
    # measured on the CPU whatever --device says, so that a grade never depends on the
    # device's choice of attention kernel
    embed_dim = 32

    def peak(num_heads, n):
        module = student.MultiHeadAttention(embed_dim, num_heads)
        x = randn(1, n, embed_dim, seed=n).requires_grad_()
        return probe("peak_memory", module, x)

    lengths, heads = [128, 256, 512], [2, 4, 8, 16]
    peaks_n = [peak(4, n) for n in lengths]
    slope_n = loglog_slope(lengths, peaks_n)
    slope_h = loglog_slope(heads, [peak(num_heads, 256) for num_heads in heads])
    maps = peaks_n[-1] / (4 * lengths[-1] ** 2 * 4)
    expect(
        1.8 <= slope_n <= 2.2,
        f"with 4 heads, peak memory grew as N^{slope_n:.2f} over N = {lengths}; attention that stores its "
        "N x N weights grows as N^2"
        + (
            " (did you call a fused kernel instead of the given scaled_dot_product_attention?)" if slope_n < 1.8 else ""
        ),
    )
    expect(
        0.8 <= slope_h <= 1.2,
        f"at N = 256, peak memory grew as H^{slope_h:.2f} over H = {heads}; every head stores its own N x N map, "
        "so memory grows in proportion to H",
    )
    expect(
        maps <= 8,
        f"at N = {lengths[-1]} with 4 heads, the peak is {maps:.0f} times the 4 x N x N float32 attention maps; "
        "a few suffice. Something of size H x N x N x d is being created.",
    )


# --------------------------------------------------------------------------------------
# GPU-readiness and training


@pytest.mark.points(
    1, hint="tensors made in forward take the input's device (device=x.device), and nothing may read values (.item())"
)
def test_everything_runs_on_the_meta_device(student, device):
    """split_heads, merge_heads and MultiHeadAttention (with a mask and need_weights) work on meta tensors."""
    meta = torch.device("meta")
    heads = student.split_heads(torch.empty(2, 5, E, device=meta), H)
    expect_tensor(heads, "split_heads output on meta", shape=(2, H, 5, E // H), device="meta")
    merged = student.merge_heads(torch.empty(2, H, 5, E // H, device=meta))
    expect_tensor(merged, "merge_heads output on meta", shape=(2, 5, E), device="meta")
    module = student.MultiHeadAttention(E, H).to(meta)
    x, memory = torch.empty(2, 5, E, device=meta), torch.empty(2, 7, E, device=meta)
    expect_tensor(module(x), "self-attention output on meta", shape=(2, 5, E), device="meta")
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool, device=meta)
    out, weights = module(x, memory, mask=mask, need_weights=True)
    expect_tensor(out, "cross-attention output on meta", shape=(2, 5, E), device="meta")
    expect_tensor(weights, "weights on meta", shape=(2, H, 5, 7), device="meta")


@pytest.mark.points(2, hint="no .float() and no float32 tensors inside forward: keep the input's dtype")
def test_half_precision_keeps_its_dtype(student, device):
    """float16 and bfloat16 modules and inputs give outputs and weights in that dtype, numerically right."""
    for dtype in (torch.float16, torch.bfloat16):
        state = {k: v.to(dtype).double() for k, v in reference_state(seed=70).items()}  # representable in dtype
        module = student_module(student, state, H, device, dtype=dtype)
        x = randn(2, 5, E, device=device, dtype=dtype, seed=71)
        memory = randn(2, 7, E, device=device, dtype=dtype, seed=72)
        mask = random_mask(2, 1, 1, 7, device=device, seed=73)
        out, weights = module(x, memory, mask=mask, need_weights=True)
        expect_tensor(out, f"output for {dtype}", shape=(2, 5, E), dtype=dtype)
        expect_tensor(weights, f"weights for {dtype}", shape=(2, H, 5, 7), dtype=dtype)
        expected_out, expected_weights = expected_attention(state, H, x, memory, memory, mask)
        for name, actual, expected in [("output", out, expected_out), ("weights", weights, expected_weights)]:
            if not close(actual, expected, dtype):
                error = (actual.double().cpu() - expected.cpu()).abs().max().item()
                raise Feedback(
                    f"the {name} in {dtype} differ from nn.MultiheadAttention's by up to {error:.3g}, more than "
                    f"{dtype} rounding explains; if the float32 tests fail too, fix those first",
                    diagnosed=True,
                )


@pytest.mark.points(1, hint="every projection must take part in the forward pass")
def test_gradients_reach_every_parameter(student, probe, device):
    """A loss on the output of cross-attention sends gradient to every weight and bias."""
    module = student.MultiHeadAttention(E, H).to(device)
    x, memory = randn(2, 5, E, device=device, seed=80), randn(2, 7, E, device=device, seed=81)
    grads = probe("gradients", module, x, memory, mask=random_mask(2, 1, 1, 7, device=device, seed=82))["params"]
    # k_proj's bias adds the same q . b to every score of a row, which the softmax ignores:
    # its gradient is zero in exact arithmetic, so only its presence is checked
    missing = [
        name
        for name, grad in grads.items()
        if grad is None or (name != "k_proj.bias" and not bool(grad.abs().sum() > 0) and bool(grad.isfinite().all()))
    ]
    expect(not missing, f"no gradient reaches: {', '.join(missing)}")
    broken = [name for name, grad in grads.items() if not bool(grad.isfinite().all())]
    expect(not broken, f"the gradient of {', '.join(broken)} contains NaN or inf (a softmax over fully masked keys?)")
