"""Small networks for AV-digits: image CNN, audio CNN and a late-fusion multimodal network.

Layer names are stable module paths for hooks (MaskNets, FitNet features): unimodal nets expose
``conv1..conv3`` (2-d feature maps), ``fc1`` (1-d embedding) and ``head`` (logits); the fusion
net exposes ``image.*``, ``audio.*``, ``concat`` (identity on the concatenated embeddings) and
``fc1``/``head``.
"""

from __future__ import annotations

import torch
from torch import nn

AUDIO_STEM_STRIDE = 2


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                         nn.MaxPool2d(2))


class UniNet(nn.Module):
    """Three conv blocks + global pooling + fc1 + head (28x28 images; 64x64 spectrograms with a
    stride-2 stem, which keeps the audio net about as cheap as the image net on CPU)."""

    def __init__(self, width: int = 16, embed: int = 64, num_classes: int = 10, dropout: float = 0.2,
                 stem_stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _block(1, width, stem_stride)
        self.conv2 = _block(width, 2 * width)
        self.conv3 = _block(2 * width, 4 * width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Sequential(nn.Flatten(), nn.Linear(4 * width, embed), nn.ReLU())
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(embed, num_classes)
        self.embed_dim = embed
        self.feat_channels = 4 * width

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc1(self.pool(self.conv3(self.conv2(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.embed(x)))


class FusionNet(nn.Module):
    """Late fusion: image and audio encoders, concatenated embeddings -> fc1 -> head."""

    def __init__(self, width: int = 16, embed: int = 64, num_classes: int = 10, dropout: float = 0.2) -> None:
        super().__init__()
        self.image = UniNet(width, embed, num_classes, dropout)
        self.audio = UniNet(width, embed, num_classes, dropout, stem_stride=AUDIO_STEM_STRIDE)
        self.concat = nn.Identity()
        self.fc1 = nn.Sequential(nn.Linear(2 * embed, embed), nn.ReLU())
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(embed, num_classes)
        self.embed_dim = embed

    def forward(self, image: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        z = self.concat(torch.cat([self.image.embed(image), self.audio.embed(audio)], dim=1))
        return self.head(self.drop(self.fc1(z)))


# ---------------------------------------------------------------------- uniform call convention
MODALITIES = ("image", "audio")


def other(modality: str) -> str:
    """The other modality."""
    return "audio" if modality == "image" else "image"


class Member(nn.Module):
    """A model plus the modalities it reads: call with a batch dict ``{"image", "audio", "label"}``."""

    def __init__(self, net: nn.Module, inputs: tuple[str, ...]) -> None:
        super().__init__()
        self.net = net
        self.inputs = inputs

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(*(batch[k] for k in self.inputs))


def build(kind: str, width: int = 16, embed: int = 64, dropout: float = 0.2) -> Member:
    """`kind` is "image", "audio" (unimodal) or "fusion" (multimodal teacher)."""
    if kind == "fusion":
        return Member(FusionNet(width, embed, dropout=dropout), ("image", "audio"))
    if kind in MODALITIES:
        stride = AUDIO_STEM_STRIDE if kind == "audio" else 1
        return Member(UniNet(width, embed, dropout=dropout, stem_stride=stride), (kind,))
    raise ValueError(f"unknown model kind {kind!r}")
