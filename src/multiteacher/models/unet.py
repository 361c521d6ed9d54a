"""A small U-Net for dense image-to-image maps (NGC edges, segmentation students).

`depth` resolution levels (each: two 3x3 conv + BatchNorm + ReLU), channel width doubling per
level from `width`; max-pool down, bilinear up, skip connections by concatenation. Inputs whose
side is not a multiple of 2**(depth-1) are padded and the output cropped back, so any size works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """A small U-Net: ``(B, in_ch, H, W) -> (B, out_ch, H, W)``; width 16 / depth 3 has ~119k parameters.

    Args:
        in_ch: input channels.
        out_ch: output channels (or classes).
        width: channels of the first level (doubling per level).
        depth: resolution levels (>= 1).

    Example:
        >>> net = UNet(3, 1, width=4, depth=2)
        >>> net(torch.zeros(2, 3, 9, 10)).shape
        torch.Size([2, 1, 9, 10])
    """

    def __init__(self, in_ch: int, out_ch: int, width: int = 16, depth: int = 3) -> None:
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"UNet needs depth >= 1 and width >= 1 (got depth={depth}, width={width})")
        chans = [width * 2**i for i in range(depth)]
        self.depth = depth
        self.down = nn.ModuleList()
        c = in_ch
        for ch in chans:
            self.down.append(_block(c, ch))
            c = ch
        self.up = nn.ModuleList(_block(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(depth - 1)))
        self.head = nn.Conv2d(chans[0], out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Map a batch of images; sides that are not multiples of ``2**(depth-1)`` are padded, then cropped.

        Args:
            x: ``(B, in_ch, H, W)``.

        Returns:
            ``(B, out_ch, H, W)``.

        Example:
            >>> UNet(1, 2, width=2, depth=1)(torch.zeros(1, 1, 3, 3)).shape
            torch.Size([1, 2, 3, 3])
        """
        h, w = x.shape[-2:]
        m = 2 ** (self.depth - 1)
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return self.head(x)[..., :h, :w]
