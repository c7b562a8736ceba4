"""The fine-tuning augmentations of the paper, drawn per training item (torchvision `transforms.v2`).

Paper, section 4.2 (segmentation): "various types of noise, flips, rotations,
resizing, and random cropping to 448"; section 4.3 (TEMImageNet): "noise
variations, flipping, rotations, and random resizing". It gives no ranges or
probabilities; the values below are ours (listed in the book's table of choices):

    resize   p = RESIZE_P, scale factor log-uniform in SCALE_RANGE; masks nearest-neighbour,
             images and restoration targets bilinear (antialiased); before the crop
    crop     a random `crop` x `crop` window; shorter sides mirror-padded first
    dihedral one of the 8 flips / 90-degree rotations (exact pixel permutations)
    noise    input only, p = NOISE_P: Gaussian (sigma = GAUSSIAN_SIGMA x the image's std)
             or Poisson-like shot noise (PEAK_COUNTS photons at the brightest pixel), equally often

Image and target move together through every geometric step: `tv_tensors.Mask`
targets are resized nearest-neighbour, `tv_tensors.Image` targets like the
input. Randomness comes from torch's global RNG, which
`emlib.training.SeededSamples` seeds per (seed, epoch, item): augmentations are
reproducible and independent of loader workers.
"""
import math
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

RESIZE_P, SCALE_RANGE = 0.5, (0.75, 1.33)
NOISE_P, GAUSSIAN_SIGMA, PEAK_COUNTS = 0.5, (0.05, 0.3), (10.0, 200.0)


def _uniform(low, high) -> float:
    return low + (high - low) * float(torch.rand(()))


def _log_uniform(low, high) -> float:
    return math.exp(_uniform(math.log(low), math.log(high)))


def random_resize(image, target):
    """Both rescaled by one log-uniform factor of SCALE_RANGE (a Mask target nearest-neighbour)."""
    scale = _log_uniform(*SCALE_RANGE)
    height, width = image.shape[-2:]
    size = [max(1, round(height * scale)), max(1, round(width * scale))]
    return TF.resize(image, size, antialias=True), TF.resize(target, size, antialias=True)


def gaussian_noise(image: torch.Tensor) -> torch.Tensor:
    """Additive Gaussian noise with sigma a random fraction (GAUSSIAN_SIGMA) of the image's std."""
    sigma = _uniform(*GAUSSIAN_SIGMA) * float(image.std().clamp_min(1e-6))
    return TF.gaussian_noise(image.as_subclass(torch.Tensor), mean=0.0, sigma=sigma, clip=False)


def poisson_noise(image: torch.Tensor) -> torch.Tensor:
    """Shot noise: the image's range mapped to [0, peak] photon counts, Poisson-sampled, mapped back."""
    image = image.as_subclass(torch.Tensor)
    low, high = image.min(), image.max()
    span = (high - low).clamp_min(1e-6)
    peak = _log_uniform(*PEAK_COUNTS)
    counts = torch.poisson((image - low) / span * peak)
    return counts / peak * span + low


def random_noise(image: torch.Tensor) -> torch.Tensor:
    """Gaussian or Poisson-like noise, equally often."""
    return gaussian_noise(image) if float(torch.rand(())) < 0.5 else poisson_noise(image)


@dataclass
class PairAugment:
    """The train-time transform of one (input, target) pair, (1, H, W) tensors of any size -> (1, crop, crop).

    mask: the target is a segmentation mask (nearest-neighbour resizing) rather than an image.
    resize, dihedral, noise: the switches of FinetuneConfig (`augment_resize`, ...).
    """

    crop: int
    mask: bool = True
    resize: bool = True
    dihedral: bool = True
    noise: bool = True

    def __post_init__(self):
        self.cropper = v2.RandomCrop(self.crop, pad_if_needed=True, padding_mode="symmetric")
        self.flip = v2.RandomHorizontalFlip()
        self.rotate = v2.RandomChoice([v2.RandomRotation((angle, angle)) for angle in (0, 90, 180, 270)])

    def __call__(self, image: torch.Tensor, target: torch.Tensor):
        image = tv_tensors.Image(image)
        target = tv_tensors.Mask(target) if self.mask else tv_tensors.Image(target)
        if self.resize and float(torch.rand(())) < RESIZE_P:
            image, target = random_resize(image, target)
        image, target = self.cropper(image, target)
        if self.dihedral:
            image, target = self.rotate(*self.flip(image, target))
        image = image.as_subclass(torch.Tensor)
        if self.noise and float(torch.rand(())) < NOISE_P:
            image = random_noise(image)
        return image.contiguous(), target.as_subclass(torch.Tensor).contiguous()


class Augmented(Dataset):
    """`dataset`'s (input, target) items passed through a PairAugment."""

    def __init__(self, dataset, augment: PairAugment):
        self.dataset, self.augment = dataset, augment

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return self.augment(*self.dataset[index])


class CentreCropped(Dataset):
    """`dataset`'s (input, target) items centre-cropped to at most size x size (evaluation on crops)."""

    def __init__(self, dataset, size: int):
        self.dataset, self.size = dataset, size

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        inputs, target = self.dataset[index]
        size = [min(self.size, n) for n in inputs.shape[-2:]]
        return TF.center_crop(inputs, size), TF.center_crop(target, size)
