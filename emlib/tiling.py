"""Tiled prediction: apply a trained model to an image of any size.

Real micrographs (512^2, 1024^2, 4096^2) are larger than the training crops and
than what fits in memory at once. `predict` cuts the image into overlapping
tiles, runs them through the model in batches and blends the tiles back.

Blending window: inside each overlap, a tile's weight is 0 on its outer quarter,
rises linearly over the middle half and is 1 beyond, and the two tiles' weights
sum to 1. So no output pixel comes from within overlap/4 of a tile's cut edge,
and for a fully convolutional model whose receptive-field radius is at most
overlap/4 the result equals whole-image inference. Models that pool (U-Net,
HRNet) see the same pooling grid in every tile when the tile stride
(tile - overlap) is a multiple of their total stride (32 covers every model of
the registry), which the defaults satisfy.
"""

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

STANDARDIZATIONS = ("per_image", "unit", None)


def standardize_image(image: torch.Tensor, how) -> torch.Tensor:
    """Scale a 2-D image as the training data was.

    `"per_image"`: mean 0, std 1 (Au segmentation). `"unit"`: [0, 1]
    (TEMImageNet restoration): integer images are divided by their dtype's
    maximum beforehand (see `predict`), float images already in [0, 1] are kept
    and others are min-max scaled. `None`: unchanged.
    """
    if how not in STANDARDIZATIONS:
        raise ValueError(f"standardize must be one of {STANDARDIZATIONS}, got {how!r}")
    if how == "per_image":
        return (image - image.mean()) / image.std().clamp_min(1e-8)
    if how == "unit" and (image.min() < 0 or image.max() > 1):
        return (image - image.min()) / (image.max() - image.min()).clamp_min(1e-8)
    return image


def _as_float_image(image) -> torch.Tensor:
    """numpy / tensor, 2-D (or 1 x H x W) -> float32 CPU tensor (H, W); integer images scaled to [0, 1]."""
    if isinstance(image, np.ndarray):
        if np.issubdtype(image.dtype, np.integer):
            image = image.astype(np.float32) / np.iinfo(image.dtype).max
        image = torch.from_numpy(np.ascontiguousarray(image))
    elif not isinstance(image, torch.Tensor):
        raise ValueError(f"image must be a numpy array or a torch tensor, got {type(image).__name__}")
    elif not torch.is_floating_point(image):
        image = image.float() / torch.iinfo(image.dtype).max
    if image.dim() == 3 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 2:
        raise ValueError(f"image must be 2-D (H, W), got shape {tuple(image.shape)}")
    return image.detach().float().cpu()


def tile_starts(length: int, tile: int, stride: int) -> list:
    """Start offsets of the tiles along one axis of a length padded to `tile + k * stride`."""
    count = 1 + max(0, -(-(length - tile) // stride))
    return [i * stride for i in range(count)]


def blend_window(tile: int, overlap: int, ramp_start: bool, ramp_end: bool) -> torch.Tensor:
    """1-D weights of one tile: ramps inside the overlaps shared with a neighbour, 1 elsewhere."""
    weights = torch.ones(tile)
    if overlap > 0:
        i = torch.arange(overlap, dtype=torch.float32)
        ramp = ((i + 0.5 - overlap / 4) / (overlap / 2)).clamp(0, 1)
        if ramp_start:
            weights[:overlap] = ramp
        if ramp_end:
            weights[tile - overlap:] = ramp.flip(0)
    return weights


def _pad_to(image, height, width):
    """Reflect-pad (replicate when the image is too small to reflect) at the bottom and right."""
    pad = (0, width - image.shape[-1], 0, height - image.shape[-2])
    mode = "reflect" if pad[1] < image.shape[-1] and pad[3] < image.shape[-2] else "replicate"
    return F.pad(image[None, None], pad, mode=mode)[0, 0]


def _model_device(model):
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def predict(model, image, tile=256, overlap=64, standardize="per_image", batch_size=8, device=None, progress=False):
    """Predict a whole 2-D image with `model` by overlapping tiles.

    Args:
        model: an image-to-image nn.Module with one input channel.
        image: (H, W) numpy array or tensor (integer images are read as [0, 1]).
        tile: tile side in pixels (the training crop size is a good choice).
        overlap: pixels shared by neighbouring tiles; blending uses its middle half.
        standardize: "per_image" (segmentation), "unit" (restoration) or None.
        batch_size: tiles per forward pass.
        device: where to run; default the model's device.
        progress: show a tqdm bar over the batches.

    Returns:
        float32 numpy array of the model's raw output (logits for segmentation),
        (H, W) for one output channel, else (C, H, W).
    """
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"need tile >= 1 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    image = standardize_image(_as_float_image(image), standardize)
    height, width = image.shape
    stride = tile - overlap
    rows, cols = tile_starts(height, tile, stride), tile_starts(width, tile, stride)
    padded = _pad_to(image, rows[-1] + tile, cols[-1] + tile)
    device = torch.device(device) if device is not None else _model_device(model)
    positions = [(r, c) for r in rows for c in cols]
    output, weight_sum = None, torch.zeros(padded.shape)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            batches = range(0, len(positions), batch_size)
            for start in tqdm(batches, desc="tiles", disable=not progress):
                batch_positions = positions[start:start + batch_size]
                tiles = torch.stack([padded[r:r + tile, c:c + tile] for r, c in batch_positions])[:, None]
                predictions = model(tiles.to(device)).float().cpu()
                if output is None:
                    output = torch.zeros((predictions.shape[1],) + tuple(padded.shape))
                for (r, c), prediction in zip(batch_positions, predictions):
                    weights = torch.outer(
                        blend_window(tile, overlap, r > 0, r < rows[-1]),
                        blend_window(tile, overlap, c > 0, c < cols[-1]),
                    )
                    output[:, r:r + tile, c:c + tile] += prediction * weights
                    weight_sum[r:r + tile, c:c + tile] += weights
    finally:
        model.train(was_training)
    output = (output / weight_sum.clamp_min(1e-8))[:, :height, :width]
    return (output[0] if output.shape[0] == 1 else output).numpy()

