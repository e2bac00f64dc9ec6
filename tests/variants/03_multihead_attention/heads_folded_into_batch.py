"""03_multihead_attention, variant C.

Heads folded into the batch for torch.bmm ((B * H, N, d), the layout of PyTorch's own
implementation), the mask expanded to (B, H, Nq, Nk) and folded the same way, additive
-inf bias, F.softmax, weights unfolded back to (B, H, Nq, Nk).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def split_heads(x, num_heads):
    """(B, N, E) -> (B, H, N, E // H)."""
    b, n, e = x.shape
    return x.reshape(b, n, num_heads, e // num_heads).permute(0, 2, 1, 3)


def merge_heads(x):
    """(B, H, N, d) -> (B, N, H * d)."""
    b, h, n, d = x.shape
    return x.permute(0, 2, 1, 3).reshape(b, n, h * d)


class MultiHeadAttention(nn.Module):
    def __init__(self, embed_dim, num_heads, bias=True):
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def forward(self, query, key=None, value=None, mask=None, need_weights=False):
        key = query if key is None else key
        value = key if value is None else value
        b, n_q, _ = query.shape
        n_k, h = key.shape[1], self.num_heads
        q = split_heads(self.q_proj(query), h).reshape(b * h, n_q, -1)  # (B * H, Nq, d)
        k = split_heads(self.k_proj(key), h).reshape(b * h, n_k, -1)  # (B * H, Nk, d)
        v = split_heads(self.v_proj(value), h).reshape(b * h, n_k, -1)  # (B * H, Nk, d)
        scores = torch.bmm(q, k.transpose(1, 2)) / math.sqrt(q.shape[-1])  # (B * H, Nq, Nk)
        if mask is not None:
            allowed = mask.expand(b, h, n_q, n_k).reshape(b * h, n_q, n_k)
            scores = scores + torch.zeros_like(scores).masked_fill(~allowed, float("-inf"))
        weights = F.softmax(scores, dim=-1)  # (B * H, Nq, Nk)
        context = torch.bmm(weights, v).reshape(b, h, n_q, -1)  # (B, H, Nq, d)
        out = self.out_proj(merge_heads(context))
        if need_weights:
            return out, weights.reshape(b, h, n_q, n_k)
        return out
