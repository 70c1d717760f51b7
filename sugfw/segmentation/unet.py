"""The 2-D UNet used for the downstream segmentation task (the paper's and the authors' network).

Encoder: five conv blocks with channels (16, 32, 64, 128, 256) and dropout (0.05, 0.1, 0.2, 0.3,
0.5), separated by 2 × 2 max-pooling. Decoder: four up-blocks, each a 1 × 1 conv to the skip's
channels, bilinear × 2 upsampling (align_corners=True, as in the authors' code), concatenation with
the skip and a conv block without dropout; a final 3 × 3 conv gives the class logits. Every conv
has a bias. For (in_channels=1, n_classes=2) this is 1,813,474 parameters (the paper's 1.81 M).

Normalisation: BatchNorm as in the paper (``norm="batch"``), or instance norm with affine weights
(``norm="instance"``, the same parameter count): with a few training slices a batch holds the same
slices over and over, so batch statistics at training time differ from the running statistics used
at test time; instance norm computes the same statistics in both modes.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from sugfw.errors import InvalidInputError

Norm = Literal["batch", "instance"]
NORMS: tuple[str, ...] = get_args(Norm)

CHANNELS = (16, 32, 64, 128, 256)
ENCODER_DROPOUT = (0.05, 0.1, 0.2, 0.3, 0.5)
# Four 2× poolings: sides must be multiples of 2**4 for the skips to line up.
SIZE_MULTIPLE = 2 ** (len(CHANNELS) - 1)


def norm_layer(norm: Norm, channels: int) -> nn.Module:
    """BatchNorm2d, or InstanceNorm2d with affine weights and no running statistics."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise InvalidInputError(f"unknown UNet norm {norm!r}; expected one of {NORMS}")


class ConvBlock(nn.Sequential):
    """(3×3 conv, norm, LeakyReLU, dropout, 3×3 conv, norm, LeakyReLU)."""

    def __init__(
        self, in_channels: int, out_channels: int, dropout: float, norm: Norm = "batch"
    ) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            norm_layer(norm, out_channels),
            nn.LeakyReLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            norm_layer(norm, out_channels),
            nn.LeakyReLU(),
        )


class UpBlock(nn.Module):
    """1×1 conv to the skip's channels, bilinear ×2, concat with the skip, conv block."""

    def __init__(
        self, in_channels: int, skip_channels: int, out_channels: int, norm: Norm = "batch"
    ) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, skip_channels, kernel_size=1)
        self.conv = ConvBlock(2 * skip_channels, out_channels, dropout=0.0, norm=norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.reduce(x), scale_factor=2, mode="bilinear", align_corners=True)
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """UNet mapping (B, in_channels, H, W) to logits (B, n_classes, H, W) for any H, W ≥ 1.

    Sides that are not multiples of 16 (with instance norm: or shorter than 32) are zero-padded
    at the bottom/right inside ``forward`` and the logits cropped back; zero is the mean
    intensity of z-scored slices.
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 2, norm: Norm = "batch") -> None:
        super().__init__()
        if in_channels < 1 or n_classes < 2:
            raise InvalidInputError(
                f"UNet needs in_channels >= 1 and n_classes >= 2, got {in_channels} and {n_classes}"
            )
        self.in_channels = in_channels
        self.n_classes = n_classes
        self.norm = norm
        self.encoder = nn.ModuleList()
        previous = in_channels
        for channels, dropout in zip(CHANNELS, ENCODER_DROPOUT):
            self.encoder.append(ConvBlock(previous, channels, dropout, norm))
            previous = channels
        self.decoder = nn.ModuleList(
            UpBlock(deep, skip, skip, norm) for deep, skip in zip(CHANNELS[:0:-1], CHANNELS[-2::-1])
        )
        self.head = nn.Conv2d(CHANNELS[0], n_classes, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        # Instance norm needs more than one pixel at the bottleneck: at least 2 × 2 there.
        least = 2 * SIZE_MULTIPLE if self.norm == "instance" else 0
        pad_h = max(-height % SIZE_MULTIPLE, least - height)
        pad_w = max(-width % SIZE_MULTIPLE, least - width)
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
