"""02_self_attention, variant B.

q scaled before the product, leading dimensions folded into one for torch.bmm,
F.softmax, masked_fill with float("-inf"), table from torch.outer interleaved
through an explicit (P, half, 2) view.
"""

import torch
import torch.nn.functional as F
from torch import nn


def scaled_dot_product_attention(q, k, v, mask=None):
    """q (..., Nq, d), k (..., Nk, d), v (..., Nk, dv).

    Returns output (..., Nq, dv) and weights (..., Nq, Nk).
    """
    n_q, d = q.shape[-2:]
    n_k, d_v = v.shape[-2:]
    batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    # fold every leading dimension into one so that bmm can take the products
    q3 = (q * d**-0.5).expand(*batch, n_q, d).reshape(-1, n_q, d)  # (b, Nq, d)
    k3 = k.expand(*batch, n_k, d).reshape(-1, n_k, d)  # (b, Nk, d)
    scores = torch.bmm(q3, k3.transpose(1, 2)).view(*batch, n_q, n_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = F.softmax(scores, dim=-1)  # (..., Nq, Nk)
    batch = weights.shape[:-2]  # a mask may have added leading dimensions
    v3 = v.expand(*batch, n_k, d_v).reshape(-1, n_k, d_v)  # (b, Nk, dv)
    output = torch.bmm(weights.reshape(-1, n_q, n_k), v3)  # (b, Nq, dv)
    return output.view(*batch, n_q, d_v), weights


class SelfAttention(nn.Module):
    def __init__(self, embed_dim, head_dim=None):
        super().__init__()
        head_dim = head_dim or embed_dim
        self.q_proj = nn.Linear(embed_dim, head_dim, bias=False)
        self.k_proj = nn.Linear(embed_dim, head_dim, bias=False)
        self.v_proj = nn.Linear(embed_dim, head_dim, bias=False)

    def forward(self, x, mask=None):
        projected = (self.q_proj(x), self.k_proj(x), self.v_proj(x))
        return scaled_dot_product_attention(*projected, mask)[0]


def sinusoidal_positional_encoding(num_positions, dim):
    half = (dim + 1) // 2
    exponent = torch.arange(half, dtype=torch.float32) * 2 / dim  # 2i/dim
    inv_freq = 1.0 / torch.pow(10000.0, exponent)  # (half,)
    position = torch.arange(num_positions, dtype=torch.float32)  # (P,)
    angle = torch.outer(position, inv_freq)  # (P, half)
    table = torch.empty(num_positions, half, 2)  # [..., 0] sin, [..., 1] cos
    table[:, :, 0] = torch.sin(angle)
    table[:, :, 1] = torch.cos(angle)
    return table.view(num_positions, 2 * half)[:, :dim].clone()


class PositionalEncoding(nn.Module):
    def __init__(self, dim, max_len=5000):
        super().__init__()
        table = sinusoidal_positional_encoding(max_len, dim)
        self.register_buffer("pe", table, persistent=True)

    def forward(self, x):
        return x + self.pe[: x.size(-2)].type_as(x)


class LearnedPositionalEncoding(nn.Module):
    def __init__(self, max_len, dim):
        super().__init__()
        self.pos_embedding = nn.Parameter(0.02 * torch.randn(max_len, dim))

    def forward(self, x):
        return x + self.pos_embedding[None, : x.size(1)].type_as(x)
