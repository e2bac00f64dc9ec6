"""Hidden tests for 05_vision_transformer.

The student's code runs in another process (``student``). Expected values are computed
here: patches with ``torch.nn.functional.unfold`` and the module's own convolution
weights, the whole forward pass with PyTorch's own ``nn.TransformerEncoderLayer`` and
the model's weights copied in, parameter counts from PyTorch's own modules built on the
meta device, attention from ``F.scaled_dot_product_attention``; never stored outputs.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autograder.feedback import Feedback, close, expect, expect_close, expect_tensor, loglog_slope, randn

# a small ViT: 16 x 16 images, 4 x 4 patches -> a 4 x 4 grid of 16 patches, 17 tokens
SMALL = dict(
    image_size=16, patch_size=4, in_channels=3, num_classes=7, embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0
)
VIT_B16 = dict(image_size=224, patch_size=16, in_channels=3, num_classes=1000, embed_dim=768, depth=12, num_heads=12)
VIT_B16_PARAMETERS = 86_567_656


def conv_tolerance(device):
    """The tolerance for results computed through a float32 convolution. On CUDA, cuDNN may run
    them in TF32 (a 10-bit mantissa, about float16's precision); on the CPU they are exact float32."""
    return torch.float32 if torch.device(device).type == "cpu" else torch.float16


def small_vit(student, device, **changes):
    return student.VisionTransformer(**{**SMALL, **changes}).to(device)


def images_for(config, batch=2, device="cpu", seed=0):
    return randn(batch, config["in_channels"], config["image_size"], config["image_size"], device=device, seed=seed)


def children(module):
    """The student's sub-modules of ``module`` (an nn.ModuleList, say), as proxies, in order."""
    return list(module.children())


def expect_token_tables(model, config):
    """cls_token and pos_embed exist with the spec's shapes; returns them."""
    tokens = (config["image_size"] // config["patch_size"]) ** 2 + 1
    params = dict(model.named_parameters())
    for name in ("cls_token", "pos_embed"):
        expect(name in params, f"VisionTransformer has no parameter named `{name}` (an nn.Parameter)")
    expect_tensor(params["cls_token"], "cls_token", shape=(1, 1, config["embed_dim"]))
    expect_tensor(
        params["pos_embed"],
        "pos_embed (one row per patch plus one for the class token)",
        shape=(1, tokens, config["embed_dim"]),
    )
    return params["cls_token"], params["pos_embed"]


def randomise_token_tables(model, config, device, seed=0, pos_scale=1.0):
    """Give cls_token and pos_embed clearly non-zero values, whatever the student's initialisation."""
    cls, pos = expect_token_tables(model, config)
    model.load_state_dict(
        {
            "cls_token": randn(*cls.shape, device=device, seed=seed),
            "pos_embed": pos_scale * randn(*pos.shape, device=device, seed=seed + 1),
        },
        strict=False,
    )


def grid_tokens(images, patch_size):
    """(B, C, H, W) -> (B, N, C*P*P) patches in raster order, each flattened as (C, P, P)."""
    return F.unfold(images, kernel_size=patch_size, stride=patch_size).transpose(1, 2)


def reference_patch_embedding(images, weight, bias, patch_size):
    """Patch tokens (B, N, E) in raster order, from unfold and a convolution's weight (E, C, P, P) and bias."""
    patches = grid_tokens(images.double(), patch_size)  # (B, N, C*P*P)
    return patches @ weight.double().flatten(1).T + bias.double()


def column_major(tokens, grid):
    """Tokens (B, N, E) reordered as if the grid were read column by column."""
    b, n, e = tokens.shape
    return tokens.reshape(b, grid, grid, e).transpose(1, 2).reshape(b, n, e)


def reshaped_without_transpose(tokens, grid):
    """What (B, E, h, w).reshape(B, h*w, E) gives instead of .flatten(2).transpose(1, 2)."""
    b, n, e = tokens.shape
    return tokens.transpose(1, 2).reshape(b, n, e)


def diagnose_patch_order(actual, expected, grid, tolerance=torch.float32):
    candidates = {
        "the patches come column by column (column-major); read the grid row by row: .flatten(2) on (B, E, h, w)": (
            column_major(expected, grid)
        ),
        "(B, E, h, w) was reshaped to (B, h*w, E); flatten the grid and swap the axes: .flatten(2).transpose(1, 2)": (
            reshaped_without_transpose(expected, grid)
        ),
    }
    for mistake, candidate in candidates.items():
        if close(actual, candidate, tolerance):
            return mistake
    return None


# --------------------------------------------------------------------------------------
# attention_memory_bytes


def expected_memory(num_tokens, num_layers, num_heads, bytes_per_element=4):
    return num_tokens**2 * num_layers * num_heads * bytes_per_element


def diagnose_memory(value, args):
    exact = expected_memory(*args)
    tokens, layers, heads = args[:3]
    candidates = {
        "it is in MiB; return bytes": exact / 2**20,
        "it is in GiB; return bytes": exact / 2**30,
        "it is in MB (10^6 bytes); return bytes": exact / 10**6,
        "the factor num_heads is missing": exact // heads,
        "the factor num_layers is missing": exact // layers,
        "the bytes per element are missing": exact // 4,
        "num_tokens is not squared": exact // tokens,
    }
    for mistake, candidate in candidates.items():
        if isinstance(value, (int, float)) and abs(value - candidate) <= 1e-9 * abs(candidate):
            return mistake
    return None


@pytest.mark.points(2, hint="bytes = num_tokens**2 * num_layers * num_heads * bytes_per_element, in bytes")
def test_attention_memory_bytes_reproduces_the_notes(student, device):
    """48 layers x 16 heads in float32: 196 tokens give 118,013,952 bytes (112.5 MiB), 128 x 128 pixels 768 GiB."""
    for args, figure in [((196, 48, 16), "112.5 MiB"), ((128 * 128, 48, 16), "768 GiB")]:
        value = student.attention_memory_bytes(*args)
        exact = expected_memory(*args)
        if value != exact:
            mistake = diagnose_memory(value, args)
            raise Feedback(
                f"attention_memory_bytes{args} returned {value!r}; the notes' figure is {figure} = {exact:,} bytes"
                + (f": {mistake}" if mistake else ""),
                diagnosed=mistake is not None,
            )


@pytest.mark.points(1, hint="return the exact integer: no float arithmetic (math.pow, /), no unit conversion")
def test_attention_memory_bytes_is_an_exact_int_for_any_arguments(student, device):
    """Other sizes and bytes_per_element (keyword or positional) give the exact product, as a Python int."""
    cases = [((197, 12, 12), {}), ((1, 1, 1), {}), ((4097, 24, 16), {"bytes_per_element": 2}), ((50, 3, 5, 1), {})]
    for args, kwargs in cases:
        value = student.attention_memory_bytes(*args, **kwargs)
        call = f"attention_memory_bytes({', '.join([*map(str, args), *(f'{k}={v}' for k, v in kwargs.items())])})"
        expect(
            isinstance(value, int) and not isinstance(value, bool),
            f"{call} returned a {type(value).__name__}; return a Python int (bytes are whole numbers)",
        )
        exact = expected_memory(*args, **kwargs)
        expect(value == exact, f"{call} returned {value:,}, expected {exact:,}")


# --------------------------------------------------------------------------------------
# PatchEmbedding


@pytest.mark.points(1, hint="num_patches = (image_size // patch_size) ** 2: the grid has that many rows and columns")
def test_num_patches_is_the_grid_size_squared(student, device):
    """num_patches is the number of patches of the image: (image_size / patch_size)^2, e.g. 196 for 224 and 16."""
    for image_size, patch_size in [(224, 16), (32, 4), (12, 3), (8, 8)]:
        module = student.PatchEmbedding(image_size, patch_size, 3, 8)
        value = module.num_patches
        expected = (image_size // patch_size) ** 2
        expect(
            value == expected,
            f"PatchEmbedding({image_size}, {patch_size}, ...).num_patches is {value!r}, expected {expected}"
            + (" (the grid's side, not its area)" if value == image_size // patch_size else ""),
        )


@pytest.mark.points(
    1, hint="proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size): one output per patch"
)
def test_patch_embedding_follows_the_spec(student, device):
    """proj is an nn.Conv2d from in_channels to embed_dim with kernel_size = stride = patch_size."""
    for args in [(32, 4, 3, 8), (12, 3, 1, 5)]:
        image_size, patch_size, in_channels, embed_dim = args
        proj = student.PatchEmbedding(*args).proj
        expect(proj._type == "Conv2d", f"PatchEmbedding.proj is a {proj._type}, expected nn.Conv2d")
        expect_tensor(
            proj.weight, f"PatchEmbedding{args}.proj.weight", shape=(embed_dim, in_channels, patch_size, patch_size)
        )
        expect(proj.bias is not None, "PatchEmbedding.proj should have a bias (nn.Conv2d's default)")
        expect(
            tuple(proj.stride) == (patch_size, patch_size),
            f"proj has stride {tuple(proj.stride)}; with stride = patch_size the patches don't overlap",
        )


@pytest.mark.points(2, hint="flatten the (h, w) grid of the convolution's output and put embed_dim last: (B, N, E)")
def test_patch_embedding_output_shapes(student, device):
    """Output (B, num_patches, embed_dim) for several image sizes, patch sizes and channel counts."""
    cases = [(224, 16, 3, 24, 2), (32, 4, 1, 16, 3), (12, 3, 5, 8, 1), (8, 8, 3, 8, 2)]
    for image_size, patch_size, in_channels, embed_dim, batch in cases:
        module = student.PatchEmbedding(image_size, patch_size, in_channels, embed_dim).to(device)
        images = randn(batch, in_channels, image_size, image_size, device=device, seed=image_size)
        num_patches = (image_size // patch_size) ** 2
        expect_tensor(
            module(images),
            f"PatchEmbedding({image_size}, {patch_size}, {in_channels}, {embed_dim}) output for images "
            f"{tuple(images.shape)}",
            shape=(batch, num_patches, embed_dim),
        )


@pytest.mark.points(3, hint="proj(images).flatten(2).transpose(1, 2): token r * w + c is grid row r, column c")
def test_patches_are_in_raster_order(student, device):
    """Token r*w + c is the embedding of the patch in grid row r, column c (compared with unfold and proj's weights)."""
    for image_size, patch_size, in_channels, embed_dim in [(12, 4, 2, 6), (20, 5, 3, 4)]:
        module = student.PatchEmbedding(image_size, patch_size, in_channels, embed_dim).to(device)
        proj = module.proj
        images = randn(2, in_channels, image_size, image_size, device=device, seed=3)
        tokens = module(images)
        grid = image_size // patch_size
        expected = reference_patch_embedding(images, proj.weight, proj.bias, patch_size)
        expect_tensor(tokens, "PatchEmbedding output", shape=expected.shape)
        if not close(tokens, expected, conv_tolerance(device)):
            mistake = diagnose_patch_order(tokens, expected, grid, conv_tolerance(device))
            raise Feedback(
                "the patch embeddings are not the patches in raster order embedded by proj"
                + (f": {mistake}" if mistake else ""),
                diagnosed=mistake is not None,
            )


@pytest.mark.points(2, hint="each output token must come from one patch only: no reshape that mixes patches")
def test_each_token_depends_only_on_its_own_patch(student, device):
    """Changing the pixels of the patch in row r, column c changes token r * w + c and no other."""
    patch, grid = 4, 3
    module = student.PatchEmbedding(patch * grid, patch, 3, 8).to(device)
    images = randn(2, 3, patch * grid, patch * grid, device=device, seed=4)
    tokens = module(images)
    expect_tensor(tokens, "PatchEmbedding output", shape=(2, grid * grid, 8))
    for row, col in [(0, 2), (2, 1)]:
        changed_images = images.clone()
        block = (..., slice(row * patch, (row + 1) * patch), slice(col * patch, (col + 1) * patch))
        changed_images[block] += randn(2, 3, patch, patch, device=device, seed=5)
        difference = (module(changed_images) - tokens).abs().amax(dim=(0, 2))  # (N,)
        changed = sorted(torch.nonzero(difference > 1e-3).flatten().tolist())  # a changed token moves by ~1
        expected = row * grid + col
        if changed != [expected]:
            note = ""
            if changed == [col * grid + row]:
                note = f": token {col * grid + row} is where column-major order would put it; use raster order"
            elif len(changed) > 1:
                note = ": one patch leaks into several tokens, as (B, E, h, w).reshape(B, h*w, E) does"
            raise Feedback(
                f"changing the pixels of the patch in row {row}, column {col} of a {grid} x {grid} grid changed "
                f"tokens {changed}; it should change token {expected} (= {row} * {grid} + {col}) only" + note,
                diagnosed=bool(note),
            )


# --------------------------------------------------------------------------------------
# VisionTransformer: layout and parameters


def expect_pre_norm_blocks(blocks, embed_dim, device):
    """Each block computes x + attn(norm1(x)), then + mlp(norm2(.)), with its own parts."""
    x = randn(2, 5, embed_dim, device=device, seed=6)
    for index, block in enumerate(blocks):
        expect(
            block._type == "TransformerBlock",
            f"blocks[{index}] is a {block._type}, expected the given TransformerBlock",
        )
        h = x + block.attn(block.norm1(x))
        pre_norm = h + block.mlp(block.norm2(h))
        output = block(x)
        if not close(output, pre_norm, torch.float32):
            h = block.norm1(x + block.attn(x))
            post_norm = block.norm2(h + block.mlp(h))
            raise Feedback(
                f"blocks[{index}] is not a pre-norm block"
                + (
                    ": it is post-norm; ViT uses TransformerBlock(embed_dim, num_heads, mlp_ratio) with the default "
                    "norm_first=True"
                    if close(output, post_norm, torch.float32)
                    else ""
                ),
                diagnosed=close(output, post_norm, torch.float32),
            )


@pytest.mark.points(2, hint="follow the spec's attribute names and shapes: pos_embed has num_patches + 1 rows")
def test_vision_transformer_layout_follows_the_spec(student, device):
    """patch_embed, cls_token (1, 1, E), pos_embed (1, N + 1, E), blocks (pre-norm, depth of them), norm, head."""
    model = small_vit(student, device)
    expect(model.patch_embed._type == "PatchEmbedding", "patch_embed should be your PatchEmbedding")
    expect(
        model.patch_embed.num_patches == 16, "patch_embed.num_patches should be 16 for a 16 x 16 image, 4 x 4 patches"
    )
    expect_token_tables(model, SMALL)
    expect(model.blocks._type == "ModuleList", f"blocks is a {model.blocks._type}, expected nn.ModuleList")
    blocks = children(model.blocks)
    expect(len(blocks) == SMALL["depth"], f"blocks holds {len(blocks)} blocks, expected depth = {SMALL['depth']}")
    expect_pre_norm_blocks(blocks, SMALL["embed_dim"], device)
    expect(model.norm._type == "LayerNorm", f"norm is a {model.norm._type}, expected nn.LayerNorm")
    expect_tensor(model.norm.weight, "norm.weight", shape=(SMALL["embed_dim"],))
    expect(model.head._type == "Linear", f"head is a {model.head._type}, expected nn.Linear")
    expect_tensor(model.head.weight, "head.weight", shape=(SMALL["num_classes"], SMALL["embed_dim"]))


@pytest.mark.points(1, hint="one row of logits per image: the head reads one token (the class token) per image")
def test_vision_transformer_logits_have_shape_batch_by_classes(student, device):
    """Logits are (B, num_classes) for several image sizes, patch sizes, channel counts and batch sizes."""
    for changes, batch in [
        ({}, 3),
        ({"image_size": 28, "patch_size": 7, "in_channels": 1, "num_classes": 10}, 2),
        ({"image_size": 8, "patch_size": 8, "depth": 1}, 1),
    ]:
        config = {**SMALL, **changes}
        model = small_vit(student, device, **changes)
        expect_tensor(
            model(images_for(config, batch, device)),
            f"logits of VisionTransformer({', '.join(f'{k}={v}' for k, v in changes.items())})",
            shape=(batch, config["num_classes"]),
        )


def reference_parameter_counts(config):
    """Parameters of each part of ViT, counted on PyTorch's own modules, built on the meta device."""
    e, patch, channels = config["embed_dim"], config["patch_size"], config["in_channels"]
    hidden = int(e * config.get("mlp_ratio", 4.0))
    with torch.device("meta"):
        parts = {
            "patch_embed": nn.Conv2d(channels, e, kernel_size=patch, stride=patch),
            "blocks": nn.ModuleList(
                nn.TransformerEncoderLayer(e, config["num_heads"], hidden, dropout=0.0, batch_first=True)
                for _ in range(config["depth"])
            ),
            "norm": nn.LayerNorm(e),
            "head": nn.Linear(e, config["num_classes"]),
        }
    counts = {name: sum(p.numel() for p in module.parameters()) for name, module in parts.items()}
    counts["cls_token"] = e
    counts["pos_embed"] = ((config["image_size"] // patch) ** 2 + 1) * e
    return counts


@pytest.mark.points(2, hint="every part as the spec says, biases included; pos_embed has a row for the class token")
def test_vit_b16_has_86567656_parameters(student, device):
    """With the default arguments the model is ViT-B/16: 86,567,656 parameters (built on the meta device)."""
    torch_in_notebook = student.torch
    torch_in_notebook.set_default_device("meta")  # build without allocating 350 MB
    try:
        model = student.VisionTransformer()
    finally:
        torch_in_notebook.set_default_device(None)
    counts = {}
    for name, parameter in model.named_parameters():
        part = name.split(".")[0]
        counts[part] = counts.get(part, 0) + parameter.numel()
    expected = reference_parameter_counts({**VIT_B16, "mlp_ratio": 4.0})
    assert sum(expected.values()) == VIT_B16_PARAMETERS
    total = sum(counts.values())
    if total != VIT_B16_PARAMETERS or counts != expected:
        wrong = [
            f"{part} has {counts.get(part, 0):,}, expected {number:,}"
            for part, number in expected.items()
            if counts.get(part, 0) != number
        ]
        extra = [f"{part} ({number:,}) is not in the spec" for part, number in counts.items() if part not in expected]
        raise Feedback(
            f"VisionTransformer() has {total:,} parameters, ViT-B/16 has {VIT_B16_PARAMETERS:,}: "
            + "; ".join(wrong + extra)
        )


# --------------------------------------------------------------------------------------
# VisionTransformer: the forward pass


def assemble(model, blocks, tokens, cls, pos, where="prepend"):
    """Tokens through the model's own blocks, with the class token put ``where``, and pos_embed added."""
    batch = tokens.size(0)
    cls = cls.expand(batch, -1, -1)
    x = torch.cat([cls, tokens], dim=1) if where == "prepend" else torch.cat([tokens, cls], dim=1)
    if pos is not None:
        x = x + pos
    for block in blocks:
        x = block(x)
    return x


def diagnose_readout(model, blocks, logits, images, cls, pos):
    """Name the mistake in assembling the ViT that reproduces ``logits``, if one does."""
    tokens = model.patch_embed(images)
    prepended = assemble(model, blocks, tokens, cls, pos)
    candidates = {
        "the class token is appended at the end (and read there); prepend it, at index 0": lambda: model.head(
            model.norm(assemble(model, blocks, tokens, cls, pos, where="append"))[:, -1]
        ),
        "the head reads the last token; the class token is at index 0": lambda: model.head(
            model.norm(prepended)[:, -1]
        ),
        "the final LayerNorm `norm` is not applied before the head": lambda: model.head(prepended[:, 0]),
        "the head reads the mean of all tokens; read the class token, at index 0": lambda: model.head(
            model.norm(prepended).mean(dim=1)
        ),
        "pos_embed is not added to the tokens": lambda: model.head(
            model.norm(assemble(model, blocks, tokens, cls, None))[:, 0]
        ),
        "each block gets the embedded tokens instead of the previous block's output": lambda: model.head(
            model.norm(assemble(model, blocks[-1:], tokens, cls, pos))[:, 0]
        ),
    }
    for mistake, candidate in candidates.items():
        try:
            if close(logits, candidate(), torch.float32):
                return mistake
        except Exception:  # noqa: BLE001 - a candidate that can't even run is not the mistake
            continue
    return None


@pytest.mark.points(
    3, hint="x = cat([cls_token.expand(B, -1, -1), patches], dim=1) + pos_embed; ...; head(norm(x)[:, 0])"
)
def test_class_token_is_prepended_and_feeds_the_head(student, device):
    """Logits = head(norm(blocks(cat[cls, patches] + pos_embed))[:, 0]), rebuilt from the model's own parts."""
    model = small_vit(student, device)
    randomise_token_tables(model, SMALL, device, seed=7)
    cls, pos = expect_token_tables(model, SMALL)
    blocks = children(model.blocks)
    images = images_for(SMALL, 2, device, seed=8)
    logits = model(images)
    expect_tensor(logits, "logits", shape=(2, SMALL["num_classes"]))
    tokens = model.patch_embed(images)
    expected = model.head(model.norm(assemble(model, blocks, tokens, cls, pos))[:, 0])
    if not close(logits, expected, torch.float32):
        mistake = diagnose_readout(model, blocks, logits, images, cls, pos)
        raise Feedback(
            "the logits are not head(norm(x)[:, 0]) for x = the blocks applied to [class token; patch embeddings] "
            "+ pos_embed" + (f": {mistake}" if mistake else ""),
            diagnosed=mistake is not None,
        )


def reference_forward(state, images, config, eps, norm_first=True, patch_order=None):
    """The ViT forward pass with PyTorch's own modules and the student's weights, in float64."""
    e, heads = config["embed_dim"], config["num_heads"]
    tokens = reference_patch_embedding(
        images, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], config["patch_size"]
    )
    if patch_order is not None:
        tokens = patch_order(tokens)
    x = torch.cat([state["cls_token"].double().expand(images.size(0), -1, -1), tokens], dim=1)
    x = x + state["pos_embed"].double()
    for i, block_eps in enumerate(eps["blocks"]):
        layer = nn.TransformerEncoderLayer(
            e,
            heads,
            int(e * config["mlp_ratio"]),
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=norm_first,
            layer_norm_eps=block_eps,
            device=images.device,
            dtype=torch.float64,
        )
        p = f"blocks.{i}."
        attention = {
            "self_attn.in_proj_weight": torch.cat([state[p + f"attn.{n}_proj.weight"] for n in "qkv"]),
            "self_attn.in_proj_bias": torch.cat([state[p + f"attn.{n}_proj.bias"] for n in "qkv"]),
            "self_attn.out_proj.weight": state[p + "attn.out_proj.weight"],
            "self_attn.out_proj.bias": state[p + "attn.out_proj.bias"],
        }
        rest = {
            f"{ours}.{kind}": state[f"{p}{theirs}.{kind}"]
            for ours, theirs in [("linear1", "mlp.fc1"), ("linear2", "mlp.fc2"), ("norm1", "norm1"), ("norm2", "norm2")]
            for kind in ("weight", "bias")
        }
        layer.load_state_dict({k: v.double() for k, v in {**attention, **rest}.items()})
        layer.eval()
        with torch.no_grad():
            x = layer(x)
    x = F.layer_norm(x[:, 0], (e,), state["norm.weight"].double(), state["norm.bias"].double(), eps["norm"])
    return x @ state["head.weight"].double().T + state["head.bias"].double()


@pytest.mark.points(
    2, hint="attribute names as in the spec (attn.q_proj, mlp.fc1, ...); pre-norm blocks; patches in raster order"
)
def test_vision_transformer_matches_pytorch_layers_with_copied_weights(student, device):
    """The logits equal those of PyTorch's own layers (nn.TransformerEncoderLayer, norm_first) with your weights.

    Patches by unfold and proj's weights, the class token and pos_embed, depth pre-norm encoder layers, LayerNorm and
    Linear on the class token.
    """
    config = {**SMALL, "depth": 3}
    model = small_vit(student, device, depth=3)
    randomise_token_tables(model, config, device, seed=9)
    state = model.state_dict()
    needed = ["patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "pos_embed", "norm.weight", "head.bias"]
    needed += [f"blocks.{i}.{n}_proj.weight" for i in range(3) for n in ("attn.q", "attn.out")]
    missing = [name for name in needed if name not in state]
    expect(not missing, f"the model's state_dict has no {', '.join(missing)}: follow the spec's attribute names")
    blocks = children(model.blocks)
    eps = {"norm": model.norm.eps, "blocks": [block.norm1.eps for block in blocks]}
    expect(len(blocks) == 3, f"VisionTransformer(depth=3) has {len(blocks)} blocks")
    images = images_for(config, 3, device, seed=10)
    logits = model(images)
    expected = reference_forward(state, images, config, eps)
    expect_tensor(logits, "logits", shape=expected.shape)
    if not close(logits, expected, conv_tolerance(device)):
        grid = config["image_size"] // config["patch_size"]
        mistakes = {
            "the blocks are post-norm; ViT's are pre-norm (norm_first=True)": dict(norm_first=False),
            "the patches are in column-major order": dict(patch_order=lambda t: column_major(t, grid)),
        }
        for mistake, change in mistakes.items():
            if close(logits, reference_forward(state, images, config, eps, **change), conv_tolerance(device)):
                raise Feedback(f"the logits differ from PyTorch's layers with your weights: {mistake}", diagnosed=True)
        raise Feedback("the logits differ from the same model built from PyTorch's own layers with your weights")


def shuffle_patches(images, patch_size, permutation):
    """Move the patches of images (B, C, H, W) around the grid: patch permutation[i] goes to position i."""
    b, c, h, w = images.shape
    gh, gw = h // patch_size, w // patch_size
    patches = images.reshape(b, c, gh, patch_size, gw, patch_size).permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, -1)
    shuffled = patches[:, permutation].reshape(b, gh, gw, c, patch_size, patch_size)
    return shuffled.permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


@pytest.mark.points(2, hint="add pos_embed to every token (class token included) and read the class token at index 0")
def test_position_embeddings_break_patch_permutation_invariance(student, device):
    """With pos_embed zeroed, shuffling the patches leaves the logits unchanged; with random pos_embed it doesn't."""
    model = small_vit(student, device)
    cls, pos = expect_token_tables(model, SMALL)
    images = images_for(SMALL, 2, device, seed=11)
    permutation = torch.randperm(16, generator=torch.Generator().manual_seed(0)).to(device)
    shuffled = shuffle_patches(images, SMALL["patch_size"], permutation)

    model.load_state_dict(
        {"pos_embed": torch.zeros_like(pos), "cls_token": randn(*cls.shape, device=device)}, strict=False
    )
    expect(
        close(model(shuffled), model(images), conv_tolerance(device)),
        "with pos_embed set to zero, shuffling the patches of an image changed the logits: without positions a "
        "Transformer sees the patches as a set. Is the head reading a patch token instead of the class token "
        "at index 0, or does a token mix several patches?",
    )
    model.load_state_dict({"pos_embed": randn(*pos.shape, device=device, seed=12)}, strict=False)
    difference = (model(shuffled) - model(images)).abs().max().item()
    expect(
        difference > 1e-3,
        "with random position embeddings, shuffling the patches did not change the logits: is pos_embed added?",
    )


@pytest.mark.points(1, hint="every parameter must take part in the forward pass (pos_embed, cls_token, norm, ...)")
def test_gradients_reach_every_parameter(student, probe, device):
    """A loss on the logits sends gradient to every parameter of VisionTransformer."""
    model = small_vit(student, device)
    grads = probe("gradients", model, images_for(SMALL, 2, device, seed=13))["params"]
    missing = [name for name, grad in grads.items() if grad is None or not bool(grad.abs().sum() > 0)]
    expect(not missing, f"no gradient reaches: {', '.join(missing)}")


@pytest.mark.points(
    2, hint="every block must see the previous block's output; autograd then keeps each block's N x N matrices"
)
def test_vit_attention_memory_grows_as_tokens_squared(student, probe):
    """Peak memory of forward + backward grows as N^2 and holds the attention matrices of every layer.

    N = (image_size / patch_size)^2 + 1 tokens, so memory grows as (image_size / patch_size)^4.
    """
    # measured on the CPU whatever --device says, so that a grade never depends on the device's kernels
    config = dict(patch_size=4, in_channels=1, num_classes=2, embed_dim=16, depth=4, num_heads=8, mlp_ratio=1.0)
    image_sizes = [32, 64, 128]
    tokens, peaks = [], []
    for image_size in image_sizes:
        model = student.VisionTransformer(image_size=image_size, **config)
        peaks.append(probe("peak_memory", model, randn(1, 1, image_size, image_size, seed=image_size)))
        tokens.append((image_size // 4) ** 2 + 1)
    slope = loglog_slope(tokens, peaks)
    expect(
        1.8 <= slope <= 2.2,
        f"peak memory grew as N^{slope:.2f} over N = {tokens} tokens; attention over all tokens grows as N^2",
    )
    held = expected_memory(tokens[-1], config["depth"], config["num_heads"])
    expect(
        peaks[-1] >= held,
        f"at N = {tokens[-1]} the peak ({peaks[-1] / 2**20:.0f} MiB) is below the {config['depth']} layers' attention "
        f"matrices ({held / 2**20:.0f} MiB) that the backward pass needs: are all blocks in the computation?",
    )


# --------------------------------------------------------------------------------------
# GPU-readiness


@pytest.mark.points(1, hint="tensors made in forward take the input's device: no torch.zeros(...) without device=")
def test_everything_runs_on_the_meta_device(student, device):
    """PatchEmbedding and VisionTransformer take and return meta tensors of the right shapes."""
    meta = torch.device("meta")
    module = student.PatchEmbedding(16, 4, 3, 8).to(meta)
    expect_tensor(
        module(torch.empty(2, 3, 16, 16, device=meta)), "PatchEmbedding output on meta", (2, 16, 8), device="meta"
    )
    model = student.VisionTransformer(**SMALL).to(meta)
    logits = model(torch.empty(2, 3, 16, 16, device=meta))
    expect_tensor(logits, "VisionTransformer logits on meta", shape=(2, SMALL["num_classes"]), device="meta")


@pytest.mark.points(1, hint="keep the input's dtype: don't cast images with .float(), don't build float32 tensors")
def test_vision_transformer_keeps_half_precision(student, device):
    """float16 and bfloat16 models and images give logits in the same dtype, close to float32 with the same weights."""
    for dtype, tolerance in [(torch.float16, 2e-2), (torch.bfloat16, 1e-1)]:
        model = small_vit(student, device).to(dtype=dtype)
        images = images_for(SMALL, 2, device, seed=14).to(dtype)
        logits = model(images)
        expect_tensor(logits, f"logits for a {dtype} model and images", shape=(2, SMALL["num_classes"]), dtype=dtype)
        reference = model.to(dtype=torch.float32)(images.float())
        error = (logits.double() - reference.double()).abs().max().item()
        expect(error <= tolerance, f"in {dtype} the logits differ from float32 by {error:.3g}")


@pytest.mark.points(1, hint="batched operations handle every image and every patch at once: no Python loop")
def test_no_python_loop_over_batch_items_or_patches(student, probe, device):
    """The number of dispatched tensor ops grows neither with the batch size nor with the number of patches."""

    def ops(fn, *args):
        return probe("count_ops", fn, *args)

    small, large = student.PatchEmbedding(8, 4, 3, 8).to(device), student.PatchEmbedding(16, 4, 3, 8).to(device)
    n_small = ops(small, randn(2, 3, 8, 8, device=device))
    n_large = ops(large, randn(2, 3, 16, 16, device=device))
    expect(
        n_small == n_large, f"PatchEmbedding runs {n_small} ops for 4 patches but {n_large} for 16: a loop over patches"
    )
    model = small_vit(student, device)
    # from 2 up: matmul takes a shorter path for a batch of one
    n_two = ops(model, images_for(SMALL, 2, device))
    n_five = ops(model, images_for(SMALL, 5, device))
    expect(
        n_two == n_five, f"VisionTransformer runs {n_two} ops for 2 images but {n_five} for 5: a loop over the batch"
    )


# --------------------------------------------------------------------------------------
# bonus: chunked_attention


def exact_attention(q, k, v):
    return F.scaled_dot_product_attention(q.double(), k.double(), v.double())


@pytest.mark.points(
    3,
    bonus=True,
    hint="bonus: rescale the running sum and output by exp(m_old - m_new) at every chunk; divide by the sum at the end",
)
def test_bonus_chunked_attention_equals_exact_attention(student, device):
    """Bonus: chunked_attention equals softmax(q k^T / sqrt(d)) v, in float32, for many shapes and chunk sizes.

    Several N, chunk sizes that do and don't divide N, Nq != Nk, 0 to 2 batch dims, and scores large enough to
    overflow exp.
    """
    cases = [  # (q shape, k shape, v shape, chunk_size, scale of q)
        ((64, 16), (64, 16), (64, 8), 16, 1.0),
        ((2, 100, 16), (2, 100, 16), (2, 100, 16), 32, 1.0),
        ((2, 3, 7, 8), (2, 3, 7, 8), (2, 3, 7, 4), 128, 1.0),
        ((2, 10, 32), (2, 50, 32), (2, 50, 12), 7, 1.0),
        ((1, 2, 33, 16), (1, 2, 33, 16), (1, 2, 33, 16), 8, 30.0),
    ]
    failures = []
    for index, (q_shape, k_shape, v_shape, chunk_size, scale) in enumerate(cases):
        q = scale * randn(*q_shape, device=device, seed=20 + index)
        k, v = randn(*k_shape, device=device, seed=30 + index), randn(*v_shape, device=device, seed=40 + index)
        output = student.chunked_attention(q, k, v, chunk_size=chunk_size)
        expected = exact_attention(q, k, v)
        what = f"q {q_shape}, k {k_shape}, v {v_shape}, chunk_size={chunk_size}" + (
            f", q scaled by {scale:g}" if scale != 1 else ""
        )
        expect_tensor(output, f"chunked_attention output for {what}", shape=expected.shape)
        if not close(output, expected, torch.float32):
            finite = bool(torch.isfinite(output).all())
            failures.append((what, chunk_size >= k_shape[-2], finite))
    if failures:
        what, one_chunk, finite = failures[0]
        if not finite:
            note = ": the output has inf or nan; subtract the running maximum before exp"
        elif all(not single for _, single, _ in failures):
            note = (
                ": it is right when all keys fit in one chunk but not over several; rescale the running sum and "
                "output by exp(m_old - m_new) whenever the maximum changes, and normalise only at the end"
            )
        else:
            note = ""
        raise Feedback(f"chunked_attention differs from exact attention for {what}" + note, diagnosed=bool(note))


@pytest.mark.points(
    2, bonus=True, hint="bonus: only an (Nq, chunk_size) block of scores may exist at a time: never (Nq, Nk)"
)
def test_bonus_chunked_attention_memory_grows_linearly(student, probe):
    """Bonus: with chunk_size fixed, the peak memory of chunked_attention grows linearly with the sequence length."""
    sizes = [512, 1024, 2048, 4096]
    peaks = []
    for n in sizes:
        q, k, v = (randn(1, n, 16, seed=n + s) for s in range(3))
        peaks.append(probe("peak_memory", student.chunked_attention, q, k, v, 64, options={"backward": False}))
    slope = loglog_slope(sizes, peaks)
    expect(
        0.8 <= slope <= 1.2,
        f"peak memory grew as N^{slope:.2f} over N = {sizes} with chunk_size=64; it should grow as N^1"
        + (": an N x N matrix is being built" if slope > 1.5 else ""),
    )
    matrix = sizes[-1] ** 2 * 4
    expect(
        peaks[-1] < matrix / 4,
        f"at N = {sizes[-1]} the peak ({peaks[-1] / 2**20:.1f} MiB) is not far below one N x N float32 matrix "
        f"({matrix / 2**20:.0f} MiB)",
    )


@pytest.mark.points(
    1, bonus=True, hint="bonus: make the running max, sum and output with device=q.device, dtype=q.dtype"
)
def test_bonus_chunked_attention_keeps_dtype_and_runs_on_meta(student, device):
    """Bonus: float16 and bfloat16 inputs give outputs in the same dtype, numerically right; meta inputs give meta."""
    for dtype in (torch.float16, torch.bfloat16):
        q, k, v = (randn(2, 40, 16, device=device, dtype=dtype, seed=50 + s) for s in range(3))
        output = student.chunked_attention(q, k, v, chunk_size=16)
        expect_tensor(output, f"chunked_attention output for {dtype} inputs", shape=(2, 40, 16), dtype=dtype)
        expect_close(output, exact_attention(q, k, v), f"chunked_attention output in {dtype}", dtype)
    meta = [torch.empty(2, 40, 16, device="meta") for _ in range(3)]
    output = student.chunked_attention(*meta, chunk_size=16)
    expect_tensor(output, "chunked_attention output on meta", shape=(2, 40, 16), device="meta")
