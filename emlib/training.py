"""The pieces every training loop in emlib uses (pretraining, fine-tuning).

Nothing here knows about GANs or datasets. Top to bottom:

- mixed precision (bf16 where supported, else fp16 + GradScaler), channels_last
  and optional `torch.compile`, and the way back to the plain module;
- a resumable DistributedSampler (the sampler position is part of a checkpoint)
  and per-sample seeding (`SeededSamples`);
- a SIGINT/SIGTERM handler that asks the loop to checkpoint and stop;
- throughput, and the learning rate a resumed run may change.

The rest of a run lives beside it: `emlib.session` (device, seeds, RNG state,
torchrun), `emlib.run_folder` (checkpoints, logs, the run-folder contract),
`emlib.finite` (NaN/inf guards), `emlib.config` (config dataclasses as data).

A loop resumes exactly (same losses to float precision on CPU with
`session.set_deterministic(True)`) when nothing random escapes the checkpoint:

    sampler = ResumableSampler(dataset, world_size, rank, seed=seed)
    sampler.set_epoch(epoch, start_index=batches_done * batch_size)
    loader = DataLoader(dataset, sampler=sampler, generator=torch.Generator().manual_seed(seed + epoch))
    ...  # a DataLoader without `generator=` draws its worker seed from the global RNG
    run_folder.save_checkpoint(path, {"model": ..., "rng": session.capture_rng_state(), "position": ...})

Random augmentations inside workers should be seeded per sample (see
`SeededSamples`), so that they do not depend on worker count.
"""
import collections
import contextlib
import signal
import threading
import time

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from emlib import session


# ----------------------------------------------------------------------------- speed: AMP, channels_last, compile


def amp_dtype(device: torch.device):
    """The autocast dtype for `device`: bf16 on CUDA GPUs that support it, else fp16; None on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, enabled: bool):
    """An autocast context for `device` (a no-op on CPU or when disabled)."""
    dtype = amp_dtype(device)
    if not enabled or dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    """A GradScaler that is active only for fp16 autocast (bf16 and fp32 need none)."""
    active = enabled and amp_dtype(device) == torch.float16
    return torch.amp.GradScaler(device.type, enabled=active)


def prepare_model(model: torch.nn.Module, device: torch.device, channels_last: bool = False) -> torch.nn.Module:
    """Move `model` to `device`, in channels_last memory format on CUDA when asked."""
    model = model.to(device)
    if channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def to_device(batch: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """Copy a (B, C, H, W) batch to `device` (non-blocking from pinned memory)."""
    batch = batch.to(device, non_blocking=True)
    if channels_last and device.type == "cuda":
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


def maybe_compile(model: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """`torch.compile(model)` when enabled (the state dict keys stay those of `model`)."""
    return torch.compile(model) if enabled else model


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DDP and/or torch.compile wrappers."""
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def strip_module_prefix(state_dict: dict) -> dict:
    """Drop `module.` / `_orig_mod.` prefixes so DDP or compiled checkpoints load in one process."""
    out = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


# ----------------------------------------------------------------------------- the sampler position, per-sample seeds


class ResumableSampler(DistributedSampler):
    """A DistributedSampler that can start part-way through an epoch.

    The order of an epoch depends only on (seed, epoch), so `set_epoch(epoch,
    start_index)` after a resume yields exactly the indices that the interrupted
    run had not consumed yet. `start_index` counts samples of this rank. Works
    in a single process too (num_replicas=1, rank=0).
    """

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0, drop_last: bool = False):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.start_index = 0

    def set_epoch(self, epoch: int, start_index: int = 0) -> None:
        super().set_epoch(epoch)
        self.start_index = start_index

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[self.start_index:])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start_index)


def sample_seed(*numbers: int) -> int:
    """A well-mixed 63-bit seed from a tuple of non-negative integers."""
    return int(np.random.SeedSequence([int(n) for n in numbers]).generate_state(1, np.uint64)[0] >> 1)


class SeededSamples(Dataset):
    """`dataset[i]` drawn under its own seed (seed, epoch, i), optionally corrupted.

    Random crops (torch RNG inside the dataset) and loader-side corruptions then do
    not depend on worker count, worker assignment or where a run was resumed. Set
    `.epoch` before creating each epoch's DataLoader iterator.
    """

    def __init__(self, dataset, seed: int, corruption=None):
        self.dataset, self.seed, self.corruption, self.epoch = dataset, seed, corruption, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        seed = sample_seed(self.seed, self.epoch, index)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            clean = self.dataset[index]
        if self.corruption is None:
            return clean
        corrupted, target = self.corruption(clean[None], torch.Generator().manual_seed(seed))
        return corrupted[0], target[0]


# ----------------------------------------------------------------------------- interrupts


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop polls: checkpoint, then exit cleanly.

    Use as a context manager; the previous handlers come back on exit. In threads
    other than the main one (where signals cannot be handled) it only holds the flag.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested, self.signal_name, self._previous = False, None, {}

    def _handle(self, signum, frame):
        self.requested, self.signal_name = True, signal.Signals(signum).name

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


# ----------------------------------------------------------------------------- throughput, the learning rate on resume


class Throughput:
    """Images per second over a sliding window of steps (for progress bars and logs)."""

    def __init__(self, window: int = 20):
        self._times = collections.deque(maxlen=window + 1)
        self._counts = collections.deque(maxlen=window + 1)

    def update(self, n_images: int) -> float:
        """Record that `n_images` were just processed; return the current images/s."""
        self._times.append(time.perf_counter())
        self._counts.append(n_images)
        if len(self._times) < 2:
            return float("nan")
        return sum(list(self._counts)[1:]) / max(self._times[-1] - self._times[0], 1e-9)


def resume_lr(optimizers, saved_lr: float, lr: float) -> None:
    """Give every param group of `optimizers` (None entries skipped) the config's `lr`
    after a resume restored their state (lr may change on resume), and say so when
    it differs from the checkpoint's `saved_lr`."""
    for optimizer in optimizers:
        for group in optimizer.param_groups if optimizer is not None else ():
            group["lr"] = lr
    if saved_lr != lr:
        session.note(f"resume: lr changed from {saved_lr} to {lr}")
