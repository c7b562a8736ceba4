"""The pretraining task: corrupt a clean batch, ask the generator to undo it.

Paper section 4.1: "random Gaussian noise, blurring, flipping, and rotations were
applied to the images used as input to the generator". Flips and 90-degree
rotations are augmentations, so they are applied to the input and the target
alike; noise and blur degrade the input only.

Everything is vectorised over the batch and runs on the batch's device (CPU or
CUDA), so the corruption can run on the GPU when a DataLoader cannot keep up.
Each sample draws its own parameters from one `torch.Generator`, so a seeded
generator gives the same corruptions every time (the fixed validation set).
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Corruption:
    """Random composition of noise, blur, flips and rot90 (one draw per sample).

    noise_std: range (low, high) of the standard deviation of additive Gaussian noise
        (intensities in [0, 1]); p_noise: probability that a sample gets noise.
    blur_sigma: range (low, high) of the Gaussian blur sigma in pixels; p_blur: its probability.
    flip: random horizontal and vertical flips; rot90: random multiples of 90 degrees
        (non-square images only get 0 or 180 degrees, so that shapes are kept).
    """

    noise_std: tuple = (0.0, 0.1)
    blur_sigma: tuple = (0.0, 2.0)
    p_noise: float = 0.8
    p_blur: float = 0.5
    flip: bool = True
    rot90: bool = True

    def __post_init__(self):
        self.noise_std = _check_range("noise_std", self.noise_std)
        self.blur_sigma = _check_range("blur_sigma", self.blur_sigma)
        for name in ("p_noise", "p_blur"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")

    def __call__(self, clean, generator=None):
        """Return (corrupted, target) for a clean float batch (B, C, H, W) in [0, 1].

        `generator` is a `torch.Generator` on the batch's device; pass a seeded one
        for reproducible corruptions. The target is the clean batch after the same
        flips and rotations as the input.
        """
        if clean.ndim != 4 or not clean.is_floating_point():
            raise ValueError(f"clean must be a float tensor (B, C, H, W), got {tuple(clean.shape)} {clean.dtype}")
        target = random_dihedral(clean, generator, self.flip, self.rot90)
        batch = target.shape[0]
        sigma = self._draw(batch, self.blur_sigma, self.p_blur, clean.device, generator)
        std = self._draw(batch, self.noise_std, self.p_noise, clean.device, generator)
        corrupted = gaussian_blur(target, sigma, max_sigma=self.blur_sigma[1])
        noise = torch.randn(target.shape, generator=generator, device=clean.device, dtype=clean.dtype)
        corrupted = corrupted + noise * std.view(-1, 1, 1, 1).to(clean.dtype)
        return corrupted.clamp(0.0, 1.0), target

    @staticmethod
    def _draw(batch, value_range, probability, device, generator):
        """Per-sample value uniform in value_range, zero with probability 1 - p."""
        low, high = value_range
        value = low + (high - low) * torch.rand(batch, generator=generator, device=device)
        applied = torch.rand(batch, generator=generator, device=device) < probability
        return torch.where(applied, value, torch.zeros_like(value))


def _check_range(name, value):
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (low, high) pair, got {value!r}") from None
    if not 0.0 <= low <= high:
        raise ValueError(f"{name} must satisfy 0 <= low <= high, got {value!r}")
    return (low, high)


def random_dihedral(images, generator=None, flip=True, rot90=True):
    """Flip and rotate each sample of (B, C, H, W) by its own random dihedral element.

    Draws are made even when disabled, so that the random stream (and hence the
    noise and blur of a seeded run) does not depend on the flags.
    """
    batch, device = images.shape[0], images.device
    flip_h, flip_v = (torch.rand(batch, generator=generator, device=device) < 0.5 for _ in range(2))
    turns = torch.randint(0, 4, (batch,), generator=generator, device=device)
    square = images.shape[-1] == images.shape[-2]
    if not square:
        turns = turns - turns % 2  # 0 or 180 degrees keep the shape
    out = images
    if flip:
        out = torch.where(flip_h.view(-1, 1, 1, 1), out.flip(-1), out)
        out = torch.where(flip_v.view(-1, 1, 1, 1), out.flip(-2), out)
    if rot90:
        rotated = out.clone()
        for k in range(1, 4):  # a loop over the 3 angles, not over samples
            chosen = turns == k
            if chosen.any():
                rotated[chosen] = torch.rot90(out[chosen], k, dims=(-2, -1))
        out = rotated
    return out


def gaussian_kernels(sigma, radius):
    """1-D Gaussian kernels (B, 2 * radius + 1), one per sigma; sigma 0 gives the identity."""
    x = torch.arange(-radius, radius + 1, device=sigma.device, dtype=torch.float32)
    safe = sigma.clamp_min(1e-6).view(-1, 1)
    kernels = torch.exp(-0.5 * (x / safe) ** 2)
    return kernels / kernels.sum(dim=1, keepdim=True)


def gaussian_blur(images, sigma, max_sigma=None):
    """Blur each sample of (B, C, H, W) with its own sigma (B,), via one grouped conv.

    The kernel radius is ceil(3 * max_sigma) for the whole batch; the border is
    reflected (replicated when the image is too small to reflect).
    """
    batch, channels, height, width = images.shape
    max_sigma = float(sigma.max()) if max_sigma is None else max_sigma
    radius = int(math.ceil(3 * max_sigma))
    if radius == 0 or not bool((sigma > 0).any()):
        return images
    kernels = gaussian_kernels(sigma, radius).to(images.dtype)  # (B, K)
    kernels = kernels.repeat_interleave(channels, dim=0)  # (B * C, K)
    mode = "reflect" if radius < min(height, width) else "replicate"
    x = images.reshape(1, batch * channels, height, width)
    x = F.pad(x, (radius, radius, radius, radius), mode=mode)
    x = F.conv2d(x, kernels.view(-1, 1, 1, 2 * radius + 1), groups=batch * channels)
    x = F.conv2d(x, kernels.view(-1, 1, 2 * radius + 1, 1), groups=batch * channels)
    return x.view(batch, channels, height, width)
