"""Realistic mistakes in 05_vision_transformer, each caught by a hidden test."""

from . import Mutant

MEMORY = "return num_tokens**2 * num_layers * num_heads * bytes_per_element"
NUM_PATCHES = "self.num_patches = (image_size // patch_size) ** 2"
CONV = "self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)"
PROJECT = "x = self.proj(images)  # (B, E, H/P, W/P): one embedding per grid cell"
FLATTEN = "x = x.flatten(2)  # (B, E, N), cells in raster order"
TRANSPOSE = "return x.transpose(1, 2)  # (B, N, E)"
NUM_TOKENS = "num_tokens = self.patch_embed.num_patches + 1  # the patches and the class token"
BLOCKS = "self.blocks = nn.ModuleList([TransformerBlock(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])"
EMBED = "x = self.patch_embed(images)  # (B, N, E)"
CLS = "cls = self.cls_token.expand(x.size(0), -1, -1)"
CONCAT = "x = torch.cat([cls, x], dim=1)"
ADD_POS = "x = x + self.pos_embed  # (B, N + 1, E)"
BLOCK = "x = block(x)  # (B, N + 1, E)"
NORM = "x = self.norm(x)  # (B, N + 1, E)"
HEAD = "return self.head(x[:, 0])"
RUNNING_MAX = 'running_max = torch.full((*q.shape[:-1], 1), float("-inf"), device=q.device, dtype=q.dtype)'
SCORES = "scores = q @ k_chunk.transpose(-2, -1)"
RESCALE = "rescale = torch.exp(running_max - new_max)"
EXP = "p = torch.exp(scores - new_max)"
SUM = "running_sum = rescale * running_sum + p.sum(dim=-1, keepdim=True)"
OUT = "out = rescale * out + p @ v_chunk"
RETURN_OUT = "return out / running_sum"

MUTANTS = [
    # attention_memory_bytes
    Mutant(
        "memory_without_heads",
        "forgets that every head has its own attention matrix",
        ((MEMORY, "return num_tokens**2 * num_layers * bytes_per_element"),),
        (
            "test_attention_memory_bytes_reproduces_the_notes",
            "test_attention_memory_bytes_is_an_exact_int_for_any_arguments",
        ),
    ),
    Mutant(
        "memory_in_mib",
        "returns MiB, the unit of the lecture notes' figure, instead of bytes",
        ((MEMORY, f"{MEMORY} / 2**20"),),
        (
            "test_attention_memory_bytes_reproduces_the_notes",
            "test_attention_memory_bytes_is_an_exact_int_for_any_arguments",
        ),
    ),
    Mutant(
        "memory_as_float",
        "squares with math.pow, which returns a float",
        ((MEMORY, "return math.pow(num_tokens, 2) * num_layers * num_heads * bytes_per_element"),),
        ("test_attention_memory_bytes_is_an_exact_int_for_any_arguments",),
    ),
    # PatchEmbedding
    Mutant(
        "num_patches_not_squared",
        "counts the patches along one side of the image only",
        ((NUM_PATCHES, "self.num_patches = image_size // patch_size"),),
        (
            "test_num_patches_is_the_grid_size_squared",
            "test_vision_transformer_layout_follows_the_spec",
            "test_vit_b16_has_86567656_parameters",
        ),
    ),
    Mutant(
        "in_channels_fixed_to_rgb",
        "builds the convolution for 3 input channels whatever in_channels says",
        ((CONV, "self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)"),),
        ("test_patch_embedding_follows_the_spec", "test_patch_embedding_output_shapes"),
    ),
    Mutant(
        "patches_column_major",
        "reads the grid of patches column by column",
        ((FLATTEN, "x = x.transpose(2, 3).flatten(2)  # (B, E, N)"),),
        (
            "test_patches_are_in_raster_order",
            "test_each_token_depends_only_on_its_own_patch",
            "test_vision_transformer_matches_pytorch_layers_with_copied_weights",
        ),
    ),
    Mutant(
        "reshape_without_transpose",
        "reshapes (B, E, h, w) straight to (B, h*w, E)",
        ((FLATTEN, "x = x.reshape(x.size(0), -1, x.size(1))  # (B, N, E)"), (TRANSPOSE, "return x")),
        (
            "test_patches_are_in_raster_order",
            "test_each_token_depends_only_on_its_own_patch",
            "test_vision_transformer_matches_pytorch_layers_with_copied_weights",
        ),
    ),
    Mutant(
        "loop_over_patches",
        "embeds the patches one at a time in a Python loop",
        (
            (
                f"{PROJECT}\n        {FLATTEN}\n        {TRANSPOSE}",
                "p = self.proj.kernel_size[0]\n"
                "        tokens = [\n"
                "            self.proj(images[:, :, i : i + p, j : j + p]).flatten(1)\n"
                "            for i in range(0, images.size(2), p)\n"
                "            for j in range(0, images.size(3), p)\n"
                "        ]\n"
                "        return torch.stack(tokens, dim=1)  # (B, N, E)",
            ),
        ),
        ("test_no_python_loop_over_batch_items_or_patches",),
    ),
    Mutant(
        "images_cast_to_float",
        "casts the images to float32, as one does for uint8 pixels",
        ((PROJECT, "x = self.proj(images.float())  # (B, E, H/P, W/P)"),),
        ("test_vision_transformer_keeps_half_precision",),
    ),
    # VisionTransformer
    Mutant(
        "class_token_appended",
        "appends the class token after the patches and reads it there",
        ((CONCAT, "x = torch.cat([x, cls], dim=1)"), (HEAD, "return self.head(x[:, -1])")),
        (
            "test_class_token_is_prepended_and_feeds_the_head",
            "test_vision_transformer_matches_pytorch_layers_with_copied_weights",
        ),
    ),
    Mutant(
        "reads_last_token",
        "prepends the class token but feeds the last token to the head",
        ((HEAD, "return self.head(x[:, -1])"),),
        (
            "test_class_token_is_prepended_and_feeds_the_head",
            "test_vision_transformer_matches_pytorch_layers_with_copied_weights",
            "test_position_embeddings_break_patch_permutation_invariance",
        ),
    ),
    Mutant(
        "mean_pooling",
        "averages all tokens instead of reading the class token",
        ((HEAD, "return self.head(x.mean(dim=1))"),),
        (
            "test_class_token_is_prepended_and_feeds_the_head",
            "test_vision_transformer_matches_pytorch_layers_with_copied_weights",
        ),
    ),
    Mutant(
        "head_on_every_token",
        "applies the head to every token and returns (B, N + 1, num_classes)",
        ((HEAD, "return self.head(x)"),),
        (
            "test_vision_transformer_logits_have_shape_batch_by_classes",
            "test_class_token_is_prepended_and_feeds_the_head",
        ),
    ),
    Mutant(
        "no_final_norm",
        "forgets the final LayerNorm before the head",
        ((NORM, "pass"),),
        (
            "test_class_token_is_prepended_and_feeds_the_head",
            "test_vision_transformer_matches_pytorch_layers_with_copied_weights",
            "test_gradients_reach_every_parameter",
        ),
    ),
    Mutant(
        "no_position_embedding",
        "creates pos_embed but never adds it",
        ((ADD_POS, "pass"),),
        (
            "test_position_embeddings_break_patch_permutation_invariance",
            "test_gradients_reach_every_parameter",
            "test_class_token_is_prepended_and_feeds_the_head",
        ),
    ),
    Mutant(
        "pos_embed_for_patches_only",
        "gives pos_embed one row per patch and adds it before the class token is prepended",
        (
            (NUM_TOKENS, "num_tokens = self.patch_embed.num_patches"),
            (EMBED, "x = self.patch_embed(images) + self.pos_embed  # (B, N, E)"),
            (ADD_POS, "pass"),
        ),
        (
            "test_vision_transformer_layout_follows_the_spec",
            "test_vit_b16_has_86567656_parameters",
            "test_class_token_is_prepended_and_feeds_the_head",
        ),
    ),
    Mutant(
        "blocks_not_chained",
        "gives every block the embedded tokens and keeps only the last block's output",
        ((BLOCK, "out = block(x)"), (NORM, "x = self.norm(out)")),
        (
            "test_vit_attention_memory_grows_as_tokens_squared",
            "test_gradients_reach_every_parameter",
            "test_class_token_is_prepended_and_feeds_the_head",
        ),
    ),
    Mutant(
        "post_norm_blocks",
        "builds the blocks of the 2017 paper, post-norm",
        (
            (
                BLOCKS,
                "self.blocks = nn.ModuleList(\n"
                "            [TransformerBlock(embed_dim, num_heads, mlp_ratio, norm_first=False)"
                " for _ in range(depth)]\n"
                "        )",
            ),
        ),
        (
            "test_vision_transformer_layout_follows_the_spec",
            "test_vision_transformer_matches_pytorch_layers_with_copied_weights",
        ),
    ),
    Mutant(
        "class_token_broadcast_on_cpu",
        "repeats the class token over the batch by multiplying with torch.ones, made on the CPU in float32",
        ((CLS, "cls = torch.ones(x.size(0), 1, 1) * self.cls_token"),),
        ("test_everything_runs_on_the_meta_device", "test_vision_transformer_keeps_half_precision"),
    ),
    # chunked_attention (bonus)
    Mutant(
        "chunks_without_rescaling",
        "adds each chunk's exponentials without rescaling what was accumulated when the maximum changes",
        (
            (SUM, "running_sum = running_sum + p.sum(dim=-1, keepdim=True)"),
            (OUT, "out = out + p @ v_chunk"),
        ),
        ("test_bonus_chunked_attention_equals_exact_attention",),
    ),
    Mutant(
        "chunks_without_max",
        "exponentiates the raw scores, which overflows for large ones",
        ((EXP, "p = torch.exp(scores)"), (RESCALE, "rescale = torch.ones_like(running_max)")),
        ("test_bonus_chunked_attention_equals_exact_attention",),
    ),
    Mutant(
        "chunks_normalised_separately",
        "takes a softmax within each chunk and averages the chunks' outputs",
        (
            (OUT, "out = out + torch.softmax(scores, dim=-1) @ v_chunk"),
            (RETURN_OUT, "return out / math.ceil(k.size(-2) / chunk_size)"),
        ),
        ("test_bonus_chunked_attention_equals_exact_attention",),
    ),
    Mutant(
        "chunks_sliced_from_full_scores",
        "computes all the scores at once and slices a chunk out of them",
        ((SCORES, "scores = (q @ k.transpose(-2, -1))[..., start : start + chunk_size]"),),
        ("test_bonus_chunked_attention_memory_grows_linearly",),
    ),
    Mutant(
        "running_max_on_default_device",
        "creates the running maximum with torch.full on the default device and dtype",
        ((RUNNING_MAX, 'running_max = torch.full((*q.shape[:-1], 1), float("-inf"))'),),
        ("test_bonus_chunked_attention_keeps_dtype_and_runs_on_meta",),
    ),
]
