"""Realistic mistakes in 01_rnn_attention, each caught by a hidden test."""

from . import Mutant

SCORES = "hidden = torch.tanh(projected_query + projected_keys)  # (B, S, A)"
MASKING = 'scores = scores.masked_fill(~mask, float("-inf"))'
SOFTMAX = "weights = torch.softmax(scores, dim=-1)  # (B, S)"
CONTEXT = "context = torch.bmm(weights.unsqueeze(1), keys).squeeze(1)  # (B, Dk)"
STEP_ATTENTION = "context, weights = self.attention(state, enc_outputs, mask)  # (B, Dk), (B, S)"
STEP_RNN = "new_state = self.rnn_cell(rnn_input, state)  # (B, H)"
STEP_OUT = "out_input = torch.cat([new_state, context], dim=-1)  # (B, H + Dk)"
TEACHER_STEP = "tgt_in[:, t], state, enc_outputs, src_mask"

MUTANTS = [
    Mutant(
        "final_is_first_state",
        "returns the encoder's first output as its final state",
        (("final = last[0]", "final = outputs[:, 0]"),),
        ("test_encoder_matches_pytorch_gru",),
    ),
    Mutant(
        "bidirectional_encoder",
        "makes the encoder GRU bidirectional",
        (
            (
                "self.rnn = nn.GRU(embed_dim, hidden_dim, batch_first=True)",
                "self.rnn = nn.GRU(embed_dim, hidden_dim // 2, batch_first=True, bidirectional=True)",
            ),
            ("final = last[0]", "final = torch.cat([last[0], last[1]], dim=-1)"),
        ),
        ("test_encoder_layout_follows_the_spec", "test_encoder_matches_pytorch_gru"),
    ),
    Mutant(
        "no_tanh",
        "drops the tanh of the scoring MLP",
        ((SCORES, "hidden = projected_query + projected_keys  # (B, S, A)"),),
        ("test_additive_attention_matches_formula_with_its_own_weights",),
    ),
    Mutant(
        "padding_filled_with_zero",
        "sets padded scores to 0 instead of -inf",
        ((MASKING, "scores = scores.masked_fill(~mask, 0.0)"),),
        ("test_weights_sum_to_one_and_are_zero_on_padding",),
    ),
    Mutant(
        "softmax_over_batch",
        "takes the softmax over the batch dimension",
        ((SOFTMAX, "weights = torch.softmax(scores, dim=0)  # (B, S)"),),
        (
            "test_weights_sum_to_one_and_are_zero_on_padding",
            "test_additive_attention_matches_formula_with_its_own_weights",
        ),
    ),
    Mutant(
        "context_from_projected_keys",
        "applies the weights to the projected keys instead of the encoder outputs",
        ((CONTEXT, "context = torch.bmm(weights.unsqueeze(1), projected_keys).squeeze(1)  # (B, A)"),),
        ("test_context_is_the_weights_applied_to_encoder_outputs", "test_additive_attention_shapes"),
    ),
    Mutant(
        "context_loops_over_batch",
        "computes each batch item's context in a Python loop",
        ((CONTEXT, "context = torch.stack([w @ k for w, k in zip(weights, keys)])  # (B, Dk)"),),
        ("test_no_python_loop_over_batch_items",),
    ),
    Mutant(
        "weights_broadcast_to_square",
        "expands the weights to a (B, S, S) matrix before multiplying by the keys",
        ((CONTEXT, "context = (weights.unsqueeze(1).expand(-1, keys.size(1), -1).contiguous() @ keys)[:, 0]"),),
        ("test_attention_memory_grows_linearly_in_source_length",),
    ),
    Mutant(
        "mask_filler_on_default_device",
        "builds the -inf filler with torch.full, on the default device and dtype",
        ((MASKING, 'scores = torch.where(mask, scores, torch.full(scores.shape, float("-inf")))'),),
        ("test_everything_runs_on_the_meta_device", "test_additive_attention_keeps_half_precision"),
    ),
    Mutant(
        "softmax_in_float32",
        "runs the softmax in float32 and forgets to cast back",
        ((SOFTMAX, "weights = torch.softmax(scores.float(), dim=-1)  # (B, S)"),),
        ("test_additive_attention_keeps_half_precision",),
    ),
    Mutant(
        "attends_with_new_state",
        "steps the GRU first and attends with the new state (the notes' s_t instead of s_{t-1})",
        (
            (STEP_ATTENTION, "context = enc_outputs.mean(dim=1)  # (B, Dk)"),
            (
                STEP_RNN,
                "new_state = self.rnn_cell(rnn_input, state)  # (B, H)\n"
                "        context, weights = self.attention(new_state, enc_outputs, mask)",
            ),
        ),
        ("test_forward_step_attends_with_the_previous_state",),
    ),
    Mutant(
        "context_never_used",
        "computes the attention but feeds zeros instead of the context",
        (
            (
                "rnn_input = torch.cat([embedded, context], dim=-1)",
                "rnn_input = torch.cat([embedded, 0 * context], dim=-1)",
            ),
            (STEP_OUT, "out_input = torch.cat([new_state, 0 * context], dim=-1)  # (B, H + Dk)"),
        ),
        ("test_forward_step_logits_depend_on_the_context",),
    ),
    Mutant(
        "decoder_starts_from_zeros",
        "starts the teacher-forced decoder from zeros instead of the encoder's final state",
        (
            (
                "enc_outputs, state = self.encoder(src)  # (B, S, H), (B, H)\n        step_logits = []",
                "enc_outputs, _ = self.encoder(src)\n        state = torch.zeros_like(enc_outputs[:, 0])\n"
                "        step_logits = []",
            ),
        ),
        ("test_teacher_forcing_equals_chained_forward_steps",),
    ),
    Mutant(
        "teacher_forcing_off_by_one",
        "feeds the previous target token twice (an off-by-one in the time index)",
        ((TEACHER_STEP, TEACHER_STEP.replace("tgt_in[:, t]", "tgt_in[:, max(t - 1, 0)]")),),
        ("test_teacher_forcing_equals_chained_forward_steps",),
    ),
    Mutant(
        "greedy_ignores_mask",
        "forgets to pass the source mask while decoding greedily",
        (
            (
                "tokens, state, enc_outputs, src_mask",
                "tokens, state, enc_outputs, None",
            ),
        ),
        ("test_greedy_decode_is_consistent_with_forward_step",),
    ),
    Mutant(
        "greedy_returns_bos",
        "includes the bos token in the decoded tokens",
        (
            (
                "step_tokens = []\n",
                "step_tokens = [tokens]\n",
            ),
        ),
        ("test_greedy_decode_is_consistent_with_forward_step",),
    ),
    Mutant(
        "mask_as_lengths",
        "turns the mask into lengths, assuming padding always sits at the end",
        (
            (
                MASKING,
                "positions = torch.arange(scores.size(1), device=scores.device)[None, :]  # (1, S)\n"
                '            scores = scores.masked_fill(positions >= mask.sum(-1, keepdim=True), float("-inf"))',
            ),
        ),
        ("test_context_is_invariant_to_permuting_positions_with_the_mask",),
    ),
    Mutant(
        "attention_sized_by_embed_dim",
        "sizes the decoder's attention MLP with embed_dim instead of hidden_dim",
        (
            (
                "self.attention = AdditiveAttention(hidden_dim, key_dim, hidden_dim)",
                "self.attention = AdditiveAttention(hidden_dim, key_dim, embed_dim)",
            ),
        ),
        ("test_decoder_layout_follows_the_spec",),
    ),
    Mutant(
        "ignores_previous_token",
        "never feeds the previous token to the decoder",
        (
            (
                "embedded = self.embedding(prev_tokens)  # (B, E)",
                "embedded = torch.zeros(prev_tokens.size(0), self.embedding.embedding_dim, device=state.device)",
            ),
        ),
        ("test_gradients_reach_every_parameter",),
    ),
]
