"""04_transformer, variant A.

Attention with einsum; GELU written out with erf; the blocks split into sub-layer methods as
PyTorch's own layers are; the causal mask from comparing position indices; the encoder
folded with functools.reduce.
"""

import functools
import math

import torch
from torch import nn


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
        batch, n_q, embed_dim = query.shape
        d = embed_dim // self.num_heads
        q = self.q_proj(query).reshape(batch, n_q, self.num_heads, d)  # (B, Nq, H, d)
        k = self.k_proj(key).reshape(batch, key.size(1), self.num_heads, d)  # (B, Nk, H, d)
        v = self.v_proj(value).reshape(batch, value.size(1), self.num_heads, d)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * d**-0.5  # (B, H, Nq, Nk)
        if mask is not None:
            scores = scores.masked_fill(mask.logical_not(), -math.inf)
        weights = torch.softmax(scores, dim=-1)
        out = torch.einsum("bhqk,bkhd->bqhd", weights, v).reshape(batch, n_q, embed_dim)
        out = self.out_proj(out)
        return (out, weights) if need_weights else out


class FeedForward(nn.Module):
    def __init__(self, embed_dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, embed_dim)

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0))))  # x * Phi(x)


class TransformerBlock(nn.Module):
    def __init__(self, embed_dim, num_heads, mlp_ratio=4.0, norm_first=True):
        super().__init__()
        self.norm_first = norm_first
        self.attn = MultiHeadAttention(embed_dim, num_heads)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.mlp = FeedForward(embed_dim, int(embed_dim * mlp_ratio))

    def _attention_block(self, x, mask):
        return self.attn(x, x, x, mask=mask)

    def forward(self, x, mask=None):
        if not self.norm_first:
            x = self.norm1(x + self._attention_block(x, mask))
            return self.norm2(x + self.mlp(x))
        x = x + self._attention_block(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class TransformerDecoderBlock(nn.Module):
    def __init__(self, embed_dim, num_heads, mlp_ratio=4.0, norm_first=True):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(embed_dim, num_heads)
        self.cross_attn = MultiHeadAttention(embed_dim, num_heads)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(embed_dim) for _ in range(3))
        self.mlp = FeedForward(embed_dim, int(embed_dim * mlp_ratio))

    def _self_attention(self, x, mask):
        return self.self_attn(x, mask=mask)

    def _cross_attention(self, x, memory, mask):
        return self.cross_attn(x, memory, memory, mask=mask)

    def forward(self, x, memory, self_mask=None, memory_mask=None):
        if self.norm_first:
            x = x + self._self_attention(self.norm1(x), self_mask)
            x = x + self._cross_attention(self.norm2(x), memory, memory_mask)
            x = x + self.mlp(self.norm3(x))
        else:
            x = self.norm1(x + self._self_attention(x, self_mask))
            x = self.norm2(x + self._cross_attention(x, memory, memory_mask))
            x = self.norm3(x + self.mlp(x))
        return x


class TransformerEncoder(nn.Module):
    def __init__(self, num_layers, embed_dim, num_heads, mlp_ratio=4.0, norm_first=True):
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerBlock(embed_dim, num_heads, mlp_ratio=mlp_ratio, norm_first=norm_first)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(embed_dim) if norm_first else nn.Identity()

    def forward(self, x, mask=None):
        return self.norm(functools.reduce(lambda h, layer: layer(h, mask), self.layers, x))


def causal_mask(n, device=None):
    position = torch.arange(n, device=device)
    return position[:, None] >= position[None, :]  # query i sees keys j <= i
