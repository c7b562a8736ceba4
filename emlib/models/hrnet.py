"""HRNetV2 for dense prediction: the timm backbone plus a full-resolution head.

HRNet (Wang et al. 2021) keeps four parallel branches at 1/4, 1/8, 1/16 and
1/32 of the input resolution and fuses them repeatedly, so high-resolution
detail is never thrown away and recovered, as in an encoder-decoder. The
HRNetV2 head upsamples all branches to the 1/4 branch, concatenates them,
mixes them with 1x1 conv-BN-ReLU, maps to the output channels with a 1x1 conv
and upsamples bilinearly to the input size (logits, no final activation).

Inputs whose sides are not multiples of 32 are reflect-padded on the
bottom/right and the output is cropped back to the input's height and width.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .unet import pad_to_multiple

WIDTHS = {"hrnet_w18_small": 18, "hrnet_w18": 18, "hrnet_w44": 44}


class HRNet(nn.Module):
    """timm HRNetV2 backbone (`variant`, random init) + the HRNetV2 segmentation head."""

    size_multiple = 32
    cpu_channels_last = False  # slower in channels_last on AVX-512 BF16 CPUs without AMX (benchmarks/cpu_fast_path.py)

    def __init__(self, variant: str = "hrnet_w18_small", in_channels: int = 1, out_channels: int = 1):
        super().__init__()
        import timm  # imported here: timm takes seconds to import and U-Nets do not need it

        self.backbone = timm.create_model(
            variant, features_only=True, feature_location="", out_indices=(1, 2, 3, 4),
            in_chans=in_channels, pretrained=False,
        )
        channels = sum(self.backbone.feature_info.channels())
        self.fuse = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x):
        height, width = x.shape[-2:]
        padded = pad_to_multiple(x, self.size_multiple)
        features = self.backbone(padded)
        size = features[0].shape[-2:]
        features = [features[0]] + [
            F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in features[1:]
        ]
        logits = self.head(self.fuse(torch.cat(features, dim=1)))
        logits = F.interpolate(logits, size=padded.shape[-2:], mode="bilinear", align_corners=False)
        return logits[..., :height, :width]
