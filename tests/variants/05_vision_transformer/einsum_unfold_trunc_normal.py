"""05_vision_transformer, variant A.

Patch embedding as F.unfold + einsum with the convolution's own weights; einsum attention;
truncated-normal initialisation; the final norm applied to the class token only; chunked
attention with einsum and torch.where for the first chunk.
"""

import math

import torch
import torch.nn.functional as F
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
        b, nq, e = query.shape
        h = self.num_heads
        q = self.q_proj(query).view(b, nq, h, e // h)  # (B, Nq, H, d)
        k = self.k_proj(key).view(b, key.size(1), h, e // h)  # (B, Nk, H, d)
        v = self.v_proj(value).view(b, value.size(1), h, e // h)  # (B, Nk, H, d)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * (e // h) ** -0.5  # (B, H, Nq, Nk)
        if mask is not None:
            scores = torch.where(mask, scores, float("-inf"))
        weights = scores.softmax(dim=-1)
        out = torch.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, nq, e)
        out = self.out_proj(out)
        return (out, weights) if need_weights else out


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
        self.norm_first = norm_first
        self.attn = MultiHeadAttention(embed_dim, num_heads)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.mlp = FeedForward(embed_dim, int(embed_dim * mlp_ratio))

    def forward(self, x, mask=None):
        if not self.norm_first:
            x = self.norm1(x + self.attn(x, mask=mask))
            return self.norm2(x + self.mlp(x))
        x = x + self.attn(self.norm1(x), mask=mask)
        return x + self.mlp(self.norm2(x))


def attention_memory_bytes(num_tokens, num_layers, num_heads, bytes_per_element=4):
    per_matrix = num_tokens * num_tokens * bytes_per_element
    return per_matrix * num_heads * num_layers


class PatchEmbedding(nn.Module):
    def __init__(self, image_size, patch_size, in_channels, embed_dim):
        super().__init__()
        self.patch_size = patch_size
        grid = image_size // patch_size
        self.num_patches = grid * grid
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images):
        p = self.patch_size
        # unfold lists the patches in raster order, each flattened as (C, P, P), like the conv weight
        patches = F.unfold(images, kernel_size=p, stride=p)  # (B, C*P*P, N)
        weight = self.proj.weight.flatten(1)  # (E, C*P*P)
        return torch.einsum("bkn,ek->bne", patches, weight) + self.proj.bias


class VisionTransformer(nn.Module):
    def __init__(
        self,
        image_size=224,
        patch_size=16,
        in_channels=3,
        num_classes=1000,
        embed_dim=768,
        depth=12,
        num_heads=12,
        mlp_ratio=4.0,
    ):
        super().__init__()
        self.patch_embed = PatchEmbedding(image_size, patch_size, in_channels, embed_dim)
        self.cls_token = nn.Parameter(torch.empty(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.empty(1, self.patch_embed.num_patches + 1, embed_dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            self.blocks.append(TransformerBlock(embed_dim, num_heads, mlp_ratio=mlp_ratio, norm_first=True))
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, images):
        patches = self.patch_embed(images)
        cls = self.cls_token.repeat(patches.shape[0], 1, 1)
        x = torch.cat((cls, patches), dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))


def chunked_attention(q, k, v, chunk_size=128):
    scale = 1.0 / math.sqrt(q.shape[-1])
    m = denominator = acc = None
    for start in range(0, k.shape[-2], chunk_size):
        s = torch.einsum("...qd,...kd->...qk", q, k[..., start : start + chunk_size, :]) * scale
        block_max = s.amax(dim=-1, keepdim=True)
        m_new = block_max if m is None else torch.maximum(m, block_max)
        p = torch.exp(s - m_new)
        pv = torch.einsum("...qk,...kd->...qd", p, v[..., start : start + chunk_size, :])
        if m is None:
            denominator, acc = p.sum(dim=-1, keepdim=True), pv
        else:
            alpha = torch.exp(m - m_new)
            denominator = alpha * denominator + p.sum(dim=-1, keepdim=True)
            acc = alpha * acc + pv
        m = m_new
    return acc / denominator
