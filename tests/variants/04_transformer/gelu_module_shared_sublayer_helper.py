"""04_transformer, variant B.

An nn.GELU module inside the MLP; one helper that wraps any sub-layer in its residual
connection and LayerNorm, for both layouts; attention with torch.where masking and heads
split by unflatten; the causal mask as the complement of the strict upper triangle; the
encoder's layers appended one by one.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadAttention(nn.Module):
    def __init__(self, embed_dim, num_heads, bias=True):
        super().__init__()
        assert embed_dim % num_heads == 0
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def _heads(self, x):
        return x.unflatten(-1, (self.num_heads, -1)).transpose(-3, -2)  # (B, H, N, d)

    def forward(self, query, key=None, value=None, mask=None, need_weights=False):
        if key is None:
            key = query
        if value is None:
            value = key
        q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(key)), self._heads(self.v_proj(value))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.size(-1))
        if mask is not None:
            scores = torch.where(mask, scores, float("-inf"))
        weights = F.softmax(scores, dim=-1)
        out = torch.matmul(weights, v).transpose(-3, -2).flatten(-2)  # (B, Nq, E)
        out = self.out_proj(out)
        if need_weights:
            return out, weights
        return out


class FeedForward(nn.Module):
    def __init__(self, embed_dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, embed_dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def residual(x, sublayer, norm, norm_first):
    """x + sublayer(norm(x)) (pre-norm) or norm(x + sublayer(x)) (post-norm)."""
    if norm_first:
        return x + sublayer(norm(x))
    return norm(x + sublayer(x))


class TransformerBlock(nn.Module):
    def __init__(self, embed_dim, num_heads, mlp_ratio=4.0, norm_first=True):
        super().__init__()
        hidden = int(embed_dim * mlp_ratio)
        self.attn = MultiHeadAttention(embed_dim, num_heads)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.mlp = FeedForward(embed_dim, hidden)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.norm_first = norm_first

    def forward(self, x, mask=None):
        x = residual(x, lambda h: self.attn(h, mask=mask), self.norm1, self.norm_first)
        return residual(x, self.mlp, self.norm2, self.norm_first)


class TransformerDecoderBlock(nn.Module):
    def __init__(self, embed_dim, num_heads, mlp_ratio=4.0, norm_first=True):
        super().__init__()
        self.self_attn = MultiHeadAttention(embed_dim, num_heads)
        self.cross_attn = MultiHeadAttention(embed_dim, num_heads)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.norm3 = nn.LayerNorm(embed_dim)
        self.mlp = FeedForward(embed_dim, int(embed_dim * mlp_ratio))
        self.norm_first = norm_first

    def forward(self, x, memory, self_mask=None, memory_mask=None):
        x = residual(x, lambda h: self.self_attn(h, mask=self_mask), self.norm1, self.norm_first)
        x = residual(x, lambda h: self.cross_attn(h, key=memory, mask=memory_mask), self.norm2, self.norm_first)
        return residual(x, self.mlp, self.norm3, self.norm_first)


class TransformerEncoder(nn.Module):
    def __init__(self, num_layers, embed_dim, num_heads, mlp_ratio=4.0, norm_first=True):
        super().__init__()
        self.layers = nn.ModuleList()
        for _ in range(num_layers):
            self.layers.append(TransformerBlock(embed_dim, num_heads, mlp_ratio, norm_first))
        if norm_first:
            self.norm = nn.LayerNorm(embed_dim)
        else:
            self.norm = nn.Identity()

    def forward(self, x, mask=None):
        for block in self.layers:
            x = block(x, mask)
        return self.norm(x)


def causal_mask(n, device=None):
    return ~torch.ones((n, n), dtype=torch.bool, device=device).triu(diagonal=1)
