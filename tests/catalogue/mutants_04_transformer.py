"""Realistic mistakes in 04_transformer, each caught by a hidden test."""

from . import Mutant

GELU = "hidden = F.gelu(self.fc1(x))"
BRANCH = "if self.norm_first:  # pre-norm: the residual stream x is never normalised"
PRE_ATTENTION = "x = x + self.attn(self.norm1(x), mask=mask)  # (B, N, E)"
POST_MLP = "x = self.norm2(x + self.mlp(x))  # (B, N, E)"
BLOCK_MLP = (
    "self.norm2 = nn.LayerNorm(embed_dim)\n        self.mlp = FeedForward(embed_dim, int(embed_dim * mlp_ratio))"
)
CAUSAL = "return torch.ones(n, n, dtype=torch.bool, device=device).tril()"
DECODER_SELF = "x = x + self.self_attn(self.norm1(x), mask=self_mask)  # (B, T, E)"
DECODER_CROSS = "self.cross_attn(self.norm2(x), memory, mask=memory_mask)  # queries from x, keys from memory"
DECODER_MLP = "x = x + self.mlp(self.norm3(x))  # (B, T, E)"
ENCODER_LAYERS = "[TransformerBlock(embed_dim, num_heads, mlp_ratio, norm_first) for _ in range(num_layers)]"
ENCODER_NORM = "self.norm = nn.LayerNorm(embed_dim) if norm_first else nn.Identity()"

PRE_BLOCK = "test_pre_norm_block_matches_pytorch_encoder_layer"
POST_BLOCK = "test_post_norm_block_matches_pytorch_encoder_layer"
PRE_DECODER = "test_pre_norm_decoder_block_matches_pytorch_decoder_layer"
PRE_ENCODER = "test_pre_norm_encoder_matches_pytorch_with_final_norm"
POST_ENCODER = "test_post_norm_encoder_matches_pytorch_without_final_norm"

MUTANTS = [
    Mutant(
        "pre_and_post_norm_swapped",
        "reads norm_first the wrong way round: pre-norm when asked for post-norm and back",
        ((BRANCH, "if not self.norm_first:"),),
        (PRE_BLOCK, POST_BLOCK, PRE_ENCODER, POST_ENCODER),
    ),
    Mutant(
        "attention_residual_missing",
        "forgets the residual connection around the attention (pre-norm)",
        ((PRE_ATTENTION, "x = self.attn(self.norm1(x), mask=mask)"),),
        (PRE_BLOCK, PRE_ENCODER),
    ),
    Mutant(
        "pre_norm_residual_adds_normed_x",
        "normalises x in place before the attention, so the residual adds the normed x",
        ((PRE_ATTENTION, "x = self.norm1(x)\n            x = x + self.attn(x, mask=mask)"),),
        (PRE_BLOCK,),
    ),
    Mutant(
        "relu_instead_of_gelu",
        "uses the 2017 paper's ReLU in the MLP",
        ((GELU, "hidden = F.relu(self.fc1(x))"),),
        ("test_feed_forward_is_fc2_of_exact_gelu_of_fc1", PRE_BLOCK, POST_BLOCK),
    ),
    Mutant(
        "tanh_gelu",
        "uses the tanh approximation of GELU",
        ((GELU, 'hidden = F.gelu(self.fc1(x), approximate="tanh")'),),
        ("test_feed_forward_is_fc2_of_exact_gelu_of_fc1", PRE_BLOCK),
    ),
    Mutant(
        "post_norm_uses_norm1_twice",
        "applies norm1 after the MLP's residual sum in the post-norm block",
        ((POST_MLP, "x = self.norm1(x + self.mlp(x))"),),
        (POST_BLOCK,),
    ),
    Mutant(
        "mlp_ratio_ignored",
        "hard-codes the MLP's hidden size to 4 * embed_dim",
        (
            (
                BLOCK_MLP,
                "self.norm2 = nn.LayerNorm(embed_dim)\n        self.mlp = FeedForward(embed_dim, 4 * embed_dim)",
            ),
        ),
        ("test_block_layouts_follow_the_spec", PRE_BLOCK),
    ),
    Mutant(
        "single_head",
        "builds the block's attention with one head, ignoring num_heads",
        (("self.attn = MultiHeadAttention(embed_dim, num_heads)", "self.attn = MultiHeadAttention(embed_dim, 1)"),),
        ("test_attention_memory_grows_with_layers_heads_and_squared_length", PRE_BLOCK, POST_BLOCK),
    ),
    Mutant(
        "causal_by_default",
        "TransformerBlock applies a causal mask when it is given none",
        (
            (
                BRANCH,
                "if mask is None:\n"
                "            mask = causal_mask(x.size(1), device=x.device)\n"
                "        if self.norm_first:",
            ),
        ),
        ("test_encoder_is_permutation_equivariant_without_positions", PRE_BLOCK, PRE_ENCODER),
    ),
    Mutant(
        "gelu_in_float32",
        "runs the GELU in float32 for accuracy and forgets to cast back",
        ((GELU, "hidden = F.gelu(self.fc1(x).float())"),),
        ("test_modules_keep_half_precision",),
    ),
    Mutant(
        "causal_mask_upper_triangular",
        "takes the upper triangle, the positions a query must not see",
        ((CAUSAL, "return torch.ones(n, n, dtype=torch.bool, device=device).triu()"),),
        ("test_causal_mask_is_lower_triangular_on_the_requested_device",),
    ),
    Mutant(
        "causal_mask_without_diagonal",
        "excludes the diagonal, so a token may not attend to itself",
        ((CAUSAL, "return torch.ones(n, n, dtype=torch.bool, device=device).tril(-1)"),),
        ("test_causal_mask_is_lower_triangular_on_the_requested_device",),
    ),
    Mutant(
        "causal_mask_on_default_device",
        "builds the causal mask on the default device whatever device is asked for",
        ((CAUSAL, "return torch.ones(n, n, dtype=torch.bool).tril()"),),
        ("test_causal_mask_is_lower_triangular_on_the_requested_device", "test_everything_runs_on_the_meta_device"),
    ),
    Mutant(
        "decoder_ignores_self_mask",
        "forgets to pass self_mask to the decoder's self-attention",
        ((DECODER_SELF, "x = x + self.self_attn(self.norm1(x))"),),
        (PRE_DECODER, "test_decoder_block_is_causal_with_a_causal_self_mask"),
    ),
    Mutant(
        "cross_attention_over_x",
        "lets the cross-attention take its keys and values from x instead of the memory",
        ((DECODER_CROSS, "self.cross_attn(self.norm2(x), mask=memory_mask)"),),
        (PRE_DECODER,),
    ),
    Mutant(
        "decoder_ignores_memory_mask",
        "forgets to pass memory_mask to the cross-attention",
        ((DECODER_CROSS, "self.cross_attn(self.norm2(x), memory)"),),
        (PRE_DECODER,),
    ),
    Mutant(
        "norm2_where_norm3_belongs",
        "normalises the MLP's input with norm2, leaving norm3 unused",
        ((DECODER_MLP, "x = x + self.mlp(self.norm2(x))"),),
        (PRE_DECODER, "test_gradients_reach_every_parameter"),
    ),
    Mutant(
        "decoder_loops_over_positions",
        "computes the causal self-attention one position at a time, each query over its prefix",
        (
            (
                DECODER_SELF,
                "h = self.norm1(x)\n"
                "            x = x + torch.cat(\n"
                "                [self.self_attn(h[:, t : t + 1], h[:, : t + 1]) for t in range(h.size(1))], dim=1\n"
                "            )",
            ),
        ),
        ("test_no_python_loop_over_batch_items_or_positions", PRE_DECODER),
    ),
    Mutant(
        "one_block_shared_by_all_layers",
        "repeats one block num_layers times, so all layers share their weights",
        ((ENCODER_LAYERS, "[TransformerBlock(embed_dim, num_heads, mlp_ratio, norm_first)] * num_layers"),),
        ("test_encoder_layout_follows_the_spec", PRE_ENCODER),
    ),
    Mutant(
        "layers_in_a_python_list",
        "keeps the layers in a plain list, so PyTorch does not register them",
        (("self.layers = nn.ModuleList(", "self.layers = list("),),
        ("test_encoder_layout_follows_the_spec", "test_everything_runs_on_the_meta_device"),
    ),
    Mutant(
        "final_norm_missing",
        "creates the final LayerNorm but never applies it",
        (("return self.norm(x)", "return x"),),
        (PRE_ENCODER, "test_gradients_reach_every_parameter"),
    ),
    Mutant(
        "final_norm_for_post_norm",
        "adds the final LayerNorm to post-norm stacks too",
        ((ENCODER_NORM, "self.norm = nn.LayerNorm(embed_dim)"),),
        ("test_encoder_layout_follows_the_spec", POST_ENCODER),
    ),
]
