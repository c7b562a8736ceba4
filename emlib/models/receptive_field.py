"""The receptive field (RF) of a model, two ways: by the layer formula and measured.

Theoretical: walk the layers in forward order keeping the RF `r` and the jump
`j` (input pixels between neighbouring units): a layer with kernel k, dilation
d, stride s does r += (k - 1) * d * j, j *= s; nearest x2 upsampling halves j.
This is exact along the deepest path of a U-Net and of the PatchGAN; HRNet's
parallel, repeatedly fused branches have no such single path.

Measured: the non-zero extent of the gradient of one output pixel with respect
to the input, summed (in absolute value) over several random inputs so that
max-pool routing and dead ReLUs do not hide pixels. The model runs in eval
mode: train-mode BatchNorm normalises with statistics of the whole batch, which
couples every output to every input pixel and makes the gradient dense. Pooling
makes the result depend on the pixel's phase on the pooling grid (which input
pixels share a pooled unit), so a measured RF can differ from the formula by up
to 2**B - 1 for a U-Net with B pooling levels.
"""
import copy

import torch
import torch.nn as nn


def _as_model(name_or_model) -> nn.Module:
    if isinstance(name_or_model, str):
        from . import create  # the registry imports this module

        return create(name_or_model)
    if not isinstance(name_or_model, nn.Module):
        raise ValueError(f"expected a registry name or an nn.Module, got {type(name_or_model).__name__}")
    return name_or_model


def input_channels(model: nn.Module) -> int:
    """The number of input channels: those of the first convolution."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    raise ValueError(f"{type(model).__name__} has no Conv2d layer")


def receptive_field(name_or_model) -> int:
    """Theoretical receptive field (pixels) of a U-Net or the PatchGAN, walking its layers."""
    model = _as_model(name_or_model)
    if not getattr(model, "modules_in_forward_order", False):
        label = getattr(model, "name", type(model).__name__)
        raise ValueError(
            f"receptive_field: {label} has parallel branches, so no single layer path defines its "
            "receptive field; use measure_receptive_field instead"
        )
    rf, jump = 1.0, 1.0
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):
            kernel, dilation, stride = (_first(getattr(module, a)) for a in ("kernel_size", "dilation", "stride"))
            rf += (kernel - 1) * dilation * jump
            jump *= stride
        elif isinstance(module, nn.Upsample):
            jump /= _first(module.scale_factor)
    return int(rf)


def _first(value):
    return value[0] if isinstance(value, (tuple, list)) else value


def input_gradient(model: nn.Module, height: int, width: int, n_inputs: int = 4,
                   position: tuple[int, int] | None = None, seed: int = 0) -> torch.Tensor:
    """|d output[0, row, col] / d input| summed over n_inputs random (height, width) inputs and channels.

    The inputs are standard normal: zero-mean, so that no ReLU is off for all of
    them (all-positive inputs can leave a whole channel dead and hide the RF's edge).

    position: (row, col) of the output pixel; None (or a None entry) means the centre of the output.
    The model is copied, switched to eval mode and run in float64; it is not changed.
    """
    if n_inputs < 1:
        raise ValueError(f"n_inputs must be >= 1, got {n_inputs}")
    probe = copy.deepcopy(model).double().eval()
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n_inputs, input_channels(probe), height, width, generator=generator, dtype=torch.float64)
    x.requires_grad_(True)
    out = probe(x)
    centre = (out.shape[-2] // 2, out.shape[-1] // 2)
    row, col = (centre[i] if p is None else p for i, p in enumerate(position or (None, None)))
    if not (0 <= row < out.shape[-2] and 0 <= col < out.shape[-1]):
        raise ValueError(f"position {(row, col)} is outside the output of shape {tuple(out.shape[-2:])}")
    out[:, 0, row, col].sum().backward()  # eval mode: samples are independent, one backward serves all
    return x.grad.abs().sum(dim=(0, 1))


def _extent(profile: torch.Tensor) -> int:
    nonzero = profile.nonzero()
    return int(nonzero.max() - nonzero.min() + 1) if len(nonzero) else 0


def measure_receptive_field(model: nn.Module, size: int | None = None, n_inputs: int = 4,
                            position: int | None = None, seed: int = 0) -> int:
    """Measured receptive field: how many input rows/columns influence one output pixel.

    Every layer's support is a product of a row set and a column set, so the
    extent along rows can be read off a tall (size x strip) input and the extent
    along columns off a wide one, at a fraction of the cost of a size x size
    input; the larger of the two is returned.
    size: the long side (default: theoretical RF + 2 pooling cells, rounded up to
    the model's size_multiple; 128 for models without a layer walk).
    position: index of the output pixel along the long side (default: its centre);
    its phase on the pooling grid changes the result by up to 2**B - 1.
    """
    multiple = getattr(model, "size_multiple", 1)
    if size is None:
        size = receptive_field(model) + 2 * multiple if getattr(model, "modules_in_forward_order", False) else 128
        size = -(-size // multiple) * multiple
    strip = max(2 * multiple, 32)
    tall = input_gradient(model, size, strip, n_inputs, None if position is None else (position, None), seed)
    wide = input_gradient(model, strip, size, n_inputs, None if position is None else (None, position), seed)
    return max(_extent(tall.sum(1)), _extent(wide.sum(0)))
