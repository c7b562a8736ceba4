"""The pix2pix PatchGAN discriminator (Isola et al. 2017), 70x70 receptive field.

Input: a conditional pair concat(A, B) along channels (2 channels for grey
images). Output: a patch map of shape (N, 1, H/8 - 2, W/8 - 2) for H, W >= 32;
each value scores one 70x70 input patch as real (1) or fake (0) under the
least-squares GAN loss. Layers: C64 (no norm) - C128 - C256 (stride 2, BN) -
C512 (stride 1, BN) - 4x4 conv to 1 channel, LeakyReLU 0.2: 2,764,609
parameters for 2 input channels.
"""
import torch.nn as nn


def conv_block(in_channels: int, out_channels: int, stride: int, norm: bool) -> list[nn.Module]:
    """4x4 conv (padding 1), optional BatchNorm, LeakyReLU(0.2); conv bias only without norm."""
    layers = [nn.Conv2d(in_channels, out_channels, 4, stride=stride, padding=1, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return layers


class PatchGAN(nn.Module):
    """N-layer PatchGAN: `n_layers` stride-2 convs, one stride-1 conv, a 1-channel conv."""

    modules_in_forward_order = True
    size_multiple = 1

    def __init__(self, in_channels: int = 2, out_channels: int = 1, width: int = 64, n_layers: int = 3):
        super().__init__()
        layers = conv_block(in_channels, width, stride=2, norm=False)
        channels = width
        for layer in range(1, n_layers + 1):
            out = width * min(2**layer, 8)
            layers += conv_block(channels, out, stride=2 if layer < n_layers else 1, norm=True)
            channels = out
        layers.append(nn.Conv2d(channels, out_channels, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)
