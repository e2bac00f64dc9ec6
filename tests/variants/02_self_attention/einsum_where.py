"""02_self_attention, variant A.

einsum products, torch.where masking, frequencies as exp(-log(10000) * 2i / dim),
sin/cos interleaved by torch.stack.
"""

import math

import torch
from torch import nn


def scaled_dot_product_attention(q, k, v, mask=None):
    """q (..., Nq, d), k (..., Nk, d), v (..., Nk, dv).

    Returns output (..., Nq, dv) and weights (..., Nq, Nk).
    """
    scale = math.sqrt(q.shape[-1])
    scores = torch.einsum("...qd,...kd->...qk", q, k) / scale  # (..., Nq, Nk)
    if mask is not None:
        # a Python float keeps the scores' dtype; -inf makes the weight exactly 0
        scores = torch.where(mask, scores, float("-inf"))
    weights = scores.softmax(dim=-1)  # (..., Nq, Nk)
    output = torch.einsum("...qk,...kv->...qv", weights, v)  # (..., Nq, dv)
    return output, weights


class SelfAttention(nn.Module):
    def __init__(self, embed_dim, head_dim=None):
        super().__init__()
        if head_dim is None:
            head_dim = embed_dim
        self.q_proj = nn.Linear(embed_dim, head_dim, bias=False)
        self.k_proj = nn.Linear(embed_dim, head_dim, bias=False)
        self.v_proj = nn.Linear(embed_dim, head_dim, bias=False)

    def forward(self, x, mask=None):
        """x (B, N, embed_dim) -> (B, N, head_dim)."""
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        output, _ = scaled_dot_product_attention(q, k, v, mask=mask)
        return output


def sinusoidal_positional_encoding(num_positions, dim):
    """(num_positions, dim) float32 table; even features sin, odd features cos."""
    two_i = torch.arange(0, dim, 2, dtype=torch.float32)  # (ceil(dim/2),)
    inv_freq = torch.exp(-math.log(10000.0) * two_i / dim)  # 10000^(-2i/dim)
    position = torch.arange(num_positions, dtype=torch.float32)[:, None]  # (P, 1)
    angle = position * inv_freq  # (P, ceil(dim/2))
    # (P, ceil(dim/2), 2) -> (P, 2 * ceil(dim/2)): sin, cos, sin, cos, ...
    table = torch.stack((angle.sin(), angle.cos()), dim=-1).flatten(start_dim=1)
    return table[:, :dim].contiguous()


class PositionalEncoding(nn.Module):
    def __init__(self, dim, max_len=5000):
        super().__init__()
        self.register_buffer("pe", sinusoidal_positional_encoding(max_len, dim))

    def forward(self, x):
        """x (B, N, dim) -> x + pe[:N]."""
        return x + self.pe[: x.shape[1]].to(dtype=x.dtype)


class LearnedPositionalEncoding(nn.Module):
    def __init__(self, max_len, dim):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(max_len, dim))
        nn.init.trunc_normal_(self.pos_embedding, std=0.02)

    def forward(self, x):
        """x (B, N, dim) -> x + pos_embedding[:N]."""
        return x + self.pos_embedding[: x.shape[1]].to(dtype=x.dtype)
