"""01_rnn_attention, variant C.

final state h_n[-1], the scoring vector applied with matmul, a None mask replaced by an
all-True one, context by matmul, a decoder whose GRU cell reads only the embedded token (the
context, still computed from the previous state, feeds the output layer only), greedy decoding
into preallocated tensors cut to the number of steps taken.
"""

import torch
import torch.nn.functional as F
from torch import nn


class Encoder(nn.Module):
    def __init__(self, vocab_size, embed_dim, hidden_dim):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.rnn = nn.GRU(input_size=embed_dim, hidden_size=hidden_dim, batch_first=True)

    def forward(self, src):
        outputs, h_n = self.rnn(self.embedding(src))
        return outputs, h_n[-1]


class AdditiveAttention(nn.Module):
    def __init__(self, query_dim, key_dim, hidden_dim):
        super().__init__()
        self.query_proj = nn.Linear(query_dim, hidden_dim, bias=False)
        self.key_proj = nn.Linear(key_dim, hidden_dim, bias=False)
        self.score_proj = nn.Linear(hidden_dim, 1, bias=False)

    def forward(self, query, keys, mask=None):
        features = torch.tanh(self.query_proj(query)[:, None] + self.key_proj(keys))  # (B, S, A)
        scores = torch.matmul(features, self.score_proj.weight.t()).squeeze(2)  # (B, S)
        if mask is None:
            mask = torch.ones_like(scores, dtype=torch.bool)
        weights = F.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
        context = torch.matmul(weights.unsqueeze(1), keys).squeeze(1)  # (B, Dk)
        return context, weights


class AttentionDecoder(nn.Module):
    def __init__(self, vocab_size, embed_dim, hidden_dim, key_dim):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.attention = AdditiveAttention(hidden_dim, key_dim, hidden_dim)
        self.rnn_cell = nn.GRUCell(embed_dim, hidden_dim)
        self.out = nn.Linear(hidden_dim + key_dim, vocab_size)

    def forward_step(self, prev_tokens, state, enc_outputs, mask=None):
        context, weights = self.attention(state, enc_outputs, mask)
        new_state = self.rnn_cell(self.embedding(prev_tokens), state)
        logits = self.out(torch.cat([new_state, context], dim=-1))
        return logits, new_state, weights


class Seq2SeqWithAttention(nn.Module):
    def __init__(self, src_vocab, tgt_vocab, embed_dim, hidden_dim):
        super().__init__()
        self.encoder = Encoder(src_vocab, embed_dim, hidden_dim)
        self.decoder = AttentionDecoder(tgt_vocab, embed_dim, hidden_dim, hidden_dim)

    def forward(self, src, tgt_in, src_mask=None):
        memory, hidden = self.encoder(src)
        steps = []
        for t in range(tgt_in.shape[1]):
            logits, hidden, _ = self.decoder.forward_step(tgt_in[:, t], hidden, memory, src_mask)
            steps.append(logits.unsqueeze(1))
        return torch.cat(steps, dim=1)

    def greedy_decode(self, src, src_mask, max_len, bos_id, eos_id):
        """Finished sequences keep decoding; the outputs are cut to the steps actually taken."""
        memory, hidden = self.encoder(src)
        batch, src_len = src.shape
        tokens = torch.empty(batch, max_len, dtype=torch.long, device=src.device)
        weights = memory.new_empty(batch, max_len, src_len)
        current = torch.full((batch,), bos_id, dtype=torch.long, device=src.device)
        ended = torch.zeros(batch, dtype=torch.bool, device=src.device)
        steps = 0
        while steps < max_len:
            logits, hidden, weights[:, steps] = self.decoder.forward_step(current, hidden, memory, src_mask)
            current = logits.argmax(dim=-1)
            tokens[:, steps] = current
            ended |= current == eos_id
            steps += 1
            if ended.all():
                break
        return tokens[:, :steps], weights[:, :steps]
