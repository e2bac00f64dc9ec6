"""02_self_attention, variant C.

torch.matmul with a `d ** -0.5` scale, masked_fill(mask.logical_not(), -torch.inf),
softmax taken in float32 and cast back, table computed in float64 from all sines
then all cosines and reordered by an index, nn.init.normal_ for the learned table.
"""

import torch
from torch import nn


def scaled_dot_product_attention(q, k, v, mask=None):
    """q (..., Nq, d), k (..., Nk, d), v (..., Nk, dv).

    Returns output (..., Nq, dv) and weights (..., Nq, Nk).
    """
    scale = q.shape[-1] ** -0.5
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # (..., Nq, Nk)
    if mask is not None:
        scores = scores.masked_fill(mask.logical_not(), -torch.inf)
    # softmax in float32 for half-precision inputs, then back to the input's dtype
    weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)  # (..., Nq, Nk)
    return torch.matmul(weights, v), weights


class SelfAttention(nn.Module):
    def __init__(self, embed_dim, head_dim=None):
        super().__init__()
        out_dim = embed_dim if head_dim is None else head_dim
        self.q_proj = nn.Linear(embed_dim, out_dim, bias=False)
        self.k_proj = nn.Linear(embed_dim, out_dim, bias=False)
        self.v_proj = nn.Linear(embed_dim, out_dim, bias=False)

    def forward(self, x, mask=None):
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)  # (B, N, head_dim)
        out, _ = scaled_dot_product_attention(q, k, v, mask)
        return out


def sinusoidal_positional_encoding(num_positions, dim):
    half = (dim + 1) // 2
    position = torch.arange(num_positions, dtype=torch.float64).unsqueeze(-1)
    exponent = torch.arange(half, dtype=torch.float64) * 2 / dim  # 2i/dim
    angle = position * torch.pow(10000.0, -exponent)  # (P, half)
    blocks = torch.cat([angle.sin(), angle.cos()], dim=-1)  # (P, 2 * half)
    feature = torch.arange(dim)
    # feature 2i is sine column i, feature 2i+1 is cosine column i (at half + i)
    source = feature // 2 + (feature % 2) * half
    return blocks[:, source].to(torch.float32)


class PositionalEncoding(nn.Module):
    def __init__(self, dim, max_len=5000):
        super().__init__()
        self.register_buffer("pe", sinusoidal_positional_encoding(max_len, dim))

    def forward(self, x):
        return x + self.pe.narrow(0, 0, x.size(1)).to(x.dtype)


class LearnedPositionalEncoding(nn.Module):
    def __init__(self, max_len, dim):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.zeros(max_len, dim))
        nn.init.normal_(self.pos_embedding, std=0.02)

    def forward(self, x):
        return x + self.pos_embedding[: x.size(1)].to(x.dtype)
