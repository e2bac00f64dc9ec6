"""04_transformer, variant C.

Heads folded into the batch for torch.bmm, with the scale applied to q and the softmax
computed in float32 and cast back; the mask expanded to (B, H, Nq, Nk) before folding;
the MLP's activation by F.gelu with approximate="none" spelled out; the causal mask from
torch.tril of a float matrix; separate pre-norm and post-norm forward methods.
"""

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadAttention(nn.Module):
    def __init__(self, embed_dim, num_heads, bias=True):
        super().__init__()
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def _fold(self, x):
        b, n, _ = x.shape
        d = self.embed_dim // self.num_heads
        return x.view(b, n, self.num_heads, d).permute(0, 2, 1, 3).reshape(b * self.num_heads, n, d)

    def forward(self, query, key=None, value=None, mask=None, need_weights=False):
        key = query if key is None else key
        value = key if value is None else value
        b, n_q, _ = query.shape
        n_k = key.size(1)
        d = self.embed_dim // self.num_heads
        q = self._fold(self.q_proj(query) * d**-0.5)  # (B*H, Nq, d)
        k, v = self._fold(self.k_proj(key)), self._fold(self.v_proj(value))  # (B*H, Nk, d)
        scores = torch.bmm(q, k.transpose(1, 2))  # (B*H, Nq, Nk)
        if mask is not None:
            full = mask.expand(b, self.num_heads, n_q, n_k).reshape(b * self.num_heads, n_q, n_k)
            scores = scores.masked_fill(~full, float("-inf"))
        weights = scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.bmm(weights, v).view(b, self.num_heads, n_q, d).permute(0, 2, 1, 3).reshape(b, n_q, -1)
        out = self.out_proj(out)
        if need_weights:
            return out, weights.view(b, self.num_heads, n_q, n_k)
        return out


class FeedForward(nn.Module):
    def __init__(self, embed_dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, embed_dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="none"))


class TransformerBlock(nn.Module):
    def __init__(self, embed_dim, num_heads, mlp_ratio=4.0, norm_first=True):
        super().__init__()
        self.norm_first = bool(norm_first)
        self.attn = MultiHeadAttention(embed_dim, num_heads)
        self.norm1 = nn.LayerNorm(embed_dim, eps=1e-5)
        self.norm2 = nn.LayerNorm(embed_dim, eps=1e-5)
        self.mlp = FeedForward(embed_dim, hidden_dim=int(mlp_ratio * embed_dim))

    def forward_pre_norm(self, x, mask):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, mask)
        h = self.norm2(x)
        return x + self.mlp(h)

    def forward_post_norm(self, x, mask):
        x = self.norm1(x + self.attn(x, x, x, mask))
        return self.norm2(x + self.mlp(x))

    def forward(self, x, mask=None):
        return self.forward_pre_norm(x, mask) if self.norm_first else self.forward_post_norm(x, mask)


class TransformerDecoderBlock(nn.Module):
    def __init__(self, embed_dim, num_heads, mlp_ratio=4.0, norm_first=True):
        super().__init__()
        self.norm_first = bool(norm_first)
        self.self_attn = MultiHeadAttention(embed_dim, num_heads)
        self.cross_attn = MultiHeadAttention(embed_dim, num_heads)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.norm3 = nn.LayerNorm(embed_dim)
        self.mlp = FeedForward(embed_dim, int(mlp_ratio * embed_dim))

    def forward(self, x, memory, self_mask=None, memory_mask=None):
        if self.norm_first:
            h = self.norm1(x)
            x = x + self.self_attn(h, h, h, self_mask)
            x = x + self.cross_attn(self.norm2(x), memory, memory, memory_mask)
            return x + self.mlp(self.norm3(x))
        x = self.norm1(x + self.self_attn(x, x, x, self_mask))
        x = self.norm2(x + self.cross_attn(x, memory, memory, memory_mask))
        return self.norm3(x + self.mlp(x))


class TransformerEncoder(nn.Module):
    def __init__(self, num_layers, embed_dim, num_heads, mlp_ratio=4.0, norm_first=True):
        super().__init__()
        blocks = [TransformerBlock(embed_dim, num_heads, mlp_ratio, norm_first) for _ in range(num_layers)]
        self.layers = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(embed_dim) if norm_first else nn.Identity()

    def forward(self, x, mask=None):
        for i in range(len(self.layers)):
            x = self.layers[i](x, mask=mask)
        return self.norm(x)


def causal_mask(n, device=None):
    return torch.tril(torch.ones(n, n, device=device)).bool()
