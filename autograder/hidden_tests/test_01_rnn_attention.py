"""Hidden tests for 01_rnn_attention.

The student's modules run in another process (``student``); expected values are
computed here from PyTorch's own GRU and from the formula of additive attention
with the module's own weights.
"""

import pytest
import torch

from autograder.feedback import Feedback, close, expect, expect_close, expect_tensor, loglog_slope, randn

VOCAB, EMBED, HIDDEN = 13, 6, 8


def tokens(*shape, vocab=VOCAB, device="cpu", seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, shape, generator=generator).to(device)


def padding_mask(lengths, max_len, device="cpu"):
    """(B, S) bool, True on the first ``length`` positions of each row."""
    return (torch.arange(max_len)[None, :] < torch.tensor(lengths)[:, None]).to(device)


def reference_additive_attention(module, query, keys, mask=None):
    """softmax_i(w . tanh(Wq s + Wk h_i)) over real positions, and the weighted sum of the h_i."""
    wq, wk, w = (getattr(module, name).weight.double() for name in ("query_proj", "key_proj", "score_proj"))
    hidden = torch.tanh(query.double()[:, None, :] @ wq.T + keys.double() @ wk.T)  # (B, S, A)
    scores = (hidden @ w.T).squeeze(-1)  # (B, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return (weights[:, :, None] * keys.double()).sum(1), weights


def attention_call(student, device, query_dim=10, key_dim=7, hidden_dim=9, batch=3, length=6, mask=True):
    module = student.AdditiveAttention(query_dim, key_dim, hidden_dim).to(device)
    query, keys = randn(batch, query_dim, device=device, seed=1), randn(batch, length, key_dim, device=device, seed=2)
    lengths = [length, length - 2, 1][:batch] + [length] * max(0, batch - 3)
    return module, query, keys, (padding_mask(lengths, length, device) if mask else None)


def seq2seq(student, device, seed=0):
    torch.manual_seed(seed)
    return student.Seq2SeqWithAttention(VOCAB, VOCAB + 2, EMBED, HIDDEN).to(device)


# --------------------------------------------------------------------------------------
# Encoder


@pytest.mark.points(
    1, hint="embedding = nn.Embedding(vocab, embed_dim); rnn = nn.GRU(embed_dim, hidden_dim, batch_first=True)"
)
def test_encoder_layout_follows_the_spec(student, device):
    """Encoder has an nn.Embedding and a one-layer, unidirectional, batch-first nn.GRU."""
    encoder = student.Encoder(VOCAB, EMBED, HIDDEN)
    expect(encoder.embedding._type == "Embedding", f"embedding is a {encoder.embedding._type}, expected nn.Embedding")
    expect(encoder.rnn._type == "GRU", f"rnn is a {encoder.rnn._type}, expected nn.GRU")
    expect(encoder.rnn.batch_first is True, "the GRU must be batch_first=True")
    expect(encoder.rnn.num_layers == 1 and encoder.rnn.bidirectional is False, "use one unidirectional GRU layer")
    expect(encoder.rnn.hidden_size == HIDDEN, f"the GRU's hidden size is {encoder.rnn.hidden_size}, expected {HIDDEN}")


@pytest.mark.points(2, hint="outputs, h_n = self.rnn(self.embedding(src)); final = h_n[0], the last time step's state")
def test_encoder_matches_pytorch_gru(student, device):
    """outputs (B, S, H) and final (B, H) equal PyTorch's GRU run with the module's own weights."""
    encoder = student.Encoder(VOCAB, EMBED, HIDDEN).to(device)
    src = tokens(3, 7, device=device, seed=3)
    result = encoder(src)
    expect(isinstance(result, tuple) and len(result) == 2, "Encoder.forward returns a tuple (outputs, final)")
    outputs, final = result
    expect_tensor(outputs, "encoder outputs", shape=(3, 7, HIDDEN))
    expect_tensor(final, "encoder final state", shape=(3, HIDDEN))
    embedding = torch.nn.Embedding(VOCAB, EMBED).to(device)
    gru = torch.nn.GRU(EMBED, HIDDEN, batch_first=True).to(device)
    embedding.load_state_dict(encoder.embedding.state_dict())
    gru.load_state_dict(encoder.rnn.state_dict())
    with torch.no_grad():
        expected_outputs, expected_last = gru(embedding(src))
    expect_close(outputs, expected_outputs, "encoder outputs")
    expect(
        close(final, expected_last[0]),
        "the final state is not the GRU's state after the last time step (h_n[0], equal to outputs[:, -1])",
    )


# --------------------------------------------------------------------------------------
# AdditiveAttention


@pytest.mark.points(1, hint="context (B, Dk) is a weighted sum over the S positions; weights (B, S)")
def test_additive_attention_shapes(student, device):
    """context has shape (B, Dk) and weights (B, S), for query, key and hidden sizes all different."""
    module, query, keys, mask = attention_call(student, device)
    for m in (None, mask):
        result = module(query, keys, m)
        expect(isinstance(result, tuple) and len(result) == 2, "AdditiveAttention returns (context, weights)")
        expect_tensor(result[0], "context", shape=(3, 7))
        expect_tensor(result[1], "weights", shape=(3, 6))


@pytest.mark.points(3, hint="e_i = score_proj(tanh(query_proj(s) + key_proj(h_i))), softmax over positions")
def test_additive_attention_matches_formula_with_its_own_weights(student, device):
    """Weights and context equal the additive-attention formula computed from the module's own weights."""
    module, query, keys, mask = attention_call(student, device, key_dim=9, hidden_dim=9)
    for m in (None, mask):
        context, weights = module(query, keys, m)
        expected_context, expected_weights = reference_additive_attention(module, query, keys, m)
        expect_close(weights, expected_weights, "the attention weights" + (" with padding" if m is not None else ""))
        expect_close(context, expected_context, "the context" + (" with padding" if m is not None else ""))


@pytest.mark.points(2, hint="masked_fill(~mask, float('-inf')) before a softmax over dim=-1 (the positions)")
def test_weights_sum_to_one_and_are_zero_on_padding(student, device):
    """Each row of weights sums to 1 over the real tokens and is exactly 0 on padding."""
    module, query, keys, mask = attention_call(student, device)
    _, weights = module(query, keys, mask)
    expect_tensor(weights, "weights", shape=(3, 6))
    padded = weights[~mask]
    expect(bool((padded == 0).all()), f"padding positions get weights up to {padded.abs().max().item():.3g}, not 0")
    sums = weights.double().sum(-1)
    expect(torch.allclose(sums, torch.ones_like(sums), atol=1e-5), "each row of weights must sum to 1")


@pytest.mark.points(2, hint="context = sum_i weights_i * h_i over the encoder outputs themselves, not key_proj(h_i)")
def test_context_is_the_weights_applied_to_encoder_outputs(student, device):
    """context == sum_i weights_i * keys_i, with the module's own returned weights."""
    module, query, keys, mask = attention_call(student, device, key_dim=9, hidden_dim=9)
    context, weights = module(query, keys, mask)
    expect_tensor(weights, "weights", shape=(3, 6))
    expected = (weights.double()[:, :, None] * keys.double()).sum(1)
    expect_close(context, expected, "context (compared with your weights applied to the encoder outputs)")


@pytest.mark.points(2, hint="attention treats positions as a set: nothing may depend on where a key sits")
def test_context_is_invariant_to_permuting_positions_with_the_mask(student, device):
    """Permuting the encoder positions together with the mask leaves the context unchanged and permutes the weights."""
    module, query, keys, mask = attention_call(student, device)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(1)).to(device)
    context, weights = module(query, keys, mask)
    context_p, weights_p = module(query, keys[:, perm], mask[:, perm])
    expect_tensor(context_p, "context", shape=(3, 7))
    expect(close(context_p, context), "permuting the keys and the mask together changed the context")
    expect(close(weights_p, weights[:, perm]), "the weights did not follow the permutation of the keys")


@pytest.mark.points(2, hint="a (B, S) computation: memory grows with S, never with S x S")
def test_attention_memory_grows_linearly_in_source_length(student, probe):
    """Peak memory of one attention step (forward + backward) grows linearly with the source length."""
    sizes = [512, 1024, 2048, 4096]
    module = student.AdditiveAttention(16, 16, 16)
    peaks = []
    for length in sizes:
        keys = randn(2, length, 16, seed=length).requires_grad_()
        peaks.append(probe("peak_memory", module, randn(2, 16, seed=1), keys, None))
    slope = loglog_slope(sizes, peaks)
    expect(
        0.8 <= slope <= 1.2, f"peak memory grew as S^{slope:.2f} over S = {sizes}; one attention step is linear in S"
    )


# --------------------------------------------------------------------------------------
# AttentionDecoder


@pytest.mark.points(
    1, hint="attention = AdditiveAttention(hidden_dim, key_dim, hidden_dim); rnn_cell = nn.GRUCell(..., hidden_dim)"
)
def test_decoder_layout_follows_the_spec(student, device):
    """embedding, an AdditiveAttention(hidden_dim, key_dim, hidden_dim), a GRUCell and an output Linear."""
    decoder = student.AttentionDecoder(VOCAB, EMBED, HIDDEN, 5)
    expect(decoder.embedding._type == "Embedding", "decoder.embedding should be an nn.Embedding")
    expect(decoder.attention._type == "AdditiveAttention", "decoder.attention should be your AdditiveAttention")
    expect_tensor(decoder.attention.query_proj.weight, "decoder.attention.query_proj.weight", shape=(HIDDEN, HIDDEN))
    expect_tensor(decoder.attention.key_proj.weight, "decoder.attention.key_proj.weight", shape=(HIDDEN, 5))
    expect(decoder.rnn_cell._type == "GRUCell", "decoder.rnn_cell should be an nn.GRUCell")
    expect(decoder.rnn_cell.hidden_size == HIDDEN, "the GRUCell's hidden size should be hidden_dim")
    expect(decoder.out._type == "Linear" and decoder.out.out_features == VOCAB, "decoder.out maps to vocab_size logits")


def decoder_step_inputs(device, batch=3, length=5, key_dim=HIDDEN):
    prev = tokens(batch, device=device, seed=4)
    state = randn(batch, HIDDEN, device=device, seed=5)
    enc = randn(batch, length, key_dim, device=device, seed=6)
    return prev, state, enc, padding_mask([length, 3, 2][:batch], length, device)


@pytest.mark.points(
    3, hint="c_t comes from the previous state: attention(state, enc_outputs, mask) before the GRU step"
)
def test_forward_step_attends_with_the_previous_state(student, device):
    """forward_step's weights equal the attention of the state passed in (s_{t-1}), and its shapes are right."""
    decoder = student.AttentionDecoder(VOCAB, EMBED, HIDDEN, HIDDEN).to(device)
    prev, state, enc, mask = decoder_step_inputs(device)
    result = decoder.forward_step(prev, state, enc, mask)
    expect(isinstance(result, tuple) and len(result) == 3, "forward_step returns (logits, new_state, weights)")
    logits, new_state, weights = result
    expect_tensor(logits, "logits", shape=(3, VOCAB))
    expect_tensor(new_state, "new_state", shape=(3, HIDDEN))
    expect_tensor(weights, "weights", shape=(3, 5))
    _, expected = reference_additive_attention(decoder.attention, state, enc, mask)
    if not close(weights, expected):
        _, with_new_state = reference_additive_attention(decoder.attention, new_state, enc, mask)
        raise Feedback(
            "the step's attention weights are not those of the state passed in"
            + ("; they match attention with the NEW state" if close(weights, with_new_state) else ""),
            diagnosed=close(weights, with_new_state),
        )


@pytest.mark.points(2, hint="feed the context into the GRU input and/or the output layer")
def test_forward_step_logits_depend_on_the_context(student, device):
    """Changing the encoder outputs (and nothing else) changes the step's logits."""
    decoder = student.AttentionDecoder(VOCAB, EMBED, HIDDEN, HIDDEN).to(device)
    prev, state, enc, mask = decoder_step_inputs(device)
    logits, _, _ = decoder.forward_step(prev, state, enc, mask)
    other_logits, _, _ = decoder.forward_step(prev, state, enc * 3 + 1, mask)
    expect_tensor(logits, "logits", shape=(3, VOCAB))
    expect(not close(logits, other_logits), "the logits do not change with the encoder outputs: the context is unused")


# --------------------------------------------------------------------------------------
# Seq2SeqWithAttention


@pytest.mark.points(3, hint="start from the encoder's final state; at step t feed tgt_in[:, t] and carry the new state")
def test_teacher_forcing_equals_chained_forward_steps(student, device):
    """forward(src, tgt_in, mask) equals running decoder.forward_step over tgt_in from the encoder's final state."""
    model = seq2seq(student, device)
    src, tgt_in = tokens(3, 6, device=device, seed=7), tokens(3, 4, vocab=VOCAB + 2, device=device, seed=8)
    mask = padding_mask([6, 4, 2], 6, device)
    logits = model(src, tgt_in, mask)
    expect_tensor(logits, "logits", shape=(3, 4, VOCAB + 2))
    enc_outputs, state = model.encoder(src)
    for t in range(4):
        step_logits, state, _ = model.decoder.forward_step(tgt_in[:, t], state, enc_outputs, mask)
        expect(close(logits[:, t], step_logits), f"forward's logits at step {t} differ from chaining forward_step")


@pytest.mark.points(3, hint="start from bos_id, feed back argmax, pass src_mask every step, return tokens without bos")
def test_greedy_decode_is_consistent_with_forward_step(student, device):
    """greedy_decode returns T' <= max_len steps, and up to each row's first eos its tokens and weights are the
    argmax chain of forward_step."""
    model = seq2seq(student, device, seed=1)
    src, mask = tokens(3, 6, device=device, seed=9), padding_mask([6, 5, 3], 6, device)
    bos, eos, max_len = VOCAB, VOCAB + 1, 7
    result = model.greedy_decode(src, mask, max_len, bos, eos)
    expect(isinstance(result, tuple) and len(result) == 2, "greedy_decode returns (tokens, weights)")
    out_tokens, out_weights = result
    expect_tensor(out_tokens, "tokens", dtype=torch.long)
    steps = out_tokens.size(1) if out_tokens.dim() == 2 else -1
    expect(
        out_tokens.dim() == 2 and out_tokens.size(0) == 3 and 1 <= steps <= max_len,
        "tokens should be (B, T'), T' <= max_len",
    )
    expect_tensor(out_weights, "weights", shape=(3, steps, 6))
    enc_outputs, state = model.encoder(src)
    current = torch.full((3,), bos, dtype=torch.long, device=device)
    finished = torch.zeros(3, dtype=torch.bool, device=device)
    for t in range(steps):
        logits, state, weights = model.decoder.forward_step(current, state, enc_outputs, mask)
        current = logits.argmax(-1)
        live = ~finished
        expect(
            bool((out_tokens[live, t] == current[live]).all()),
            f"token {t} differs from the argmax of forward_step"
            + (" (is the bos token included in the output?)" if t == 0 else ""),
        )
        expect(close(out_weights[live, t], weights[live]), f"the weights of step {t} differ from forward_step's")
        finished |= current == eos
    if steps < max_len:
        expect(bool(finished.all()), f"decoding stopped after {steps} < max_len steps before every row produced eos")


@pytest.mark.points(1, hint="every parameter must take part in the forward pass")
def test_gradients_reach_every_parameter(student, probe, device):
    """A loss on forward's logits sends gradient to every parameter of Seq2SeqWithAttention."""
    model = seq2seq(student, device)
    src, tgt_in = tokens(2, 5, device=device, seed=10), tokens(2, 4, vocab=VOCAB + 2, device=device, seed=11)
    grads = probe("gradients", model, src, tgt_in, padding_mask([5, 3], 5, device))["params"]
    missing = [name for name, grad in grads.items() if grad is None or not bool(grad.abs().sum() > 0)]
    expect(not missing, f"no gradient reaches: {', '.join(missing)}")


# --------------------------------------------------------------------------------------
# GPU-readiness


@pytest.mark.points(2, hint="tensors made in forward take the input's device: torch.zeros(..., device=x.device)")
def test_everything_runs_on_the_meta_device(student, device):
    """Encoder, AdditiveAttention, forward_step and teacher-forced forward take and return meta tensors."""
    meta = torch.device("meta")
    encoder = student.Encoder(VOCAB, EMBED, HIDDEN).to(meta)
    outputs, final = encoder(torch.zeros(2, 5, dtype=torch.long, device=meta))
    expect_tensor(outputs, "encoder outputs on meta", shape=(2, 5, HIDDEN), device="meta")
    module = student.AdditiveAttention(HIDDEN, HIDDEN, HIDDEN).to(meta)
    mask = torch.ones(2, 5, dtype=torch.bool, device=meta)
    context, _ = module(torch.empty(2, HIDDEN, device=meta), torch.empty(2, 5, HIDDEN, device=meta), mask)
    expect_tensor(context, "context on meta", shape=(2, HIDDEN), device="meta")
    model = student.Seq2SeqWithAttention(VOCAB, VOCAB, EMBED, HIDDEN).to(meta)
    src = torch.zeros(2, 5, dtype=torch.long, device=meta)
    logits = model(src, torch.zeros(2, 3, dtype=torch.long, device=meta), mask)
    expect_tensor(logits, "Seq2SeqWithAttention logits on meta", shape=(2, 3, VOCAB), device="meta")


@pytest.mark.points(1, hint="don't compute in float32 inside: keep the input's dtype")
def test_additive_attention_keeps_half_precision(student, device):
    """float16 and bfloat16 modules and inputs give context and weights in the same dtype, numerically right."""
    for dtype in (torch.float16, torch.bfloat16):
        module, query, keys, mask = attention_call(student, device)
        module = module.to(dtype=dtype)
        context, weights = module(query.to(dtype), keys.to(dtype), mask)
        expect_tensor(context, f"context for {dtype}", dtype=dtype)
        expect_tensor(weights, f"weights for {dtype}", dtype=dtype)
        expected_context, _ = reference_additive_attention(module, query.to(dtype), keys.to(dtype), mask)
        expect_close(context, expected_context, f"context in {dtype}", dtype)


@pytest.mark.points(2, hint="batched operations handle all batch items at once (the loop over time steps is fine)")
def test_no_python_loop_over_batch_items(student, probe, device):
    """The number of dispatched tensor ops does not grow with the batch size."""
    module = student.AdditiveAttention(HIDDEN, HIDDEN, HIDDEN).to(device)
    model = seq2seq(student, device)
    counts = {}
    # from 2 up: PyTorch's recurrent cells take a different path for a batch of one
    for batch in (2, 6):
        mask = padding_mask([4] * batch, 4, device)
        keys = randn(batch, 4, HIDDEN, device=device)
        counts[("AdditiveAttention", batch)] = probe(
            "count_ops", module, randn(batch, HIDDEN, device=device), keys, mask
        )
        src, tgt = tokens(batch, 4, device=device), tokens(batch, 3, vocab=VOCAB + 2, device=device)
        counts[("Seq2SeqWithAttention.forward", batch)] = probe("count_ops", model, src, tgt, mask)
    for name in ("AdditiveAttention", "Seq2SeqWithAttention.forward"):
        small, large = counts[(name, 2)], counts[(name, 6)]
        expect(
            small == large,
            f"{name} runs {small} tensor ops for batch size 2 but {large} for 6: a loop over batch items",
        )
