"""01_rnn_attention, variant B.

h_n squeezed for the final state, masked_fill(mask.logical_not(), -torch.inf), softmax taken
in float32 and cast back, context by einsum, the context placed first in both concatenations,
teacher forcing written into a preallocated tensor, greedy decoding that pads finished
sequences with eos (and feeds eos back).
"""

import torch
from torch import nn


class Encoder(nn.Module):
    def __init__(self, vocab_size, embed_dim, hidden_dim):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.rnn = nn.GRU(embed_dim, hidden_dim, num_layers=1, batch_first=True, bidirectional=False)

    def forward(self, src):
        outputs, h_n = self.rnn(self.embedding(src))  # (B, S, H), (1, B, H)
        return outputs, h_n.squeeze(0)


class AdditiveAttention(nn.Module):
    def __init__(self, query_dim, key_dim, hidden_dim):
        super().__init__()
        self.query_proj = nn.Linear(query_dim, hidden_dim, bias=False)
        self.key_proj = nn.Linear(key_dim, hidden_dim, bias=False)
        self.score_proj = nn.Linear(hidden_dim, 1, bias=False)

    def forward(self, query, keys, mask=None):
        s = self.query_proj(query).unsqueeze(-2)  # (B, 1, A)
        e = self.score_proj(torch.tanh(s + self.key_proj(keys)))[..., 0]  # (B, S)
        if mask is not None:
            e = e.masked_fill(mask.logical_not(), -torch.inf)
        # softmax in float32 for half-precision inputs, then back to the input's dtype
        a = torch.softmax(e.float(), dim=-1).to(keys.dtype)  # (B, S)
        c = torch.einsum("bs,bsd->bd", a, keys)  # (B, Dk)
        return c, a


class AttentionDecoder(nn.Module):
    def __init__(self, vocab_size, embed_dim, hidden_dim, key_dim):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.attention = AdditiveAttention(hidden_dim, key_dim, hidden_dim)
        self.rnn_cell = nn.GRUCell(key_dim + embed_dim, hidden_dim)
        self.out = nn.Linear(key_dim + hidden_dim, vocab_size)

    def forward_step(self, prev_tokens, state, enc_outputs, mask=None):
        context, weights = self.attention(state, enc_outputs, mask)  # from s_{t-1}
        new_state = self.rnn_cell(torch.cat([context, self.embedding(prev_tokens)], -1), state)
        return self.out(torch.cat([context, new_state], -1)), new_state, weights


class Seq2SeqWithAttention(nn.Module):
    def __init__(self, src_vocab, tgt_vocab, embed_dim, hidden_dim):
        super().__init__()
        self.encoder = Encoder(src_vocab, embed_dim, hidden_dim)
        self.decoder = AttentionDecoder(tgt_vocab, embed_dim, hidden_dim, hidden_dim)

    def forward(self, src, tgt_in, src_mask=None):
        enc_outputs, state = self.encoder(src)
        batch, steps = tgt_in.shape
        vocab = self.decoder.out.out_features
        logits = enc_outputs.new_empty(batch, steps, vocab)
        for t in range(steps):
            logits[:, t], state, _ = self.decoder.forward_step(tgt_in[:, t], state, enc_outputs, src_mask)
        return logits

    def greedy_decode(self, src, src_mask, max_len, bos_id, eos_id):
        """Once a sequence has produced eos it outputs (and is fed) eos until the batch is done."""
        enc_outputs, state = self.encoder(src)
        token = torch.full((src.size(0),), bos_id, dtype=torch.long, device=src.device)
        done = torch.zeros(src.size(0), dtype=torch.bool, device=src.device)
        tokens, weights = [], []
        for _ in range(max_len):
            logits, state, a = self.decoder.forward_step(token, state, enc_outputs, src_mask)
            token = torch.where(done, eos_id, logits.argmax(-1))
            done = done | (token == eos_id)
            tokens.append(token)
            weights.append(a)
            if done.all():
                break
        return torch.stack(tokens, 1), torch.stack(weights, 1)
