"""A small BERT-style encoder: embeddings, a few post-norm transformer layers, a pooled output.

Attention is written with plain matmul/softmax rather than ``nn.MultiheadAttention`` so that
torch.export produces ops the Relax frontend lowers, and the tuning tasks are the dense and
batch-matmul kernels a real encoder spends its time in.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._init import seeded_init


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(x).reshape(b, s, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim), dim=-1)
        return self.out((att @ v).transpose(1, 2).reshape(b, s, d))


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.attn = SelfAttention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Linear(ffn, dim))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.ffn(x))


class BertEncoder(nn.Module):
    """Token + position embeddings, ``layers`` encoder layers, tanh pooler on the first token."""

    def __init__(self, vocab: int = 1000, dim: int = 128, heads: int = 2, ffn: int = 512, layers: int = 2, max_len: int = 512) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(max_len, dim)
        self.norm = nn.LayerNorm(dim)
        self.layers = nn.Sequential(*[EncoderLayer(dim, heads, ffn) for _ in range(layers)])
        self.pooler = nn.Linear(dim, dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.layers(self.norm(self.tok(ids) + self.pos(pos)))
        return torch.tanh(self.pooler(x[:, 0]))


def bert_tiny() -> nn.Module:
    return seeded_init(BertEncoder())
