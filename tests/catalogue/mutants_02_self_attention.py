"""Realistic mistakes in 02_self_attention, each caught by a hidden test."""

from . import Mutant

SCORES = "scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)"
MASKING = 'scores = scores.masked_fill(~mask, float("-inf"))'
SOFTMAX = "weights = torch.softmax(scores, dim=-1)"

MUTANTS = [
    Mutant(
        "divide_by_d_k",
        "divides the scores by d_k, as the lecture notes say",
        ((SCORES, "scores = q @ k.transpose(-2, -1) / d_k"),),
        ("test_attention_matches_pytorch_in_float32", "test_self_attention_matches_formula_with_its_own_weights"),
    ),
    Mutant(
        "no_scaling",
        "forgets the 1/sqrt(d_k) scaling",
        ((SCORES, "scores = q @ k.transpose(-2, -1)"),),
        ("test_attention_matches_pytorch_in_float32",),
    ),
    Mutant(
        "scale_by_value_dim",
        "takes d from the values instead of the keys",
        (("d_k = q.size(-1)", "d_k = v.size(-1)"),),
        ("test_attention_matches_pytorch_in_float32",),
    ),
    Mutant(
        "softmax_over_queries",
        "normalises over the queries (dim=-2)",
        ((SOFTMAX, "weights = torch.softmax(scores, dim=-2)"),),
        ("test_attention_weight_rows_sum_to_one", "test_attention_matches_pytorch_in_float32"),
    ),
    Mutant(
        "mask_inverted",
        "treats True as 'masked out'",
        ((MASKING, 'scores = scores.masked_fill(mask, float("-inf"))'),),
        ("test_masked_weights_are_exactly_zero",),
    ),
    Mutant(
        "mask_fills_zero",
        "sets masked scores to 0 instead of -inf",
        ((MASKING, "scores = scores.masked_fill(~mask, 0.0)"),),
        ("test_masked_weights_are_exactly_zero",),
    ),
    Mutant(
        "mask_after_softmax",
        "zeroes masked weights after the softmax without renormalising",
        (
            (MASKING, "pass"),
            ("output = weights @ v", "weights = weights if mask is None else weights * mask\n    output = weights @ v"),
        ),
        ("test_attention_weight_rows_sum_to_one", "test_masked_weights_are_exactly_zero"),
    ),
    Mutant(
        "transpose_fixed_dims",
        "transposes dims 1 and 2, which only works for 3-D inputs",
        ((SCORES, "scores = q @ k.transpose(1, 2) / math.sqrt(d_k)"),),
        ("test_attention_shapes_for_any_batch_dims",),
    ),
    Mutant(
        "loop_over_batch",
        "computes the scores one batch item at a time",
        ((SCORES, "scores = torch.stack([qi @ ki.transpose(-2, -1) for qi, ki in zip(q, k)]) / math.sqrt(d_k)"),),
        ("test_no_python_loop_over_batch_items_or_positions",),
    ),
    Mutant(
        "softmax_in_float32",
        "runs the softmax in float32 and forgets to cast back",
        ((SOFTMAX, "weights = torch.softmax(scores.float(), dim=-1)"),),
        ("test_attention_keeps_half_precision",),
    ),
    Mutant(
        "mask_fill_tensor_on_cpu",
        "builds the -inf filler with torch.full, on the default device and dtype",
        ((MASKING, 'scores = torch.where(mask, scores, torch.full(scores.shape, float("-inf")))'),),
        ("test_everything_runs_on_the_meta_device", "test_attention_keeps_half_precision"),
    ),
    Mutant(
        "broadcast_scores",
        "builds the scores by broadcasting q against k, a (..., Nq, Nk, d) intermediate",
        ((SCORES, "scores = (q.unsqueeze(-2) * k.unsqueeze(-3)).sum(-1) / math.sqrt(d_k)"),),
        ("test_attention_memory_grows_quadratically_with_sequence_length",),
    ),
    Mutant(
        "max_subtracted_with_item",
        "subtracts the global maximum for stability, read with .item(), which needs real data",
        ((SOFTMAX, "weights = torch.softmax(scores - scores.max().item(), dim=-1)"),),
        ("test_everything_runs_on_the_meta_device", "test_attention_memory_on_meta_device_reaches_16k_tokens"),
    ),
    Mutant(
        "causal_by_default",
        "SelfAttention applies a causal mask when none is given",
        (
            (
                "output, _ = scaled_dot_product_attention(q, k, v, mask)",
                "if mask is None:\n"
                "            mask = torch.ones(x.size(1), x.size(1), dtype=torch.bool, device=x.device).tril()\n"
                "        output, _ = scaled_dot_product_attention(q, k, v, mask)",
            ),
        ),
        ("test_self_attention_is_permutation_equivariant", "test_self_attention_matches_formula_with_its_own_weights"),
    ),
    Mutant(
        "key_from_query_projection",
        "projects the keys with q_proj",
        (("k = self.k_proj(x)", "k = self.q_proj(x)"),),
        ("test_self_attention_matches_formula_with_its_own_weights",),
    ),
    Mutant(
        "projection_bias",
        "keeps nn.Linear's default bias on the query projection",
        (
            (
                "self.q_proj = nn.Linear(embed_dim, head_dim, bias=False)",
                "self.q_proj = nn.Linear(embed_dim, head_dim)",
            ),
        ),
        ("test_self_attention_projections_follow_the_spec", "test_self_attention_matches_formula_with_its_own_weights"),
    ),
    Mutant(
        "head_dim_default",
        "defaults head_dim to 64 instead of embed_dim",
        (("head_dim = embed_dim if head_dim is None else head_dim", "head_dim = head_dim or 64"),),
        ("test_self_attention_projections_follow_the_spec",),
    ),
    Mutant(
        "sin_cos_swapped",
        "puts cos in the even columns and sin in the odd ones",
        (
            ("pe[:, 0::2] = torch.sin(angle)", "pe[:, 0::2] = torch.cos(angle)"),
            ("pe[:, 1::2] = torch.cos(angle[:, : dim // 2])", "pe[:, 1::2] = torch.sin(angle[:, : dim // 2])"),
        ),
        ("test_sinusoidal_encoding_matches_formula", "test_positional_encoding_adds_the_sinusoidal_table"),
    ),
    Mutant(
        "exponent_i_not_2i",
        "uses i/dim instead of 2i/dim in the frequencies",
        (
            (
                "two_i = torch.arange(0, dim, 2, dtype=torch.float32)",
                "two_i = torch.arange(0, (dim + 1) // 2, dtype=torch.float32)",
            ),
        ),
        ("test_sinusoidal_encoding_matches_formula",),
    ),
    Mutant(
        "table_in_float64",
        "returns the table in float64",
        (("pe = torch.zeros(num_positions, dim)", "pe = torch.zeros(num_positions, dim, dtype=torch.float64)"),),
        ("test_sinusoidal_encoding_matches_formula",),
    ),
    Mutant(
        "pe_plain_attribute",
        "stores the table as a plain attribute, so .to(device) leaves it behind",
        (
            (
                'self.register_buffer("pe", sinusoidal_positional_encoding(max_len, dim))',
                "self.pe = sinusoidal_positional_encoding(max_len, dim)",
            ),
        ),
        ("test_positional_encoding_table_is_a_buffer_that_moves", "test_everything_runs_on_the_meta_device"),
    ),
    Mutant(
        "pe_upcasts_half",
        "adds the float32 table to a half-precision input without casting",
        (("return x + self.pe[:n].to(x.dtype)", "return x + self.pe[:n]"),),
        ("test_modules_keep_half_precision",),
    ),
    Mutant(
        "pe_slices_batch_dim",
        "slices the table with the batch size instead of the sequence length",
        (
            (
                "n = x.size(1)\n        return x + self.pe[:n].to(x.dtype)",
                "n = x.size(0)\n        return x + self.pe[:n].to(x.dtype)",
            ),
        ),
        ("test_positional_encoding_adds_the_sinusoidal_table",),
    ),
    Mutant(
        "learned_table_not_a_parameter",
        "keeps the learned table as a plain tensor, so it is never trained",
        (
            (
                "self.pos_embedding = nn.Parameter(torch.randn(max_len, dim) * 0.02)",
                "self.pos_embedding = torch.randn(max_len, dim) * 0.02",
            ),
        ),
        ("test_learned_encoding_is_a_trained_parameter",),
    ),
]
