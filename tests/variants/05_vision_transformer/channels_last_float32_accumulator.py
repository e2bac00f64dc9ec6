"""05_vision_transformer, variant C.

Convolution output flattened channels-last (permute + reshape); blocks built in a loop;
chunked attention that accumulates in float32 and casts back, with the key chunks taken by
torch.split.
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
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            nn.Linear(embed_dim, embed_dim, bias=bias) for _ in range(4)
        )

    def split(self, x):
        return x.unflatten(-1, (self.num_heads, -1)).transpose(-3, -2)  # (B, H, N, d)

    def forward(self, query, key=None, value=None, mask=None, need_weights=False):
        key = query if key is None else key
        value = key if value is None else value
        q, k, v = self.split(self.q_proj(query)), self.split(self.k_proj(key)), self.split(self.v_proj(value))
        scores = (q @ k.mT) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask, -math.inf)
        weights = F.softmax(scores, dim=-1)
        out = self.out_proj((weights @ v).transpose(-3, -2).flatten(-2))
        return (out, weights) if need_weights else out


class FeedForward(nn.Module):
    def __init__(self, embed_dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, embed_dim)

    def forward(self, x):
        x = self.fc1(x)
        x = 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))  # exact GELU, written out
        return self.fc2(x)


class TransformerBlock(nn.Module):
    def __init__(self, embed_dim, num_heads, mlp_ratio=4.0, norm_first=True):
        super().__init__()
        self.norm_first = norm_first
        self.attn = MultiHeadAttention(embed_dim, num_heads)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.mlp = FeedForward(embed_dim, int(embed_dim * mlp_ratio))

    def forward(self, x, mask=None):
        if self.norm_first:
            h = x + self.attn(self.norm1(x), mask=mask)
            return h + self.mlp(self.norm2(h))
        h = self.norm1(x + self.attn(x, mask=mask))
        return self.norm2(h + self.mlp(h))


def attention_memory_bytes(num_tokens, num_layers, num_heads, bytes_per_element=4):
    return math.prod([num_tokens, num_tokens, num_layers, num_heads, bytes_per_element])


class PatchEmbedding(nn.Module):
    def __init__(self, image_size, patch_size, in_channels, embed_dim):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=(patch_size, patch_size), stride=patch_size)
        self.num_patches = int(image_size // patch_size) ** 2

    def forward(self, images):
        x = self.proj(images)  # (B, E, h, w)
        x = x.permute(0, 2, 3, 1)  # (B, h, w, E): channels last, rows outermost
        return x.reshape(x.shape[0], -1, x.shape[-1])


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
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim) * 1e-6)
        self.pos_embed = nn.Parameter(torch.normal(0.0, 0.02, size=(1, 1 + self.patch_embed.num_patches, embed_dim)))
        blocks = []
        for _ in range(depth):
            blocks.append(TransformerBlock(embed_dim, num_heads, mlp_ratio))
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, images):
        tokens = self.patch_embed(images)
        b = tokens.size(0)
        x = torch.cat([self.cls_token.expand(b, 1, -1), tokens], dim=1)
        x = x + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x)[:, 0])


def chunked_attention(q, k, v, chunk_size=128):
    dtype = q.dtype
    q, k, v = q.float(), k.float(), v.float()
    scale = q.shape[-1] ** -0.5
    best = torch.full_like(q[..., :1], -torch.inf)
    total = torch.zeros_like(q[..., :1])
    acc = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)
    for k_chunk, v_chunk in zip(k.split(chunk_size, dim=-2), v.split(chunk_size, dim=-2), strict=True):
        s = (q @ k_chunk.transpose(-1, -2)) * scale
        new_best = torch.max(best, s.max(dim=-1, keepdim=True).values)
        correction = (best - new_best).exp()
        weights = (s - new_best).exp()
        total = total * correction + weights.sum(-1, keepdim=True)
        acc = acc * correction + weights @ v_chunk
        best = new_best
    return (acc / total).to(dtype)
