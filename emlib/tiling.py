"""Tiled prediction: apply a trained model to an image of any size, exactly.

Real micrographs (512^2, 1024^2, 4096^2) are larger than the training crops and
than what fits in memory at once. `predict` cuts the image into overlapping
tiles, runs them through the model in batches and blends the tiles back. For
the registry's models the result equals one whole-image pass, `model(image)`,
to float rounding (about 1e-6), borders included.

Why it is exact. A tile's convolutions zero-pad at the tile's edges where the
whole image has real pixels, so an output pixel is right only if every input
pixel it depends on lies inside its tile. That distance is the model's *reach*
(`reach`): the largest distance, in pixels, between an output pixel and an
input pixel it depends on. `predict` therefore

- gives neighbouring tiles an overlap of at least 2 x reach and discards
  `reach` pixels at every cut edge of a tile (the blending weight is 0 there,
  then ramps to 1 over the rest of the overlap);
- starts every tile on a multiple of the model's `size_multiple` (its total
  pooling stride), so each tile sees the same pooling grid as the whole image;
- pads the image as the model itself pads it (reflect, bottom/right, up to a
  multiple of `size_multiple`) and ends the last tile on that padded border, so
  border tiles see the same edges as the whole image.

The reach comes from the model's architecture, not from its weights
(`reach`): a copy of the registry model with every convolution set to a
positive average, BatchNorm set to identity and no biases propagates a band of
ones exactly as far as any set of weights could propagate information (no
term can cancel), so the extent of the non-zero output is the architecture's
receptive field, for U-Nets and for HRNet's parallel, repeatedly fused branches
alike. Doing this for one aligned band of `size_multiple` rows covers every
position on the pooling grid, at the price of up to `size_multiple - 1` pixels
of slack. Reach: unet_2_44 25 px, unet_4_424 229 px (half its 424 px RF plus
pooling phase; the largest gradient-measured distance is 219 px),
hrnet_w18_small 337 px (measured 308), hrnet_w18 and hrnet_w44 1457 px (the
1/32 branch is fused again and again: a huge theoretical RF, even though the
gradient falls off long before it).

Cost (defaults). overlap = 2 x reach, tile = max(256, 2 x overlap), both
rounded up to multiples of `size_multiple`; a batch holds as many tiles as fit
in 8 x 256^2 pixels (at least one). The tiles cover about
(tile / (tile - overlap))^2 times the image, which is the compute overhead: on
a 2048^2 image 1.56x for unet_2_44 (256 px tiles), 3.3x for unet_4_424 (928 px
tiles), tending to 4x on larger images for every model whose tile is
2 x overlap. Peak memory is that of one batch of tiles plus the float32 image
and output maps instead of that of the whole image (benchmarks/tiling.py
measures both). The HRNets with 1457 px reach need 5888 px tiles: on any
smaller image they run as one tile, a whole-image pass with no saving; pass a
smaller `overlap` to trade exactness for memory.

Models outside the registry (or wrappers that add parameters) have no known
reach: pass `overlap`; blending then discards overlap/4 at each cut edge,
which is exact only for a model whose reach is at most overlap/4. An explicit
`overlap` below 2 x reach of a registry model is honoured with a warning: the
result then differs from a whole-image pass near the seams.
"""
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from emlib import models, training
from emlib.data.images import standardize
from emlib.models.unet import pad_to_multiple

STANDARDIZATIONS = ("per_image", "unit", None)
MIN_TILE = 256
DEFAULT_OVERLAP = 64  # models without a known reach
PIXELS_PER_BATCH = 8 * 256 * 256
MAX_PROBE_LENGTH = 1 << 16


def standardize_image(image: torch.Tensor, how) -> torch.Tensor:
    """Scale a 2-D image as the training data was.

    `"per_image"`: mean 0, std 1, as the datasets standardize (`emlib.data.images.standardize`:
    Au and nanoparticle segmentation). `"unit"`: [0, 1]
    (TEMImageNet restoration): integer images are divided by their dtype's
    maximum beforehand (see `predict`), float images already in [0, 1] are kept
    and others are min-max scaled. `None`: unchanged.
    """
    if how not in STANDARDIZATIONS:
        raise ValueError(f"standardize must be one of {STANDARDIZATIONS}, got {how!r}")
    if how == "per_image":
        return torch.from_numpy(standardize(image.detach().cpu().numpy()))
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
    if image.numel() == 0:
        raise ValueError(f"image is empty: shape {tuple(image.shape)}")
    image = image.detach().float().cpu()
    if not torch.isfinite(image).all():  # one NaN would spread through every convolution to the whole map
        raise ValueError(f"image has {int((~torch.isfinite(image)).sum())} NaN or Inf pixel(s)")
    return image


# ----------------------------------------------------------------------------- reach


def registry_module(model: nn.Module) -> nn.Module | None:
    """The registry model that is `model`, or the one inside a wrapper that has no
    parameters of its own (emlib.intensity.CenteredIntensities, DDP, torch.compile); else None."""
    known = [m for m in model.modules() if getattr(m, "name", None) in models.names()]
    if not known or {id(p) for p in model.parameters()} != {id(p) for p in known[0].parameters()}:
        return None
    return known[0]


def _positive_probe(name: str) -> nn.Module:
    """Registry model `name` in float64 eval mode with every convolution a positive
    average, no biases and identity BatchNorm: non-negative in, non-negative out, no cancellation."""
    probe = models.create(name).double().eval()
    with torch.no_grad():
        for module in probe.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.fill_(1.0 / module.weight[0].numel())
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
                module.reset_parameters()
            elif any(True for _ in module.parameters(recurse=False)):
                raise ValueError(f"reach: {name} has a {type(module).__name__} layer; only convolutions and BatchNorm are handled")
    return probe


@lru_cache(maxsize=None)
def _reach_of(name: str) -> int:
    probe = _positive_probe(name)
    multiple = getattr(probe, "size_multiple", 1)
    length = 512
    while length <= MAX_PROBE_LENGTH:
        band = length // 2 // multiple * multiple  # an aligned band of `multiple` rows: every pooling phase
        x = torch.zeros(1, 1, length, multiple, dtype=torch.float64)
        x[..., band:band + multiple, :] = 1
        with torch.no_grad():
            rows = (probe(x)[0].abs().sum(dim=(0, 2)) > 0).nonzero()
        first, last = int(rows.min()), int(rows.max())
        if first > 0 and last < length - 1:  # the support fits: it is complete
            return max(band - first, last - (band + multiple - 1)) + multiple - 1
        length *= 2
    raise ValueError(f"reach: the receptive field of {name} exceeds {MAX_PROBE_LENGTH} px")


def reach(model) -> int | None:
    """How far (px) an output pixel of `model` can depend on the input, bounded from its architecture.

    `model` is a registry name or module (see `registry_module`); None when unknown.
    Computed once per architecture (a second or two for HRNet) by the positive-weight
    probe of the module docstring; the rows' extent is measured (every registry model
    treats rows and columns alike).
    """
    if isinstance(model, str):
        return _reach_of(model)
    inner = registry_module(model)
    return None if inner is None else _reach_of(inner.name)


# ----------------------------------------------------------------------------- the tile grid


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def tile_starts(length: int, tile: int, stride: int) -> list:
    """Start offsets along an axis of `length`: every `stride` from 0, the last tile ending at `length`."""
    if tile >= length:
        return [0]
    return list(range(0, length - tile, stride)) + [length - tile]


def blend_window(tile: int, margin: int, band: int, cut_start: bool, cut_end: bool) -> torch.Tensor:
    """1-D weights of one tile: 0 on the `margin` pixels at a cut edge, then a linear
    ramp over `band` pixels (a step when band is 0), 1 elsewhere. Image edges are not cut."""
    i = torch.arange(tile, dtype=torch.float32)
    ramp = ((i + 0.5 - margin) / band).clamp(0, 1) if band > 0 else (i >= margin).float()
    weights = torch.ones(tile)
    if cut_start:
        weights = torch.minimum(weights, ramp)
    if cut_end:
        weights = torch.minimum(weights, ramp.flip(0))
    return weights


def _model_device(model):
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@dataclass(frozen=True)
class TilePlan:
    """How `predict` tiles for a model: sizes after defaults and rounding."""
    multiple: int         # tiles start on multiples of this (the model's size_multiple)
    tile: int             # tile side
    overlap: int          # pixels shared by neighbouring tiles
    margin: int           # pixels discarded at each cut edge
    reach: int | None     # the model's reach; None outside the registry
    registry: bool        # a registry model: the image is padded as the model pads it

    @property
    def exact(self) -> bool:
        """Whether the tiles reproduce a whole-image pass (margin covers the reach)."""
        return self.reach is not None and self.margin >= self.reach

    @property
    def stride(self) -> int:
        return self.tile - self.overlap


def tile_plan(model, tile=None, overlap=None) -> TilePlan:
    """The tiling `predict` uses for `model` (see `predict` for the defaults)."""
    inner = registry_module(model)
    multiple = getattr(inner if inner is not None else model, "size_multiple", 1)
    model_reach = None if inner is None else _reach_of(inner.name)
    if overlap is None:
        overlap = 2 * model_reach if model_reach is not None else DEFAULT_OVERLAP
    if tile is None:
        tile = max(MIN_TILE, 2 * _round_up(overlap, multiple))
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"need tile >= 1 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    overlap, tile = _round_up(overlap, multiple), _round_up(tile, multiple)
    tile = max(tile, overlap + multiple)
    exact = model_reach is not None and overlap >= 2 * model_reach
    margin = model_reach if exact else overlap // 4
    return TilePlan(multiple, tile, overlap, margin, model_reach, inner is not None)


def _pad(image, plan):
    """(1, 1, H', W'): a registry model's own padding (to its size_multiple); other models
    get tiles of the full tile size, so small images are padded up to it."""
    padded = pad_to_multiple(image[None, None], plan.multiple)
    if plan.registry:
        return padded
    height, width = padded.shape[-2:]
    pad_h, pad_w = max(0, plan.tile - height), max(0, plan.tile - width)
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(padded, (0, pad_w, 0, pad_h), mode=mode)


def predict(model, image, tile=None, overlap=None, standardize="per_image", batch_size=None, device=None,
            progress=False, amp="auto"):
    """Predict a whole 2-D image with `model` by overlapping tiles; equal to `model(image)` for registry models.

    Args:
        model: an image-to-image nn.Module with one input channel.
        image: (H, W) numpy array or tensor (integer images are read as [0, 1]).
        tile: tile side in pixels; default max(256, 2 x overlap). Rounded up to a
            multiple of the model's size_multiple.
        overlap: pixels shared by neighbouring tiles; default 2 x `reach(model)` (exact),
            64 for models outside the registry. Rounded up like `tile`.
        standardize: "per_image" (segmentation), "unit" (restoration) or None.
        batch_size: tiles per forward pass; default as many as fit in 8 x 256^2 pixels.
        device: where to run; default the model's device.
        progress: show a tqdm bar over the batches.
        amp: autocast as training uses it (`emlib.training.amp_dtype`): "auto" computes in bf16
            on CUDA and on CPUs with native bf16, True forces it, False keeps fp32. The output
            is fp32 either way.

    Returns:
        float32 numpy array of the model's raw output (logits for segmentation),
        (H, W) for one output channel, else (C, H, W).

    Cost (see the module docstring): about (tile / (tile - overlap))^2 whole-image
    passes of compute (at most 4 with the defaults on large images), the memory
    of one batch of tiles.
    """
    plan = tile_plan(model, tile, overlap)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    image = standardize_image(_as_float_image(image), standardize)
    height, width = image.shape
    padded = _pad(image, plan)[0, 0]
    tile_h, tile_w = min(plan.tile, padded.shape[0]), min(plan.tile, padded.shape[1])
    rows = tile_starts(padded.shape[0], tile_h, plan.stride)
    cols = tile_starts(padded.shape[1], tile_w, plan.stride)
    if plan.reach is not None and not plan.exact and (len(rows) > 1 or len(cols) > 1):
        warnings.warn(f"predict: overlap {plan.overlap} px < 2 x the model's reach ({plan.reach} px), so the tiles "
                      "differ from a whole-image pass near their seams; leave overlap=None for an exact result")
    batch_size = batch_size or max(1, PIXELS_PER_BATCH // (tile_h * tile_w))
    device = torch.device(device) if device is not None else _model_device(model)
    dtype = training.amp_dtype(device, amp)
    positions = [(r, c) for r in rows for c in cols]
    band = plan.overlap - 2 * plan.margin
    row_windows = {r: blend_window(tile_h, plan.margin, band, r > 0, r < rows[-1]) for r in rows}
    col_windows = {c: blend_window(tile_w, plan.margin, band, c > 0, c < cols[-1]) for c in cols}
    output = None

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            batches = range(0, len(positions), batch_size)
            for start in tqdm(batches, desc="tiles", disable=not progress):
                batch_positions = positions[start:start + batch_size]
                tiles = torch.stack([padded[r:r + tile_h, c:c + tile_w] for r, c in batch_positions])[:, None]
                with training.autocast(device, dtype):
                    predictions = model(tiles.to(device)).float().cpu()
                if output is None:
                    output = torch.zeros((predictions.shape[1],) + tuple(padded.shape))
                for (r, c), prediction in zip(batch_positions, predictions):
                    weights = torch.outer(row_windows[r], col_windows[c])
                    output[:, r:r + tile_h, c:c + tile_w] += prediction * weights
    finally:
        model.train(was_training)
    # the weights are outer products on a product grid, so their sum is the outer product of
    # the 1-D sums: divide in place by rows, then by columns (no second full-size map)
    output.div_(_window_sum(padded.shape[0], row_windows)[:, None]).div_(_window_sum(padded.shape[1], col_windows))
    output = output[:, :height, :width]
    return (output[0] if output.shape[0] == 1 else output).numpy()


def _window_sum(length, windows) -> torch.Tensor:
    """Sum of the 1-D blending windows placed at their starts (positive everywhere)."""
    total = torch.zeros(length)
    for start, window in windows.items():
        total[start:start + len(window)] += window
    return total
