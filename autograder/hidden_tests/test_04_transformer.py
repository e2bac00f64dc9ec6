"""Hidden tests for 04_transformer.

The student's modules run in another process (``student``). Expected values come from
PyTorch's own ``nn.TransformerEncoderLayer``, ``nn.TransformerDecoderLayer`` and
``nn.TransformerEncoder`` (dropout 0, GELU, batch first), whose randomised weights are
loaded into the student's modules, never from stored outputs. PyTorch's boolean masks
mean "masked out" where the course's mean "may attend", so every mask is inverted on
its way to PyTorch.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autograder.feedback import Feedback, close, expect, expect_tensor, loglog_slope, randn

E, H = 12, 3  # embedding size and heads of most tests: head size 4
SPEC_NAMES = (
    "attn / self_attn / cross_attn (each with q_proj, k_proj, v_proj, out_proj), norm1, norm2 (norm3), mlp.fc1, mlp.fc2"
)


# --------------------------------------------------------------------------------------
# PyTorch's reference layers and their weights in the course's names


def randomise(module, seed):
    """Perturb every parameter, so that no two LayerNorms or biases are alike (by default
    they are all ones and zeros, and a swapped norm would go unnoticed)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))
    return module


def round_to(module, dtype):
    """Round the parameters to ``dtype`` and back, so that a half-precision copy holds exactly them."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(parameter.to(dtype).to(parameter.dtype))
    return module


def reference_encoder_layer(norm_first, mlp_ratio=4.0, seed=0, embed_dim=E, num_heads=H):
    """nn.TransformerEncoderLayer as the spec describes it, randomised, in float64.

    It stays in training mode (with dropout 0) so that PyTorch never takes its fused fast
    path: the reference is the plain composition of its modules.
    """
    layer = nn.TransformerEncoderLayer(
        embed_dim,
        num_heads,
        dim_feedforward=int(embed_dim * mlp_ratio),
        dropout=0.0,
        activation="gelu",
        batch_first=True,
        norm_first=norm_first,
    )
    return randomise(layer, seed).double()


def reference_decoder_layer(norm_first, mlp_ratio=4.0, seed=0):
    layer = nn.TransformerDecoderLayer(
        E,
        H,
        dim_feedforward=int(E * mlp_ratio),
        dropout=0.0,
        activation="gelu",
        batch_first=True,
        norm_first=norm_first,
    )
    return randomise(layer, seed).double()


def reference_encoder(num_layers, norm_first, seed=0, embed_dim=E, num_heads=H):
    layer = nn.TransformerEncoderLayer(
        embed_dim, num_heads, 4 * embed_dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=norm_first
    )
    norm = nn.LayerNorm(embed_dim) if norm_first else None
    encoder = nn.TransformerEncoder(layer, num_layers, norm=norm, enable_nested_tensor=False)
    return randomise(encoder, seed).double()


def linear_state(prefix, linear):
    return {f"{prefix}.weight": linear.weight, f"{prefix}.bias": linear.bias}


def attention_state(prefix, attention):
    """nn.MultiheadAttention's packed in_proj split into the spec's q_proj, k_proj, v_proj."""
    state = linear_state(f"{prefix}.out_proj", attention.out_proj)
    weights, biases = attention.in_proj_weight.chunk(3), attention.in_proj_bias.chunk(3)
    for name, weight, bias in zip(("q_proj", "k_proj", "v_proj"), weights, biases, strict=True):
        state[f"{prefix}.{name}.weight"], state[f"{prefix}.{name}.bias"] = weight, bias
    return state


def block_state(layer, prefix=""):
    """The course's names for the weights of an nn.TransformerEncoderLayer."""
    state = {
        **attention_state(f"{prefix}attn", layer.self_attn),
        **linear_state(f"{prefix}mlp.fc1", layer.linear1),
        **linear_state(f"{prefix}mlp.fc2", layer.linear2),
        **linear_state(f"{prefix}norm1", layer.norm1),
        **linear_state(f"{prefix}norm2", layer.norm2),
    }
    return state


def decoder_state(layer):
    """The course's names for the weights of an nn.TransformerDecoderLayer."""
    return {
        **attention_state("self_attn", layer.self_attn),
        **attention_state("cross_attn", layer.multihead_attn),
        **linear_state("mlp.fc1", layer.linear1),
        **linear_state("mlp.fc2", layer.linear2),
        **{f"norm{i}.{p}": getattr(getattr(layer, f"norm{i}"), p) for i in (1, 2, 3) for p in ("weight", "bias")},
    }


def encoder_state(encoder):
    state = {}
    for i, layer in enumerate(encoder.layers):
        state.update(block_state(layer, prefix=f"layers.{i}."))
    if encoder.norm is not None:
        state.update(linear_state("norm", encoder.norm))
    return state


def load_into(module, state, what, device, dtype=torch.float32):
    """Load the reference weights into the student's module, after checking names and shapes."""
    own = module.state_dict()
    for name, tensor in state.items():
        expect(
            name in own,
            f"{what} has no parameter `{name}`: name the submodules as the spec does ({SPEC_NAMES})",
        )
        shape = tuple(own[name].shape)
        if shape != tuple(tensor.shape):
            why = " (the hidden size of the MLP is int(embed_dim * mlp_ratio))" if ".fc" in name else ""
            raise Feedback(f"{what}.{name} has shape {shape}, expected {tuple(tensor.shape)}{why}")
    module.load_state_dict({k: v.detach().to(device=device, dtype=dtype) for k, v in state.items()}, strict=False)
    return module


def causal(n, device="cpu"):
    """(n, n) bool, True on and below the diagonal: the course's may-attend convention."""
    return torch.ones(n, n, dtype=torch.bool).tril().to(device)


def padding(lengths, n, device="cpu"):
    """(B, n) bool, True on the real tokens (the first ``length`` of each row)."""
    return (torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]).to(device)


def with_changes(layer, norm_first=None, activation=None, norm3_from_norm2=False):
    """A copy of a reference layer with one of the usual mistakes built in."""
    other = copy.deepcopy(layer)
    if norm_first is not None:
        other.norm_first = norm_first
    if activation is not None:
        other.activation = activation
    if norm3_from_norm2:
        other.norm3.load_state_dict(other.norm2.state_dict())
    return other


def with_one_head(layer):
    """The same weights run as a single head of size E: num_heads not passed on to the attention."""
    kind = type(layer)
    other = kind(
        E,
        1,
        dim_feedforward=layer.linear1.out_features,
        dropout=0.0,
        activation="gelu",
        batch_first=True,
        norm_first=layer.norm_first,
    ).double()
    other.load_state_dict(layer.state_dict())
    return other


def tanh_gelu(x):
    return F.gelu(x, approximate="tanh")


def first_match(actual, candidates):
    """The first mistake whose output the student's output reproduces, if any."""
    for mistake, make in candidates.items():
        try:
            expected = make()
        except RuntimeError:
            continue
        if close(actual, expected.float(), torch.float32):
            return mistake
    return None


def expect_matches(actual, expected, what, candidates, shape):
    expect_tensor(actual, what, shape=shape)
    if close(actual, expected, torch.float32):
        return
    mistake = first_match(actual, candidates)
    error = (actual.detach().double().cpu() - expected.double().cpu()).abs().max().item()
    raise Feedback(
        f"{what} differs from PyTorch's by up to {error:.3g}"
        + (f"; it matches the result of this mistake: {mistake}" if mistake else ""),
        diagnosed=mistake is not None,
    )


# --------------------------------------------------------------------------------------
# FeedForward


@pytest.mark.points(3, hint="fc2(F.gelu(fc1(x))): the exact GELU, x * Phi(x), is F.gelu's default")
def test_feed_forward_is_fc2_of_exact_gelu_of_fc1(student, device):
    """FeedForward(x) = fc2(GELU(fc1(x))) with the exact (erf) GELU; fc1 and fc2 are nn.Linear of the right sizes."""
    module = student.FeedForward(E, 20).to(device)
    for name, shape in [("fc1", (20, E)), ("fc2", (E, 20))]:
        layer = getattr(module, name)
        expect(layer._type == "Linear", f"FeedForward.{name} is a {layer._type}, expected nn.Linear")
        expect_tensor(layer.weight, f"FeedForward.{name}.weight", shape=shape)
        expect(layer.bias is not None, f"FeedForward.{name} should have a bias (nn.Linear's default)")
    w1, b1, w2, b2 = (
        p.double().cpu() for p in (module.fc1.weight, module.fc1.bias, module.fc2.weight, module.fc2.bias)
    )
    x = 2 * randn(3, 5, E, device=device, seed=1)  # pre-activations spread over [-4, 4]

    def through(activation):
        return F.linear(activation(F.linear(x.double().cpu(), w1, b1)), w2, b2)

    expect_matches(
        module(x),
        through(F.gelu),
        "FeedForward's output",
        {
            "the tanh approximation of GELU (approximate='tanh'); the spec asks for the exact GELU": lambda: through(
                tanh_gelu
            ),
            "ReLU instead of GELU": lambda: through(F.relu),
            "SiLU (swish) instead of GELU": lambda: through(F.silu),
            "no activation between fc1 and fc2": lambda: through(lambda h: h),
        },
        shape=(3, 5, E),
    )


# --------------------------------------------------------------------------------------
# TransformerBlock and TransformerDecoderBlock


def type_of(module, name):
    return getattr(module, name)._type


@pytest.mark.points(
    2,
    hint="attn = MultiHeadAttention(embed_dim, num_heads); norm1, norm2 = nn.LayerNorm(embed_dim); "
    "mlp = FeedForward(embed_dim, int(embed_dim * mlp_ratio))",
)
def test_block_layouts_follow_the_spec(student, device):
    """The blocks' submodules have the spec's names, types and sizes, with int(embed_dim * mlp_ratio) MLP units."""
    for mlp_ratio, hidden in [(2.5, 30), (None, 4 * E)]:
        kwargs = {} if mlp_ratio is None else {"mlp_ratio": mlp_ratio}
        ratio = f"mlp_ratio={mlp_ratio}" if mlp_ratio is not None else "the default mlp_ratio"
        block = student.TransformerBlock(E, H, **kwargs)
        decoder = student.TransformerDecoderBlock(E, H, **kwargs)
        for what, module, attentions, norms in [
            ("TransformerBlock", block, ("attn",), ("norm1", "norm2")),
            ("TransformerDecoderBlock", decoder, ("self_attn", "cross_attn"), ("norm1", "norm2", "norm3")),
        ]:
            for name in attentions:
                kind = type_of(module, name)
                expect(kind == "MultiHeadAttention", f"{what}.{name} is a {kind}, expected MultiHeadAttention")
            for name in norms:
                kind = type_of(module, name)
                expect(kind == "LayerNorm", f"{what}.{name} is a {kind}, expected nn.LayerNorm")
                shape = tuple(getattr(module, name).normalized_shape)
                expect(shape == (E,), f"{what}.{name} normalises a shape {shape}, expected ({E},)")
            expect(type_of(module, "mlp") == "FeedForward", f"{what}.mlp should be a FeedForward")
            expect_tensor(module.mlp.fc1.weight, f"{what}.mlp.fc1.weight with {ratio}", shape=(hidden, E))


def block_cases(device, batch=2, n=7):
    """(student's mask, PyTorch's keyword arguments): none, causal, and key padding."""
    pad = padding([n, n - 3], n)
    return [
        ("without a mask", None, {}),
        ("with a causal (N, N) mask", causal(n, device), {"src_mask": ~causal(n)}),
        ("with a (B, 1, 1, N) padding mask", pad[:, None, None, :].to(device), {"src_key_padding_mask": ~pad}),
    ]


def expect_block_matches(actual, layer, x, torch_kwargs, what):
    """Compare with the reference encoder layer, and name the usual mistake when the output reproduces one."""
    with torch.no_grad():
        candidates = {
            "pre-norm and post-norm swapped (norm_first=True is x + attn(norm1(x)), False is norm1(x + attn(x)))": (
                lambda: with_changes(layer, norm_first=not layer.norm_first)(x, **torch_kwargs)
            ),
            "ReLU instead of GELU in the MLP": lambda: with_changes(layer, activation=F.relu)(x, **torch_kwargs),
            "the tanh approximation of GELU": lambda: with_changes(layer, activation=tanh_gelu)(x, **torch_kwargs),
            "one attention head instead of num_heads": lambda: with_one_head(layer)(x, **torch_kwargs),
        }
        if torch_kwargs:
            candidates["the mask is not passed on to the attention"] = lambda: layer(x)
        expect_matches(actual, layer(x, **torch_kwargs), what, candidates, shape=x.shape)


def check_block(student, device, norm_first, mlp_ratio, seed):
    layer = reference_encoder_layer(norm_first, mlp_ratio, seed=seed)
    module = student.TransformerBlock(E, H, mlp_ratio=mlp_ratio, norm_first=norm_first).to(device)
    load_into(module, block_state(layer), "TransformerBlock", device)
    x = randn(2, 7, E, device=device, seed=seed)
    for case, mask, torch_kwargs in block_cases(device):
        actual = module(x) if mask is None else module(x, mask=mask)
        what = f"TransformerBlock(norm_first={norm_first}) output {case}"
        expect_block_matches(actual, layer, x.double().cpu(), torch_kwargs, what)


@pytest.mark.points(
    3, hint="pre-norm: x = x + attn(norm1(x), mask=mask); x = x + mlp(norm2(x)), the residual adds the un-normed x"
)
def test_pre_norm_block_matches_pytorch_encoder_layer(student, device):
    """A pre-norm TransformerBlock equals nn.TransformerEncoderLayer(norm_first=True) with the same weights.

    mlp_ratio=2; without a mask, with a causal mask and with a padding mask.
    """
    check_block(student, device, norm_first=True, mlp_ratio=2.0, seed=2)


@pytest.mark.points(3, hint="post-norm (the 2017 paper): x = norm1(x + attn(x, mask=mask)); x = norm2(x + mlp(x))")
def test_post_norm_block_matches_pytorch_encoder_layer(student, device):
    """A post-norm TransformerBlock equals nn.TransformerEncoderLayer(norm_first=False) with the same weights.

    Without a mask, with a causal mask and with a padding mask.
    """
    check_block(student, device, norm_first=False, mlp_ratio=4.0, seed=3)


def expect_decoder_matches(actual, layer, x, memory, torch_kwargs, what):
    """Compare with the reference decoder layer, and name the usual mistake when the output reproduces one."""

    def run(reference, **changes):
        return reference(x, memory, **{**torch_kwargs, **changes})

    with torch.no_grad():
        candidates = {
            "pre-norm and post-norm swapped": lambda: run(with_changes(layer, norm_first=not layer.norm_first)),
            "norm2 used before the MLP where norm3 belongs": lambda: run(with_changes(layer, norm3_from_norm2=True)),
            "ReLU instead of GELU in the MLP": lambda: run(with_changes(layer, activation=F.relu)),
            "the tanh approximation of GELU": lambda: run(with_changes(layer, activation=tanh_gelu)),
            "one attention head instead of num_heads": lambda: run(with_one_head(layer)),
        }
        if torch_kwargs:
            candidates["self_mask is not passed on to the self-attention"] = lambda: run(layer, tgt_mask=None)
            candidates["memory_mask is not passed on to the cross-attention"] = lambda: run(
                layer, memory_key_padding_mask=None
            )
        expect_matches(actual, run(layer), what, candidates, shape=x.shape)


def check_decoder_block(student, device, norm_first, seed):
    layer = reference_decoder_layer(norm_first, seed=seed)
    module = student.TransformerDecoderBlock(E, H, norm_first=norm_first).to(device)
    load_into(module, decoder_state(layer), "TransformerDecoderBlock", device)
    x, memory = randn(2, 6, E, device=device, seed=seed), randn(2, 5, E, device=device, seed=seed + 1)
    pad = padding([5, 3], 5)
    cases = [
        ("without masks", {}, {}),
        (
            "with a causal self_mask and a (B, 1, 1, S) memory_mask",
            {"self_mask": causal(6, device), "memory_mask": pad[:, None, None, :].to(device)},
            {"tgt_mask": ~causal(6), "memory_key_padding_mask": ~pad},
        ),
    ]
    for case, masks, torch_kwargs in cases:
        actual = module(x, memory, **masks)
        what = f"TransformerDecoderBlock(norm_first={norm_first}) output {case}"
        expect_decoder_matches(actual, layer, x.double().cpu(), memory.double().cpu(), torch_kwargs, what)


@pytest.mark.points(
    3,
    hint="x = x + self_attn(norm1(x), mask=self_mask); x = x + cross_attn(norm2(x), memory, mask=memory_mask); "
    "x = x + mlp(norm3(x)); keys and values of the cross-attention come from memory",
)
def test_pre_norm_decoder_block_matches_pytorch_decoder_layer(student, device):
    """A pre-norm TransformerDecoderBlock equals nn.TransformerDecoderLayer(norm_first=True) with the same weights.

    Without masks, and with a causal self_mask and a memory padding mask.
    """
    check_decoder_block(student, device, norm_first=True, seed=4)


@pytest.mark.points(
    2,
    hint="x = norm1(x + self_attn(x, mask=self_mask)); x = norm2(x + cross_attn(x, memory, mask=memory_mask)); "
    "x = norm3(x + mlp(x))",
)
def test_post_norm_decoder_block_matches_pytorch_decoder_layer(student, device):
    """A post-norm TransformerDecoderBlock equals nn.TransformerDecoderLayer(norm_first=False), same weights.

    Without masks, and with a causal self_mask and a memory padding mask.
    """
    check_decoder_block(student, device, norm_first=False, seed=5)


@pytest.mark.points(2, hint="pass self_mask to the self-attention; with a causal mask no query sees a later key")
def test_decoder_block_is_causal_with_a_causal_self_mask(student, device):
    """With a causal self_mask, changing the token at position j never changes a decoder output before j.

    It does change the output at j; both norm placements.
    """
    for norm_first in (True, False):
        module = student.TransformerDecoderBlock(E, H, norm_first=norm_first).to(device)
        x, memory = randn(2, 6, E, device=device, seed=6), randn(2, 4, E, device=device, seed=7)
        mask = causal(6, device)
        base = module(x, memory, self_mask=mask)
        expect_tensor(base, "TransformerDecoderBlock output", shape=(2, 6, E))
        for j in range(6):
            changed = x.clone()
            changed[:, j] += 3 * randn(2, E, device=device, seed=10 + j)
            out = module(changed, memory, self_mask=mask)
            leak = (out[:, :j] - base[:, :j]).abs().max().item() if j else 0.0
            expect(
                leak <= 1e-5,
                f"changing the token at position {j} changed the outputs at earlier positions by up to {leak:.3g} "
                f"(norm_first={norm_first}): information flows from the future",
            )
            expect(
                not close(out[:, j], base[:, j]),
                f"changing the token at position {j} did not change its own output (norm_first={norm_first})",
            )


# --------------------------------------------------------------------------------------
# causal_mask


@pytest.mark.points(2, hint="torch.ones(n, n, dtype=torch.bool, device=device).tril(): True on and below the diagonal")
def test_causal_mask_is_lower_triangular_on_the_requested_device(student, device):
    """causal_mask(n, device) is (n, n) bool, True on and below the diagonal, on the device asked for (meta too)."""
    for n in (1, 4, 7):
        mask = student.causal_mask(n)
        expect_tensor(mask, f"causal_mask({n})", shape=(n, n))
        expect(mask.dtype == torch.bool, f"causal_mask({n}) has dtype {mask.dtype}, expected torch.bool")
        expected = causal(n)
        if not torch.equal(mask.cpu(), expected):
            mistake = None
            if torch.equal(mask.cpu(), expected.T):
                mistake = "it is upper-triangular: True must mean 'may attend', so a query sees the keys up to itself"
            elif torch.equal(mask.cpu(), expected & ~torch.eye(n, dtype=torch.bool)):
                mistake = "the diagonal is False: each token may attend to itself (tril(), not tril(-1))"
            elif torch.equal(mask.cpu(), ~expected):
                mistake = "it is inverted: True must mean 'may attend' (PyTorch's own masks use the opposite)"
            raise Feedback(
                f"causal_mask({n}) is not True exactly on and below the diagonal" + (f"; {mistake}" if mistake else ""),
                diagnosed=mistake is not None,
            )
    for where in (device, torch.device("meta"), "meta"):
        mask = student.causal_mask(5, device=where)
        expect_tensor(mask, f"causal_mask(5, device={where!r})", shape=(5, 5), device=torch.device(where).type)


# --------------------------------------------------------------------------------------
# TransformerEncoder


@pytest.mark.points(
    2,
    hint="layers = nn.ModuleList([TransformerBlock(...) for _ in range(num_layers)]): a new block each time; "
    "norm = nn.LayerNorm(embed_dim) if norm_first else nn.Identity()",
)
def test_encoder_layout_follows_the_spec(student, device):
    """layers is an nn.ModuleList of num_layers independent TransformerBlocks; norm is LayerNorm or Identity.

    nn.LayerNorm for pre-norm, nn.Identity for post-norm.
    """
    per_block = 4 * (E * E + E) + 2 * (E * 4 * E) + 4 * E + E + 2 * 2 * E
    for num_layers, norm_first in [(3, True), (2, False)]:
        encoder = student.TransformerEncoder(num_layers, E, H, norm_first=norm_first)
        what = f"TransformerEncoder({num_layers}, norm_first={norm_first})"
        layers = encoder.layers
        expect(layers._type == "ModuleList", f"{what}.layers is a {layers._type}, expected nn.ModuleList")
        blocks = list(layers._modules.values())
        expect(len(blocks) == num_layers, f"{what}.layers holds {len(blocks)} blocks, expected {num_layers}")
        kinds = {block._type for block in blocks}
        expect(kinds == {"TransformerBlock"}, f"{what}.layers should hold TransformerBlocks, not {sorted(kinds)}")
        norm_kind = type_of(encoder, "norm")
        expected_kind = "LayerNorm" if norm_first else "Identity"
        expect(
            norm_kind == expected_kind,
            f"{what}.norm is a {norm_kind}, expected nn.{expected_kind}"
            + ("" if norm_first else ": post-norm blocks already end with a LayerNorm"),
        )
        count = sum(p.numel() for p in encoder.parameters())
        expected_count = num_layers * per_block + (2 * E if norm_first else 0)
        expect(
            count == expected_count,
            f"{what} has {count} parameters, expected {expected_count} for {num_layers} independent blocks"
            + (": do the layers share one block?" if count < expected_count else ""),
        )


def chain(layers, x, torch_kwargs):
    for layer in layers:
        x = layer(x, **torch_kwargs)
    return x


def expect_encoder_matches(actual, reference, x, torch_kwargs, what):
    """Compare with the reference encoder, and name the usual mistake when the output reproduces one."""
    layers = list(reference.layers)
    with torch.no_grad():
        candidates = {
            "the final norm is not applied after the last block": lambda: chain(layers, x, torch_kwargs),
            "one block applied num_layers times: the layers share their weights": lambda: chain(
                [layers[-1]] * len(layers), x, torch_kwargs
            ),
            "a final LayerNorm after post-norm blocks (norm should be nn.Identity())": lambda: F.layer_norm(
                chain(layers, x, torch_kwargs), (E,)
            ),
        }
        expect_matches(actual, reference(x, **torch_kwargs), what, candidates, shape=x.shape)


def stacks_its_own_blocks(module, x, mask, actual):
    """Whether the encoder's output is its own blocks applied in turn, then its own norm."""
    try:
        for block in module.layers._modules.values():
            x = block(x, mask=mask)
        return close(actual, module.norm(x), torch.float32)
    except Exception:  # noqa: BLE001 - any failure of the student's code means "no"
        return False


def check_encoder(student, device, norm_first, num_layers, seed):
    reference = reference_encoder(num_layers, norm_first, seed=seed)
    module = student.TransformerEncoder(num_layers, E, H, norm_first=norm_first).to(device)
    load_into(module, encoder_state(reference), "TransformerEncoder", device)
    x = randn(2, 7, E, device=device, seed=seed)
    pad = padding([7, 4], 7)
    for case, mask, torch_kwargs in [
        ("without a mask", None, {}),
        ("with a (B, 1, 1, N) padding mask", pad[:, None, None, :].to(device), {"src_key_padding_mask": ~pad}),
    ]:
        actual = module(x) if mask is None else module(x, mask=mask)
        what = f"TransformerEncoder({num_layers}, norm_first={norm_first}) output {case}"
        try:
            expect_encoder_matches(actual, reference, x.double().cpu(), torch_kwargs, what)
        except Feedback as failure:
            if failure.diagnosed or not stacks_its_own_blocks(module, x, mask, actual):
                raise
            raise Feedback(
                f"{failure}; the encoder does apply its own blocks in turn and then its norm, so the difference "
                f"comes from TransformerBlock(norm_first={norm_first}) itself: see the block tests",
                diagnosed=True,
            ) from None


@pytest.mark.points(3, hint="for layer in self.layers: x = layer(x, mask); then x = self.norm(x)")
def test_pre_norm_encoder_matches_pytorch_with_final_norm(student, device):
    """A pre-norm TransformerEncoder equals nn.TransformerEncoder of pre-norm layers plus a final LayerNorm.

    3 layers with the same weights, with and without a padding mask.
    """
    check_encoder(student, device, norm_first=True, num_layers=3, seed=8)


@pytest.mark.points(2, hint="post-norm blocks end with a LayerNorm already: norm = nn.Identity()")
def test_post_norm_encoder_matches_pytorch_without_final_norm(student, device):
    """A post-norm TransformerEncoder equals nn.TransformerEncoder of post-norm layers with no final norm.

    2 layers with the same weights, with and without a padding mask.
    """
    check_encoder(student, device, norm_first=False, num_layers=2, seed=9)


@pytest.mark.points(1, hint="without a mask and without positional encodings, nothing may depend on token order")
def test_encoder_is_permutation_equivariant_without_positions(student, device):
    """Without a mask, permuting the input tokens permutes the encoder's output tokens the same way."""
    module = student.TransformerEncoder(2, E, H).to(device)
    x = randn(2, 9, E, device=device, seed=11)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(0)).to(device)
    out = module(x)
    expect_tensor(out, "TransformerEncoder output", shape=(2, 9, E))
    expect(
        close(module(x[:, perm]), out[:, perm], torch.float32),
        "TransformerEncoder(x[:, perm]) differs from TransformerEncoder(x)[:, perm]: something depends on the order "
        "of the tokens (a mask applied when none is given?)",
    )


# --------------------------------------------------------------------------------------
# gradients, memory, devices and dtypes


@pytest.mark.points(2, hint="every submodule must take part in forward: norm3 before the MLP, the final norm last")
def test_gradients_reach_every_parameter(student, probe, device):
    """A loss on the output sends gradient to every parameter of a TransformerDecoderBlock and a TransformerEncoder."""
    # random weights, as in training: with a LayerNorm's initial weight of ones, the sum of its
    # output is constant and sends no gradient back at all
    decoder = load_into(
        student.TransformerDecoderBlock(E, H).to(device),
        decoder_state(reference_decoder_layer(True, seed=12)),
        "TransformerDecoderBlock",
        device,
    )
    encoder = load_into(
        student.TransformerEncoder(2, E, H).to(device),
        encoder_state(reference_encoder(2, True, seed=13)),
        "TransformerEncoder",
        device,
    )
    x, memory = randn(2, 6, E, device=device, seed=14), randn(2, 5, E, device=device, seed=15)
    for what, module, args in [
        ("TransformerDecoderBlock", decoder, (x, memory, causal(6, device), padding([5, 3], 5, device)[:, None, None])),
        ("TransformerEncoder", encoder, (x,)),
    ]:
        grads = probe("gradients", module, *args)["params"]
        missing = [name for name, grad in grads.items() if grad is None or not bool(grad.abs().sum() > 0)]
        expect(not missing, f"no gradient reaches {what}'s {', '.join(missing)}")


@pytest.mark.points(
    3,
    hint="each block keeps its (B, heads, N, N) attention weights for the backward pass; "
    "use num_heads heads and a new block per layer",
)
def test_attention_memory_grows_with_layers_heads_and_squared_length(student, probe):
    """Peak memory of an encoder's forward + backward grows as N^2, linearly in heads, and by equal steps per layer.

    Measured on the meta device, where nothing is allocated.
    """
    embed_dim = 16

    def peak(num_layers, num_heads, n):
        module = student.TransformerEncoder(num_layers, embed_dim, num_heads).to("meta")
        x = torch.empty(1, n, embed_dim, device="meta").requires_grad_()
        return probe("peak_memory", module, x)

    sizes = [512, 1024, 2048, 4096]
    slope = loglog_slope(sizes, [peak(2, 2, n) for n in sizes])
    expect(1.8 <= slope <= 2.2, f"peak memory grew as N^{slope:.2f} over N = {sizes}, not as N^2")
    heads = [1, 2, 4, 8]
    slope = loglog_slope(heads, [peak(2, h, 2048) for h in heads])
    expect(
        0.8 <= slope <= 1.2,
        f"peak memory grew as heads^{slope:.2f} over {heads} heads at N = 2048; every head has its own N x N "
        "weights, so it should grow linearly"
        + (" (is num_heads passed on to MultiHeadAttention?)" if slope < 0.8 else ""),
    )
    peaks = [peak(num_layers, 2, 2048) for num_layers in (1, 2, 3, 4)]
    steps = [b - a for a, b in zip(peaks, peaks[1:], strict=False)]
    one_matrix = 2 * 2048**2 * 4  # 2 heads of 2048 x 2048 float32 weights
    expect(
        min(steps) >= 0.5 * one_matrix and max(steps) <= 1.1 * min(steps),
        "every extra layer should add the same memory, at least its attention weights "
        f"({one_matrix / 2**20:.0f} MiB here); the steps were {', '.join(f'{s / 2**20:.1f}' for s in steps)} MiB",
    )


@pytest.mark.points(2, hint="tensors made in forward take the input's device: torch.ones(..., device=x.device)")
def test_everything_runs_on_the_meta_device(student, device):
    """Every graded module takes and returns meta tensors, and causal_mask builds one there (a stand-in for a GPU)."""
    meta = torch.device("meta")
    x, memory = torch.empty(2, 5, E, device=meta), torch.empty(2, 4, E, device=meta)
    self_mask = torch.ones(5, 5, dtype=torch.bool, device=meta)
    memory_mask = torch.ones(2, 1, 1, 4, dtype=torch.bool, device=meta)
    cases = [
        ("FeedForward", student.FeedForward(E, 20), (x,)),
        ("TransformerBlock", student.TransformerBlock(E, H), (x, self_mask)),
        ("TransformerBlock(norm_first=False)", student.TransformerBlock(E, H, norm_first=False), (x,)),
        ("TransformerDecoderBlock", student.TransformerDecoderBlock(E, H), (x, memory, self_mask, memory_mask)),
        ("TransformerEncoder", student.TransformerEncoder(2, E, H), (x,)),
    ]
    for what, module, args in cases:
        expect_tensor(module.to(meta)(*args), f"{what} output on meta", shape=(2, 5, E), device="meta")
    mask = student.causal_mask(5, device=meta)
    expect_tensor(mask, "causal_mask(5, device='meta')", shape=(5, 5), device="meta")


@pytest.mark.points(2, hint="keep the input's dtype all the way: no .float() inside forward")
def test_modules_keep_half_precision(student, device):
    """float16 and bfloat16 modules and inputs give outputs of the same dtype, close to the module's float32 output."""
    tolerance = {torch.float16: 1e-2, torch.bfloat16: 5e-2}  # relative error of the whole output
    for dtype in (torch.float16, torch.bfloat16):
        for norm_first in (True, False):
            # weights that half precision holds exactly, so that only the arithmetic differs
            state = block_state(round_to(reference_encoder_layer(norm_first, seed=16), dtype))
            single = student.TransformerBlock(E, H, norm_first=norm_first).to(device)
            half = student.TransformerBlock(E, H, norm_first=norm_first).to(device=device, dtype=dtype)
            load_into(single, state, "TransformerBlock", device)
            load_into(half, state, "TransformerBlock", device, dtype)
            x = randn(2, 7, E, device=device, dtype=dtype, seed=17)
            out = half(x, mask=causal(7, device))
            what = f"TransformerBlock(norm_first={norm_first}) output for {dtype}"
            expect_tensor(out, what, shape=(2, 7, E), dtype=dtype)
            expected = single(x.float(), mask=causal(7, device)).double().cpu()
            error = ((out.double().cpu() - expected).norm() / expected.norm()).item()
            expect(error <= tolerance[dtype], f"{what} is off from the float32 output by {error:.2%} of its size")
        x, memory = randn(2, 5, E, device=device, dtype=dtype), randn(2, 4, E, device=device, dtype=dtype)
        decoder = student.TransformerDecoderBlock(E, H).to(device=device, dtype=dtype)
        encoder = student.TransformerEncoder(2, E, H).to(device=device, dtype=dtype)
        feed_forward = student.FeedForward(E, 20).to(device=device, dtype=dtype)
        for what, out in [
            ("TransformerDecoderBlock", decoder(x, memory, self_mask=causal(5, device))),
            ("TransformerEncoder", encoder(x)),
            ("FeedForward", feed_forward(x)),
        ]:
            expect_tensor(out, f"{what} output for {dtype}", shape=(2, 5, E), dtype=dtype)
            expect(bool(torch.isfinite(out).all()), f"{what} output for {dtype} is not finite")


@pytest.mark.points(2, hint="attention handles every batch item and position at once: no Python loop over them")
def test_no_python_loop_over_batch_items_or_positions(student, probe, device):
    """The number of dispatched tensor ops of the blocks does not grow with the batch size or the sequence length."""
    block = student.TransformerBlock(E, H).to(device)
    decoder = student.TransformerDecoderBlock(E, H).to(device)

    def ops(module, batch, n):
        x, memory = randn(batch, n, E, device=device), randn(batch, 4, E, device=device, seed=1)
        args = (x, causal(n, device)) if module is block else (x, memory, causal(n, device))
        return probe("count_ops", module, *args)

    for what, module in [("TransformerBlock", block), ("TransformerDecoderBlock", decoder)]:
        # from 2 up: PyTorch's batched matmul takes a shorter path for a batch of one
        small, large = ops(module, 2, 6), ops(module, 5, 6)
        expect(small == large, f"{what} runs {small} tensor ops for batch size 2 but {large} for 5: a loop over items")
        short, long = ops(module, 2, 3), ops(module, 2, 9)
        expect(short == long, f"{what} runs {short} tensor ops for N = 3 but {long} for N = 9: a loop over positions")
