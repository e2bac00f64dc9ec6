"""Realistic mistakes in 03_multihead_attention, each caught by a hidden test."""

from . import Mutant

SPLIT = "return x.reshape(B, N, num_heads, head_dim).transpose(1, 2)"
MERGE = "return x.transpose(1, 2).reshape(B, N, H * d)"
ATTEND = "out, weights = scaled_dot_product_attention(q, k, v, mask)"
RETURN_WEIGHTS = "if need_weights:\n            return out, weights\n        return out"


def inline_attention(scale="math.sqrt(self.head_dim)", softmax_dim=-1):
    """The attention written out in forward instead of calling the given function."""
    return (
        f"scores = q @ k.transpose(-2, -1) / {scale}  # (B, H, Nq, Nk)\n"
        "        if mask is not None:\n"
        '            scores = scores.masked_fill(~mask, float("-inf"))\n'
        f"        weights = torch.softmax(scores, dim={softmax_dim})\n"
        "        out = weights @ v"
    )


MATCHES_PYTORCH = "test_matches_pytorch_multihead_attention"

MUTANTS = [
    Mutant(
        "split_view_without_transpose",
        "views (B, N, E) straight as (B, H, N, d): the classic bug, right shape, wrong heads",
        ((SPLIT, "return x.view(B, num_heads, N, head_dim)"),),
        (
            "test_split_heads_gives_head_h_the_features_h_d_to_h_plus_1_d",
            MATCHES_PYTORCH,
            "test_heads_are_independent",
            "test_self_attention_is_permutation_equivariant",
        ),
    ),
    Mutant(
        "split_without_transpose",
        "reshapes to (B, N, H, d) and forgets to move the heads in front of the tokens",
        ((SPLIT, "return x.reshape(B, N, num_heads, head_dim)"),),
        (
            "test_split_heads_gives_head_h_the_features_h_d_to_h_plus_1_d",
            "test_output_shapes_for_self_and_cross_attention",
        ),
    ),
    Mutant(
        "split_sizes_swapped",
        "swaps num_heads and head_dim in the reshape, which goes unnoticed when they are equal",
        ((SPLIT, "return x.reshape(B, N, head_dim, num_heads).transpose(1, 2)"),),
        ("test_split_heads_gives_head_h_the_features_h_d_to_h_plus_1_d", MATCHES_PYTORCH),
    ),
    Mutant(
        "strided_heads",
        "gives head h every H-th feature, with a matching merge: a valid layer, but not PyTorch's layout",
        (
            (SPLIT, "return x.reshape(B, N, head_dim, num_heads).permute(0, 3, 1, 2)"),
            (MERGE, "return x.permute(0, 2, 3, 1).reshape(B, N, H * d)"),
        ),
        (
            "test_split_heads_gives_head_h_the_features_h_d_to_h_plus_1_d",
            "test_merge_heads_inverts_split_heads",
            MATCHES_PYTORCH,
            "test_heads_are_independent",
        ),
    ),
    Mutant(
        "merge_without_transpose",
        "reshapes (B, H, N, d) straight to (B, N, E) without moving the heads back",
        ((MERGE, "return x.reshape(B, N, H * d)"),),
        ("test_merge_heads_inverts_split_heads", MATCHES_PYTORCH),
    ),
    Mutant(
        "merge_view_after_transpose",
        "calls .view on the transposed (non-contiguous) tensor, which raises",
        ((MERGE, "return x.transpose(1, 2).view(B, N, H * d)"),),
        ("test_merge_heads_inverts_split_heads", MATCHES_PYTORCH, "test_output_shapes_for_self_and_cross_attention"),
    ),
    Mutant(
        "scale_by_embed_dim",
        "writes the attention inline and scales by sqrt(embed_dim) instead of sqrt(head_dim)",
        ((ATTEND, inline_attention(scale="math.sqrt(self.num_heads * self.head_dim)")),),
        (MATCHES_PYTORCH, "test_per_head_weights_match_pytorch", "test_masks_match_pytorch"),
    ),
    Mutant(
        "softmax_over_dim_2",
        "writes the attention inline with softmax(dim=2), the key axis of (B, N, N) but the query axis of (B, H, N, N)",
        ((ATTEND, inline_attention(softmax_dim=2)),),
        (MATCHES_PYTORCH, "test_per_head_weights_match_pytorch"),
    ),
    Mutant(
        "mask_inverted",
        "inverts the mask, following nn.MultiheadAttention's convention (True = masked out)",
        ((ATTEND, "out, weights = scaled_dot_product_attention(q, k, v, None if mask is None else ~mask)"),),
        ("test_masks_match_pytorch", "test_per_head_weights_match_pytorch"),
    ),
    Mutant(
        "no_out_proj",
        "returns the merged heads without the output projection",
        (("out = self.out_proj(merge_heads(out))", "out = merge_heads(out)"),),
        (MATCHES_PYTORCH, "test_gradients_reach_every_parameter"),
    ),
    Mutant(
        "value_defaults_to_query",
        "lets value default to query instead of key",
        (("value = key if value is None else value", "value = query if value is None else value"),),
        ("test_key_defaults_to_query_and_value_to_key",),
    ),
    Mutant(
        "values_from_k_proj",
        "projects the values with k_proj",
        (
            (
                "v = split_heads(self.v_proj(value), self.num_heads)",
                "v = split_heads(self.k_proj(value), self.num_heads)",
            ),
        ),
        (MATCHES_PYTORCH, "test_gradients_reach_every_parameter"),
    ),
    Mutant(
        "loop_over_heads",
        "attends one head at a time in a Python loop: right numbers, H times the kernel launches",
        (
            (
                ATTEND,
                "head_mask = None if mask is None else mask.expand(q.size(0), self.num_heads, q.size(2), k.size(2))\n"
                "        per_head = [\n"
                "            scaled_dot_product_attention(\n"
                "                q[:, h : h + 1], k[:, h : h + 1], v[:, h : h + 1],\n"
                "                None if head_mask is None else head_mask[:, h : h + 1],\n"
                "            )\n"
                "            for h in range(self.num_heads)\n"
                "        ]\n"
                "        out = torch.cat([o for o, _ in per_head], dim=1)\n"
                "        weights = torch.cat([w for _, w in per_head], dim=1)",
            ),
        ),
        ("test_no_python_loop_over_heads_or_batch_items",),
    ),
    Mutant(
        "default_mask_on_cpu",
        "builds an all-True default mask with torch.ones on the default device",
        (
            (
                ATTEND,
                "if mask is None:\n"
                "            mask = torch.ones(q.size(2), k.size(2), dtype=torch.bool)  # everyone may attend\n"
                f"        {ATTEND}",
            ),
        ),
        ("test_everything_runs_on_the_meta_device",),
    ),
    Mutant(
        "attention_in_float32",
        "runs the attention in float32 for stability and never casts back",
        ((ATTEND, "out, weights = scaled_dot_product_attention(q.float(), k.float(), v.float(), mask)"),),
        ("test_half_precision_keeps_its_dtype",),
    ),
    Mutant(
        "weights_averaged_over_heads",
        "returns the weights averaged over the heads, nn.MultiheadAttention's default",
        ((RETURN_WEIGHTS, "if need_weights:\n            return out, weights.mean(dim=1)\n        return out"),),
        ("test_output_shapes_for_self_and_cross_attention", "test_per_head_weights_match_pytorch"),
    ),
    Mutant(
        "always_returns_weights",
        "returns (out, weights) whether or not need_weights is set",
        ((RETURN_WEIGHTS, "return out, weights"),),
        ("test_output_shapes_for_self_and_cross_attention", "test_key_defaults_to_query_and_value_to_key"),
    ),
    Mutant(
        "bias_flag_ignored",
        "creates q_proj with nn.Linear's default bias, whatever bias says",
        (
            (
                "self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)",
                "self.q_proj = nn.Linear(embed_dim, embed_dim)",
            ),
        ),
        ("test_projections_follow_the_spec", "test_bias_false_matches_pytorch"),
    ),
    Mutant(
        "fused_kernel_without_weights",
        "calls PyTorch's fused kernel when the weights are not asked for, so the N x N maps are never stored",
        (
            (
                ATTEND,
                "if need_weights:\n"
                f"            {ATTEND}\n"
                "        else:\n"
                "            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)",
            ),
        ),
        ("test_attention_memory_grows_as_heads_times_n_squared",),
    ),
    Mutant(
        "broadcast_scores",
        "builds the scores by broadcasting q against k, a (B, H, Nq, Nk, d) intermediate",
        (
            (
                ATTEND,
                inline_attention().replace("q @ k.transpose(-2, -1)", "(q.unsqueeze(-2) * k.unsqueeze(-3)).sum(-1)"),
            ),
        ),
        ("test_attention_memory_grows_as_heads_times_n_squared",),
    ),
]
