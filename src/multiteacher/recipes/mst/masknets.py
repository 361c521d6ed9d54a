"""Plug-in MaskNets of MST-Distill: per-instance channel masks for a teacher layer.

A MaskNet reads a teacher layer's output and returns a sigmoid mask over its channels; the mask is
multiplied into the output through a forward hook (`multiteacher.hooks.mask_output`), turning one
frozen teacher into a specialised one. As in the official code (Gray-OREO/MST-Distill):

* 1-d (B, C): a linear layer embeds the C features into C tokens of width `hidden`, multi-head
  self-attention mixes the tokens, a linear layer scores each token, sigmoid -> (B, C) mask;
* 2-d (B, C, H, W): depthwise 3x3 stride-2 conv + pointwise conv + BN + ReLU, global average
  pooling to (B, C), then the 1-d MaskNet.

Default token width: ``C // (2 * heads) * heads`` (the official rule).
"""

from __future__ import annotations

import torch
from torch import nn


def default_hidden(channels: int, heads: int) -> int:
    """Token width of the official code: C // (2 heads) * heads (at least `heads`)."""
    return max(heads, channels // (2 * heads) * heads)


class MaskNet1d(nn.Module):
    """(B, C) features -> (B, C) mask in (0, 1) via C attention tokens."""

    def __init__(self, channels: int, heads: int = 3, hidden: int | None = None) -> None:
        super().__init__()
        self.channels = channels
        self.hidden = hidden if hidden is not None else default_hidden(channels, heads)
        if self.hidden % heads:
            raise ValueError(f"MaskNet hidden width {self.hidden} must be divisible by heads={heads}")
        self.embed = nn.Linear(channels, channels * self.hidden)
        self.attn = nn.MultiheadAttention(self.hidden, heads, batch_first=True)
        self.score = nn.Linear(self.hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:  # (B, C, 1, 1) maps count as vectors
            x = x.flatten(1)
        tokens = self.embed(x).view(x.shape[0], self.channels, self.hidden)
        mixed, _ = self.attn(tokens, tokens, tokens, need_weights=False)
        return torch.sigmoid(self.score(mixed).squeeze(-1))


class MaskNet2d(nn.Module):
    """(B, C, H, W) feature maps -> (B, C) channel mask: spatial reduction, then `MaskNet1d`."""

    def __init__(self, channels: int, heads: int = 3, hidden: int | None = None) -> None:
        super().__init__()
        self.reduce = nn.Sequential(
            nn.Conv2d(channels, channels, 3, stride=2, padding=1, groups=channels, bias=False),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.mask = MaskNet1d(channels, heads, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask(self.reduce(x))


def masknet_for(example_output: torch.Tensor, heads: int = 3, hidden: int | None = None) -> nn.Module:
    """A MaskNet matching a layer output's shape: 2-d maps get `MaskNet2d`, vectors `MaskNet1d`."""
    if example_output.dim() == 4 and example_output.shape[-2:] != (1, 1):
        return MaskNet2d(example_output.shape[1], heads, hidden)
    if example_output.dim() in (2, 4):
        return MaskNet1d(example_output.shape[1], heads, hidden)
    raise ValueError(f"cannot mask a layer output of shape {tuple(example_output.shape)}")
