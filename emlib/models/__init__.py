"""The model registry: `create(name)` builds any generator or the discriminator.

    from emlib import models
    net = models.create("unet_2_44")          # 1 -> 1 channels
    net = models.create("hrnet_w18", out_channels=2)
    disc = models.create("patchgan")           # concat(A, B): 2 -> 1 channels
    net = models.load("run/generator.safetensors")  # the architecture named in the file

Every model is a plain nn.Module with two extra attributes: `name` (its registry
name) and `size_multiple` (2**B for U-Nets, 32 for HRNet, 1 for the PatchGAN;
inputs of other sizes are padded internally and cropped back).
"""
from functools import partial

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from emlib.finite import check_finite_weights

from .hrnet import HRNet, WIDTHS as _HRNET_WIDTHS
from .patchgan import PatchGAN
from .receptive_field import input_channels, input_gradient, measure_receptive_field, receptive_field
from .unet import DILATIONS, UNet
from .weights import (HEAD_MODES, TransferReport, WeightsFileError, init_weights, load_weights, output_head_prefix,
                      read_metadata, save_weights, transfer_weights)

_BUILDERS = {
    **{name: partial(UNet, dilations) for name, dilations in DILATIONS.items()},
    **{name: partial(HRNet, name) for name in _HRNET_WIDTHS},
    "patchgan": PatchGAN,
}
_DEFAULT_IN_CHANNELS = {"patchgan": 2}  # the discriminator sees concat(A, B)


def names() -> list[str]:
    """All registry names: the nine U-Nets, the HRNet widths, then 'patchgan'."""
    return list(_BUILDERS)


def generator_names() -> list[str]:
    """Registry names usable as pix2pix generator (all but the discriminator)."""
    return [name for name in _BUILDERS if name != "patchgan"]


def create(name: str, in_channels: int | None = None, out_channels: int = 1) -> nn.Module:
    """Build registry model `name` with random weights (PyTorch default init).

    in_channels defaults to 1, except for 'patchgan' where it defaults to 2.
    Raises ValueError for an unknown name, listing the known ones.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model name {name!r}; known models: {', '.join(names())}")
    if in_channels is None:
        in_channels = _DEFAULT_IN_CHANNELS.get(name, 1)
    if in_channels < 1 or out_channels < 1:
        raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
    model = _BUILDERS[name](in_channels=in_channels, out_channels=out_channels)
    model.name = name
    return model


def load(path, expected_name: str | None = None) -> nn.Module:
    """The registry network a safetensors export holds, built and loaded.

    As timm's `create_model(name, checkpoint_path=...)`, but the name comes from the
    file: `save_weights` writes it into the header. The channels follow the stored
    tensors (first convolution, output head). With `expected_name`, a file of another
    architecture raises ValueError. The network is in train mode, as `create` returns
    it: call `.eval()` for inference.
    """
    state, metadata = load_weights(path, expected_name)
    check_finite_weights(state, f"refusing to load {path} (weights from a run that diverged)")
    name = metadata.get("name")
    if name not in _BUILDERS:
        raise ValueError(f"{path} holds weights of {name or 'an unnamed architecture'}, not of a registry model; "
                         f"known models: {', '.join(names())}")
    model = create(name)
    first = next(key for key, module in model.named_modules() if isinstance(module, nn.Conv2d)) + ".weight"
    head = output_head_prefix(model) + "weight"
    own = model.state_dict()
    try:
        if state[first].shape != own[first].shape or state[head].shape != own[head].shape:
            model = create(name, in_channels=state[first].shape[1], out_channels=state[head].shape[0])
        model.load_state_dict(state)
    except (KeyError, RuntimeError) as err:
        raise ValueError(f"{path}: its tensors are not those of {name} ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200]})") from None
    return model


def flops(name_or_model, size: int = 224) -> int:
    """Forward FLOPs (2 per multiply-add) of one size x size image, counted by FlopCounterMode."""
    model = create(name_or_model) if isinstance(name_or_model, str) else name_or_model
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    x = torch.zeros(1, input_channels(model), size, size, device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())


__all__ = [
    "create", "load", "names", "generator_names", "receptive_field", "measure_receptive_field", "input_gradient",
    "init_weights", "save_weights", "load_weights", "read_metadata", "transfer_weights", "TransferReport", "HEAD_MODES", "flops",
    "WeightsFileError",
    "UNet", "HRNet", "PatchGAN", "DILATIONS",
]
