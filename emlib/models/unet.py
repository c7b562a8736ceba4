"""U-Net_B_RF: the residual U-Net of Sytwu et al. (2022) with B pooling levels.

Level i has width 4 * 2**i. Each encoder level is a residual block followed by
2x2 max pooling; the bottleneck is one more block at level B; each decoder level
upsamples (nearest, x2), concatenates the encoder's skip and applies a block; a
1x1 convolution maps to the output channels (logits, no final activation).

The receptive field (RF) is set only by the dilation of the 3x3 convolutions,
one dilation per level (the encoder and decoder blocks of a level share it; the
last entry is the bottleneck's). With pooling 2 the RF is

    RF = 2**B + 8 * sum_{l<B} d_l 2**l + 4 d_B 2**B

The dilation table below is our reconstruction: it reproduces the nine RFs of
the paper exactly (tests/test_models.py checks it; the book's page of our
choices, book/choices.md, says why this table among others).

Inputs whose height or width is not a multiple of 2**B are reflect-padded on
the bottom/right up to the next multiple and the output is cropped back, so the
output always has the input's height and width.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

DILATIONS = {
    "unet_2_44": (1, 1, 1),
    "unet_2_84": (2, 2, 2),
    "unet_2_116": (2, 2, 4),
    "unet_3_96": (1, 1, 1, 1),
    "unet_3_176": (1, 2, 2, 2),
    "unet_3_240": (1, 2, 2, 4),
    "unet_4_200": (1, 1, 1, 1, 1),
    "unet_4_360": (1, 1, 2, 2, 2),
    "unet_4_424": (1, 1, 2, 2, 3),
}


class ResidualBlock(nn.Module):
    """3x3 conv-BN-ReLU, 3x3 conv-BN, plus a 1x1 conv on the skip path, add, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=dilation, dilation=dilation)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.skip = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.skip(x))


class Down(nn.Module):
    """Encoder level: a block, then 2x2 max pooling; returns (skip, pooled)."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int):
        super().__init__()
        self.block = ResidualBlock(in_channels, out_channels, dilation)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        skip = self.block(x)
        return skip, self.pool(skip)


class Up(nn.Module):
    """Decoder level: nearest x2 upsampling, concat the skip, a block."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, dilation: int):
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.block = ResidualBlock(in_channels + skip_channels, out_channels, dilation)

    def forward(self, x, skip):
        return self.block(torch.cat([self.upsample(x), skip], dim=1))


class UNet(nn.Module):
    """Residual U-Net with len(dilations) - 1 pooling levels (Sytwu et al. 2022)."""

    # Submodules are registered in forward order along the deepest path, so
    # `receptive_field` can walk model.modules() (see receptive_field.py).
    modules_in_forward_order = True

    def __init__(self, dilations, in_channels: int = 1, out_channels: int = 1, base_width: int = 4):
        super().__init__()
        if len(dilations) < 2:
            raise ValueError(f"dilations needs at least 2 entries (levels + bottleneck), got {dilations}")
        self.dilations = tuple(dilations)
        self.depth = len(dilations) - 1
        self.size_multiple = 2**self.depth
        widths = [base_width * 2**level for level in range(self.depth + 1)]
        ins = [in_channels] + widths[:-2]
        self.downs = nn.ModuleList(Down(i, w, d) for i, w, d in zip(ins, widths, dilations))
        self.bottleneck = ResidualBlock(widths[-2], widths[-1], dilations[-1])
        self.ups = nn.ModuleList(
            Up(widths[level + 1], widths[level], widths[level], dilations[level])
            for level in reversed(range(self.depth))
        )
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x):
        height, width = x.shape[-2:]
        x = pad_to_multiple(x, self.size_multiple)
        skips = []
        for down in self.downs:
            skip, x = down(x)
            skips.append(skip)
        x = self.bottleneck(x)
        for up, skip in zip(self.ups, reversed(skips)):
            x = up(x, skip)
        return self.head(x)[..., :height, :width]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (B, C, H, W) on the bottom/right to multiples of `multiple` (reflect where possible)."""
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    # reflect needs the pad to be smaller than the side; tiny inputs fall back to replicate
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
