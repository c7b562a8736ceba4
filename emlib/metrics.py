"""Metrics of the downstream tasks, each per image so that batches can be pooled.

Segmentation: the Dice score as the paper (after Sytwu et al. 2022) reports it:
per image, on the hard mask (logit > 0), with +1 smoothing,
    dice = (2 |P n G| + 1) / (|P| + |G| + 1),
averaged over the images and given in percent. The smoothing makes an empty
prediction of an empty ground truth score 1.

Restoration: L1 (mean absolute error on [0, 1] intensities, the paper's metric),
plus PSNR and SSIM (torchmetrics) which users of restoration models expect.
"""
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def _check_same_shape(prediction, target, what):
    if prediction.shape != target.shape:
        raise ValueError(f"{what}: prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}")
    if prediction.dim() < 2:
        raise ValueError(f"{what}: expected images of at least 2 dimensions (H, W), got shape {tuple(prediction.shape)}")


def _per_image(x):
    """(B, ...) -> (B, N); a single 2-D image counts as a batch of one."""
    return x.reshape(1, -1) if x.dim() == 2 else x.reshape(x.shape[0], -1)


def dice_scores(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice of each image in [0, 1]: hard mask at logit > 0, +1 smoothing.

    `logits` and `target` (a {0, 1} mask) share one shape: (H, W), (B, H, W)
    or (B, C, H, W). Returns a float tensor of shape (B,).
    """
    _check_same_shape(logits, target, "dice_scores")
    predicted = _per_image(logits > 0).float()
    truth = _per_image(target > 0.5).float()
    overlap = (predicted * truth).sum(1)
    return (2 * overlap + 1) / (predicted.sum(1) + truth.sum(1) + 1)


def dice_percent(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Mean Dice over the images of a batch, in percent (the paper's Tables 2-6)."""
    return 100.0 * dice_scores(logits, target).mean().item()


def l1_errors(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error of each image (B,), on the raw prediction (the paper's Table 7)."""
    _check_same_shape(prediction, target, "l1_errors")
    return (_per_image(prediction) - _per_image(target)).abs().mean(1)


def _as_bchw(x):
    if x.dim() == 2:
        return x[None, None]
    if x.dim() == 3:
        return x[:, None]
    return x


def psnr_values(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of each image (B,), prediction clipped to [0, 1], data range 1."""
    _check_same_shape(prediction, target, "psnr_values")
    prediction, target = _as_bchw(prediction).float().clamp(0, 1), _as_bchw(target).float()
    return peak_signal_noise_ratio(prediction, target, data_range=1.0, reduction="none", dim=(1, 2, 3))


def ssim_values(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM of each image (B,), prediction clipped to [0, 1], data range 1, 11-px Gaussian window."""
    _check_same_shape(prediction, target, "ssim_values")
    prediction, target = _as_bchw(prediction).float().clamp(0, 1), _as_bchw(target).float()
    return structural_similarity_index_measure(prediction, target, data_range=1.0, reduction="none")


def restoration_scores(prediction: torch.Tensor, target: torch.Tensor) -> dict:
    """Per-image `l1`, `psnr` and `ssim` of a batch, as a dict of (B,) tensors."""
    return {
        "l1": l1_errors(prediction, target),
        "psnr": psnr_values(prediction, target),
        "ssim": ssim_values(prediction, target),
    }
