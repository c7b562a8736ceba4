"""The intensity convention: images are [0, 1]; the pretrained networks work on [-1, 1].

pix2pix maps intensities from [0, 1] to [-1, 1] before the networks see them: a
freshly initialised generator (output near 0) then starts at the mean grey level.
Pretraining does so when `PretrainConfig.centered` (the default), and restoration
fine-tuning always does (random and pretrained starts alike, so that the two
differ only in their weights). Segmentation does not: its images are
standardised per image. Scores are always on the [0, 1] scale.

    x -> to_centered(x) = 2x - 1 -> network -> from_centered(y) = (y + 1) / 2

`CenteredIntensities(network)` is the [0, 1] -> [0, 1] model; TO_CENTERED and
FROM_CENTERED are the same maps as (gain, offset), for processing declared
elsewhere (BioImage.IO packages).
"""
import torch

TO_CENTERED = (2.0, -1.0)  # gain, offset: [0, 1] -> [-1, 1]
FROM_CENTERED = (0.5, 0.5)  # gain, offset: [-1, 1] -> [0, 1]


def to_centered(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] intensities -> [-1, 1]."""
    return images * 2 - 1


def from_centered(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] intensities -> [0, 1]."""
    return (images + 1) / 2


class CenteredIntensities(torch.nn.Module):
    """A model for [0, 1] images around a network that works on [-1, 1]:
    x -> to_centered -> network -> from_centered. It has no parameters of its own
    (`.model` is the network)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return from_centered(self.model(to_centered(x)))
