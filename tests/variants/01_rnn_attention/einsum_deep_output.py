"""01_rnn_attention, variant A.

final state sliced from the GRU outputs, einsum scores, torch.where masking, context as a
broadcast product summed over positions, a "deep output" layer that also sees the embedded
previous token, greedy decoding in a while loop that keeps decoding finished sequences.
"""

import torch
from torch import nn


class Encoder(nn.Module):
    def __init__(self, vocab_size, embed_dim, hidden_dim):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.rnn = nn.GRU(embed_dim, hidden_dim, batch_first=True)

    def forward(self, src):
        """src (B, S) -> outputs (B, S, H), final (B, H)."""
        outputs, _ = self.rnn(self.embedding(src))
        return outputs, outputs[:, -1]  # one unidirectional layer: the last output is h_n


class AdditiveAttention(nn.Module):
    def __init__(self, query_dim, key_dim, hidden_dim):
        super().__init__()
        self.query_proj = nn.Linear(query_dim, hidden_dim, bias=False)
        self.key_proj = nn.Linear(key_dim, hidden_dim, bias=False)
        self.score_proj = nn.Linear(hidden_dim, 1, bias=False)

    def forward(self, query, keys, mask=None):
        """query (B, Dq), keys (B, S, Dk), mask (B, S) -> context (B, Dk), weights (B, S)."""
        hidden = torch.tanh(self.key_proj(keys) + self.query_proj(query)[:, None, :])  # (B, S, A)
        scores = torch.einsum("bsa,a->bs", hidden, self.score_proj.weight[0])  # (B, S)
        if mask is not None:
            scores = torch.where(mask, scores, float("-inf"))
        weights = scores.softmax(dim=1)
        context = (weights[:, :, None] * keys).sum(dim=1)  # (B, Dk)
        return context, weights


class AttentionDecoder(nn.Module):
    def __init__(self, vocab_size, embed_dim, hidden_dim, key_dim):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.attention = AdditiveAttention(hidden_dim, key_dim, hidden_dim)
        self.rnn_cell = nn.GRUCell(embed_dim + key_dim, hidden_dim)
        # Bahdanau et al.'s output layer sees the new state, the context and the previous token
        self.out = nn.Linear(hidden_dim + key_dim + embed_dim, vocab_size)

    def forward_step(self, prev_tokens, state, enc_outputs, mask=None):
        """(B,), (B, H), (B, S, Dk), (B, S) -> logits (B, V), new_state (B, H), weights (B, S)."""
        embedded = self.embedding(prev_tokens)  # (B, E)
        context, weights = self.attention(state, enc_outputs, mask)
        new_state = self.rnn_cell(torch.cat((embedded, context), dim=1), state)
        logits = self.out(torch.cat((new_state, context, embedded), dim=1))
        return logits, new_state, weights


class Seq2SeqWithAttention(nn.Module):
    def __init__(self, src_vocab, tgt_vocab, embed_dim, hidden_dim):
        super().__init__()
        self.encoder = Encoder(src_vocab, embed_dim, hidden_dim)
        self.decoder = AttentionDecoder(tgt_vocab, embed_dim, hidden_dim, key_dim=hidden_dim)

    def forward(self, src, tgt_in, src_mask=None):
        """Teacher forcing: (B, S), (B, T), (B, S) -> logits (B, T, V)."""
        enc_outputs, state = self.encoder(src)
        all_logits = []
        for prev_tokens in tgt_in.unbind(dim=1):  # time steps
            logits, state, _ = self.decoder.forward_step(prev_tokens, state, enc_outputs, src_mask)
            all_logits.append(logits)
        return torch.stack(all_logits, dim=1)

    def greedy_decode(self, src, src_mask, max_len, bos_id, eos_id):
        """-> tokens (B, T') without bos, weights (B, T', S); finished sequences keep decoding."""
        enc_outputs, state = self.encoder(src)
        prev_tokens = src.new_full((src.shape[0],), bos_id)
        seen_eos = torch.zeros_like(prev_tokens, dtype=torch.bool)
        tokens, weights = [], []
        while len(tokens) < max_len and not bool(seen_eos.all()):
            logits, state, step_weights = self.decoder.forward_step(prev_tokens, state, enc_outputs, src_mask)
            prev_tokens = logits.argmax(dim=1)
            seen_eos |= prev_tokens.eq(eos_id)
            tokens.append(prev_tokens)
            weights.append(step_weights)
        return torch.stack(tokens, dim=1), torch.stack(weights, dim=1)
