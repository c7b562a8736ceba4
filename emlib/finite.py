"""NaN/inf guards: a diverged run stops, and its weights never reach the disk.

A NaN/inf loss raises NonFiniteLossError (the loop stops; the last good
checkpoint stays). Weights, buffers or optimiser state holding NaN/inf raise
NonFiniteWeightsError naming the tensor, before a checkpoint, an export or a
weight transfer uses them.
"""
import math

import torch


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or inf; the last good checkpoint is kept."""


class NonFiniteWeightsError(FloatingPointError):
    """Weights (or optimiser state) hold NaN/inf; they are never written to disk."""


def check_finite(step: int, **losses) -> None:
    """Raise NonFiniteLossError naming the step and the loss when any loss is NaN/inf."""
    for name, value in losses.items():
        value = float(value)
        if not math.isfinite(value):
            raise NonFiniteLossError(f"loss {name} = {value} at step {step}: stopping; the last good checkpoint is kept (try a lower lr or amp=False)")


def nonfinite_tensors(tree, prefix: str = "") -> list:
    """(name, number of NaN/inf values, size) of each floating-point tensor in a nested
    dict / list (a state dict, a whole checkpoint) that is not all finite. Names join
    the keys with dots, e.g. `generator.head.weight`, `opt_g.state.3.exp_avg_sq`."""
    named = list(_floating_tensors(tree, prefix))
    by_device = {}
    for name, tensor in named:
        by_device.setdefault(tensor.device, []).append((name, tensor))
    bad = []
    for items in by_device.values():  # one device sync per device, not one per tensor
        finite = torch.stack([torch.isfinite(t).all() for _, t in items]).cpu()
        for (name, tensor), ok in zip(items, finite.tolist()):
            if not ok:
                bad.append((name, int((~torch.isfinite(tensor)).sum()), tensor.numel()))
    order = {name: i for i, (name, _) in enumerate(named)}
    return sorted(bad, key=lambda b: order[b[0]])


def _floating_tensors(tree, prefix):
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point() or tree.is_complex():
            yield prefix or "tensor", tree.detach()
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from _floating_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            yield from _floating_tensors(value, f"{prefix}.{i}" if prefix else str(i))


def check_finite_weights(tree, consequence: str) -> None:
    """Raise NonFiniteWeightsError naming the first NaN/inf tensor in `tree` (see
    `nonfinite_tensors`), followed by `consequence` (what is refused, what to do)."""
    bad = nonfinite_tensors(tree)
    if bad:
        name, count, size = bad[0]
        more = f" (and {len(bad) - 1} more tensor(s))" if len(bad) > 1 else ""
        raise NonFiniteWeightsError(f"non-finite weights: {name} holds {count} NaN/inf value(s) of {size}{more}; {consequence}")
