"""The 2-D UNet used for the downstream segmentation task (the paper's and the authors' network).

Encoder: five conv blocks with channels (16, 32, 64, 128, 256) and dropout (0.05, 0.1, 0.2, 0.3,
0.5), separated by 2 × 2 max-pooling. Decoder: four up-blocks, each a 1 × 1 conv to the skip's
channels, bilinear × 2 upsampling (align_corners=True, as in the authors' code), concatenation with
the skip and a conv block without dropout; a final 3 × 3 conv gives the class logits. Every conv
has a bias. For (in_channels=1, n_classes=2) this is 1,813,474 parameters (the paper's 1.81 M).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sugfw.errors import InvalidInputError

CHANNELS = (16, 32, 64, 128, 256)
ENCODER_DROPOUT = (0.05, 0.1, 0.2, 0.3, 0.5)
# Four 2× poolings: sides must be multiples of 2**4 for the skips to line up.
SIZE_MULTIPLE = 2 ** (len(CHANNELS) - 1)


class ConvBlock(nn.Sequential):
    """(3×3 conv, BN, LeakyReLU, dropout, 3×3 conv, BN, LeakyReLU)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.LeakyReLU(),
        )


class UpBlock(nn.Module):
    """1×1 conv to the skip's channels, bilinear ×2, concat with the skip, conv block."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, skip_channels, kernel_size=1)
        self.conv = ConvBlock(2 * skip_channels, out_channels, dropout=0.0)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.reduce(x), scale_factor=2, mode="bilinear", align_corners=True)
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """UNet mapping (B, in_channels, H, W) to logits (B, n_classes, H, W) for any H, W ≥ 1.

    Sides that are not multiples of 16 are zero-padded at the bottom/right inside ``forward`` and
    the logits cropped back; zero is the mean intensity of z-scored slices.
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 2) -> None:
        super().__init__()
        if in_channels < 1 or n_classes < 2:
            raise InvalidInputError(
                f"UNet needs in_channels >= 1 and n_classes >= 2, got {in_channels} and {n_classes}"
            )
        self.in_channels = in_channels
        self.n_classes = n_classes
        self.encoder = nn.ModuleList()
        previous = in_channels
        for channels, dropout in zip(CHANNELS, ENCODER_DROPOUT):
            self.encoder.append(ConvBlock(previous, channels, dropout))
            previous = channels
        self.decoder = nn.ModuleList(
            UpBlock(deep, skip, skip) for deep, skip in zip(CHANNELS[:0:-1], CHANNELS[-2::-1])
        )
        self.head = nn.Conv2d(CHANNELS[0], n_classes, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h = -height % SIZE_MULTIPLE
        pad_w = -width % SIZE_MULTIPLE
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        skips = []
        for depth, block in enumerate(self.encoder):
            if depth:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for up, skip in zip(self.decoder, reversed(skips[:-1])):
            x = up(x, skip)
        return self.head(x)[..., :height, :width]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
