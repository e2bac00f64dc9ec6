"""03_multihead_attention, variant A.

einsum attention with torch.where masking, heads split with unflatten + permute and merged
with permute + flatten, and a fused q/k/v projection (one matmul, as in timm) for self-attention.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def scaled_dot_product_attention(q, k, v, mask=None):
    """q (..., Nq, d), k (..., Nk, d), v (..., Nk, dv) -> output (..., Nq, dv), weights (..., Nq, Nk)."""
    scores = torch.einsum("...qd,...kd->...qk", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = torch.where(mask, scores, float("-inf"))
    weights = scores.softmax(dim=-1)
    return torch.einsum("...qk,...kv->...qv", weights, v), weights


def split_heads(x, num_heads):
    """(B, N, E) -> (B, H, N, E // H)."""
    return x.unflatten(-1, (num_heads, -1)).permute(0, 2, 1, 3)


def merge_heads(x):
    """(B, H, N, d) -> (B, N, H * d)."""
    return x.permute(0, 2, 1, 3).flatten(start_dim=2)


class MultiHeadAttention(nn.Module):
    def __init__(self, embed_dim, num_heads, bias=True):
        super().__init__()
        assert embed_dim % num_heads == 0, "embed_dim must be divisible by num_heads"
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def _project(self, query, key, value):
        if key is query and value is query:
            # self-attention: one (3E, E) product instead of three, like nn.MultiheadAttention's in_proj
            weight = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight])
            bias = None
            if self.q_proj.bias is not None:
                bias = torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias])
            return F.linear(query, weight, bias).chunk(3, dim=-1)
        return self.q_proj(query), self.k_proj(key), self.v_proj(value)

    def forward(self, query, key=None, value=None, mask=None, need_weights=False):
        if key is None:
            key = query
        if value is None:
            value = key
        q, k, v = (split_heads(t, self.num_heads) for t in self._project(query, key, value))
        out, weights = scaled_dot_product_attention(q, k, v, mask)
        out = self.out_proj(merge_heads(out))
        return (out, weights) if need_weights else out
