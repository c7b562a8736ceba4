"""Weights: pix2pix initialisation, safetensors files, and pretrained weight transfer.

A pretrained generator is saved with `save_weights` (safetensors; the registry
name goes in the file's metadata), built back from the file alone with
`emlib.models.load`, and loaded into a downstream model of the same
architecture with `transfer_weights`. The downstream task may need another
number of output channels (e.g. 2 segmentation classes); the output head (the
last convolution) then keeps the downstream model's fresh initialisation.
"""
import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from emlib.atomic import atomic_write
from emlib.finite import check_finite_weights

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@torch.no_grad()
def init_weights(model: nn.Module, std: float = 0.02) -> nn.Module:
    """pix2pix init: conv/linear weights N(0, std), biases 0; BatchNorm weights N(1, std), biases 0."""
    for module in model.modules():
        if isinstance(module, _CONVS):
            nn.init.normal_(module.weight, 0.0, std)
        elif isinstance(module, _NORMS) and module.affine:
            nn.init.normal_(module.weight, 1.0, std)
        else:
            continue
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    return model


def save_weights(model: nn.Module, path, metadata: dict | None = None) -> Path:
    """Write the model's state dict to a safetensors file (atomically); returns the path.

    The file's metadata holds `name` (model.name) and `metadata` as JSON; any
    JSON-serialisable dict round-trips through `load_weights`. Weights or buffers
    holding NaN/inf are refused (emlib.finite.NonFiniteWeightsError naming the tensor)
    and an existing file is left as it was.
    """
    path = Path(path)
    check_finite_weights(model.state_dict(), f"refusing to write {path}; an existing file is kept (the run diverged: "
                                             "continue from its last checkpoint with --resume and a lower lr)")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        extra = json.dumps(metadata or {})
    except TypeError as err:
        raise ValueError(f"metadata for {path} must be JSON-serialisable: {err}") from None
    header = {"name": getattr(model, "name", type(model).__name__), "emlib": extra}
    tensors = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    data = save(tensors, metadata=header)
    atomic_write(path, lambda f: f.write(data))  # fsync'd, umask mode; a full disk raises DiskFullError
    return path


class WeightsFileError(ValueError):
    """A weights file that is not a readable safetensors file: empty, truncated, another format, a bad header."""


def read_metadata(path) -> dict:
    """The metadata of a safetensors file, without reading its tensors: `name` (the
    registry architecture `save_weights` stores in the header) and what the writer
    added as `metadata`; keys of files from other tools as they are. A file that is
    not safetensors, or whose `emlib` field is not a JSON object, raises WeightsFileError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    with _readable(path):
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    metadata = {key: value for key, value in header.items() if key != "emlib"}  # files from other tools
    try:
        extra = json.loads(header.get("emlib", "{}"))
    except json.JSONDecodeError as err:
        raise WeightsFileError(f"weights file {path}: its header's 'emlib' field is not valid JSON ({err})") from None
    if not isinstance(extra, dict):
        raise WeightsFileError(f"weights file {path}: its header's 'emlib' field is not a JSON object")
    metadata.update(extra)
    if "name" in header:
        metadata["name"] = header["name"]
    return metadata


@contextlib.contextmanager
def _readable(path: Path):
    """Turn safetensors' errors for a broken file into one WeightsFileError naming it."""
    if path.stat().st_size == 0:
        raise WeightsFileError(f"weights file {path} is empty (0 bytes): export it again")
    try:
        yield
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        if isinstance(err, (FileNotFoundError, PermissionError)):
            raise
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise WeightsFileError(f"weights file {path} is not a readable safetensors file (truncated, corrupt or "
                               f"another format; {reason}): export it again") from None


def load_weights(path, expected_name: str | None = None) -> tuple[dict, dict]:
    """Read a safetensors file written by `save_weights`: (state_dict, metadata incl. 'name').

    With `expected_name`, a file whose stored architecture name differs raises
    ValueError (unet_2_44 and unet_2_84 have the same tensor shapes, so
    `load_state_dict` alone would accept one for the other).
    """
    path = Path(path)
    metadata = read_metadata(path)
    if expected_name is not None and metadata.get("name") != expected_name:
        raise ValueError(f"{path} holds weights of {metadata.get('name', 'an unnamed architecture')}, not {expected_name}")
    with _readable(path):
        return load_file(str(path)), metadata


HEAD_MODES = ("reinit", "transfer")  # what transfer_weights does with the output head


@dataclass
class TransferReport:
    """What `transfer_weights` did, key by key."""

    source: str
    target: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # in the source, not usable by the target
    reinitialised: list[str] = field(default_factory=list)  # target keys left at their fresh init

    def __str__(self) -> str:
        lines = [f"transferred {len(self.loaded)} tensors from {self.source} into {self.target}"]
        if self.reinitialised:
            lines.append(f"re-initialised (output head): {', '.join(self.reinitialised)}")
        if self.skipped:
            lines.append(f"skipped (shape or key mismatch): {', '.join(self.skipped)}")
        return "\n".join(lines)


def output_head_prefix(model: nn.Module) -> str:
    """The state-dict prefix of the output head: the last Conv2d registered in the model."""
    convs = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d output head")
    return convs[-1] + "."


@torch.no_grad()
def transfer_weights(model: nn.Module, source, head: str = "transfer") -> TransferReport:
    """Load pretrained weights (a safetensors path, a state dict or a model) into `model`.

    Tensors whose key and shape match are copied. The output head (the last Conv2d)
    keeps the model's own initialisation when `head="reinit"`, or when its shape
    differs (other out_channels); `head="transfer"` copies it where it fits. A
    generator's head maps features to intensities: carried into segmentation it makes
    the untrained model call bright pixels particle.
    Raises ValueError when the source is a different architecture (another
    registry name, or a different set of tensor names), and
    emlib.finite.NonFiniteWeightsError when a source tensor holds NaN/inf.
    """
    source_name = None
    if isinstance(source, nn.Module):
        source_name, state_dict = getattr(source, "name", None), source.state_dict()
    elif isinstance(source, dict):
        state_dict = source
    else:
        state_dict, metadata = load_weights(source)
        source_name = metadata.get("name")
    target_name = getattr(model, "name", type(model).__name__)
    own = model.state_dict()
    if source_name is not None and hasattr(model, "name") and source_name != model.name:
        raise ValueError(f"cannot transfer weights: source architecture {source_name} != target architecture {model.name}")
    if set(state_dict) != set(own):
        missing, extra = sorted(set(own) - set(state_dict)), sorted(set(state_dict) - set(own))
        raise ValueError(
            f"cannot transfer weights: source architecture {source_name or 'unnamed state dict'} does not match "
            f"target architecture {target_name} ({len(missing)} target tensors missing, e.g. {missing[:3]}; "
            f"{len(extra)} unexpected, e.g. {extra[:3]})"
        )
    where = source if isinstance(source, (str, Path)) else source_name or "the source state dict"
    check_finite_weights(state_dict, f"cannot transfer the pretrained weights of {where}: they are broken "
                                     "(the pretraining diverged; export them again from a run that did not)")
    if head not in HEAD_MODES:
        raise ValueError(f"head must be one of {HEAD_MODES}, got {head!r}")
    report = TransferReport(source=source_name or "state dict", target=target_name)
    head_prefix = output_head_prefix(model)
    for key, value in state_dict.items():
        if key.startswith(head_prefix) and head == "reinit":
            report.reinitialised.append(key)
        elif value.shape == own[key].shape:
            own[key].copy_(value)
            report.loaded.append(key)
        elif key.startswith(head_prefix):
            report.reinitialised.append(key)
        else:
            report.skipped.append(key)
    return report
