"""03_multihead_attention, variant B.

view + transpose to split, transpose + contiguous + view to merge, queries scaled before
the product, masking with masked_fill(mask.logical_not(), -inf), projections made in a loop over
their names.
"""

import torch
from torch import nn


def scaled_dot_product_attention(q, k, v, mask=None):
    """q (..., Nq, d), k (..., Nk, d), v (..., Nk, dv) -> output (..., Nq, dv), weights (..., Nq, Nk)."""
    q = q * q.size(-1) ** -0.5
    scores = torch.matmul(q, k.transpose(-1, -2))
    if mask is not None:
        scores = scores.masked_fill(mask.logical_not(), float("-inf"))
    weights = torch.softmax(scores, -1)
    return torch.matmul(weights, v), weights


def split_heads(x, num_heads):
    """(B, N, E) -> (B, H, N, E // H)."""
    batch, length, embed_dim = x.size()
    return x.view(batch, length, num_heads, embed_dim // num_heads).transpose(1, 2)


def merge_heads(x):
    """(B, H, N, d) -> (B, N, H * d)."""
    batch, num_heads, length, head_dim = x.size()
    return x.transpose(1, 2).contiguous().view(batch, length, num_heads * head_dim)


class MultiHeadAttention(nn.Module):
    def __init__(self, embed_dim, num_heads, bias=True):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError("embed_dim must be a multiple of num_heads")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(self, name, nn.Linear(embed_dim, embed_dim, bias=bias))

    def forward(self, query, key=None, value=None, mask=None, need_weights=False):
        key = query if key is None else key
        value = key if value is None else value
        q = split_heads(self.q_proj(query), self.num_heads)
        k = split_heads(self.k_proj(key), self.num_heads)
        v = split_heads(self.v_proj(value), self.num_heads)
        context, weights = scaled_dot_product_attention(q, k, v, mask=mask)
        out = self.out_proj(merge_heads(context))
        if not need_weights:
            return out
        return out, weights
