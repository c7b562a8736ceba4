"""The pieces every training loop in emlib uses (pretraining, fine-tuning).

Nothing here knows about GANs or datasets. Top to bottom:

- mixed precision (bf16 where supported, else fp16 + GradScaler), channels_last
  and optional `torch.compile`, and the way back to the plain module;
- a resumable DistributedSampler (the sampler position is part of a checkpoint)
  and per-sample seeding (`SeededSamples`);
- a SIGINT/SIGTERM handler that asks the loop to checkpoint and stop, and a
  `worker_init_fn` under which loader workers ignore both (the main process decides);
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
import functools
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler
from tqdm import tqdm as std_tqdm
from tqdm.auto import tqdm as auto_tqdm

from emlib import session


# ----------------------------------------------------------------------------- speed: AMP, channels_last, compile
#
# The fast path: autocast in bf16 (fp16 + GradScaler on CUDA GPUs without bf16) and the
# channels_last memory layout. `amp` and `channels_last` are True, False or "auto":
#
#   CUDA  auto = on (bf16 where the GPU has it, else fp16; channels_last for every network)
#   CPU   auto = bf16 autocast where the processor computes bf16 natively (AVX-512 BF16, AMX;
#         Arm BF16), and channels_last where it measured faster (benchmarks/cpu_fast_path.py):
#         for every network with AMX (Intel Xeon 4th gen+), for all but HRNet
#         (`prefers_channels_last`) with AVX-512 BF16 alone (AMD EPYC Zen 4); both off on
#         other processors, where bf16 is emulated and slower than fp32.
#
# Only the convolutions run in bf16: parameters, BatchNorm statistics, losses, metrics and
# optimiser state stay fp32 (autocast casts per operation), so weights are fp32 on disk.

FAST_PATH_MODES = (True, False, "auto")
CPU_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # /proc/cpuinfo flags: x86 AVX-512 BF16 / AMX, Arm BF16


def check_mode(name: str, value) -> None:
    """ValueError unless `value` is True, False or "auto" (the `amp` / `channels_last` fields)."""
    if not (isinstance(value, bool) or value == "auto"):
        raise ValueError(f"{name} must be true, false or 'auto', got {value!r}")


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this processor computes bf16 in hardware (its /proc/cpuinfo flags; False where unknown)."""
    try:
        return native_bf16_in(Path("/proc/cpuinfo").read_text())
    except OSError:
        return False


@functools.lru_cache(maxsize=1)
def cpu_has_amx() -> bool:
    """Whether this processor has AMX tiles for bf16 (Intel Sapphire Rapids and later)."""
    try:
        return "amx_bf16" in cpu_flags(Path("/proc/cpuinfo").read_text())
    except OSError:
        return False


def cpu_flags(cpuinfo: str) -> set:
    """The flags a /proc/cpuinfo text lists on its flags (x86) / Features (Arm) lines."""
    flags = set()
    for line in cpuinfo.splitlines():
        if line.lower().startswith(("flags", "features")):
            flags.update(line.split(":", 1)[-1].split())
    return flags


def native_bf16_in(cpuinfo: str) -> bool:
    """Whether a /proc/cpuinfo text lists a bf16 flag (CPU_BF16_FLAGS)."""
    return bool(cpu_flags(cpuinfo) & CPU_BF16_FLAGS)


def amp_dtype(device: torch.device, amp=True):
    """The autocast dtype that `amp` (True, False, "auto") asks for on `device`; None means fp32.

    True: bf16 (fp16 on CUDA GPUs without bf16); on a CPU bf16 even where it is emulated.
    "auto": as True on CUDA; on a CPU bf16 only where the processor has it natively.
    """
    check_mode("amp", amp)
    if amp is False:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and (amp is True or cpu_has_native_bf16()):
        return torch.bfloat16
    return None


def prefers_channels_last(model: torch.nn.Module) -> bool:
    """Whether `model` runs faster in channels_last on a CPU (a class attribute; HRNet's
    many small branches do not: benchmarks/cpu_fast_path.py)."""
    return getattr(unwrap_model(model), "cpu_channels_last", True)


def use_channels_last(device: torch.device, channels_last, model: torch.nn.Module) -> bool:
    """Whether `model` runs in channels_last: as asked, or for "auto" on CUDA always and on a CPU
    with native bf16 where it measures faster: every network on processors with AMX, the
    networks that `prefers_channels_last` on the others (AVX-512 BF16 alone)."""
    check_mode("channels_last", channels_last)
    if channels_last != "auto":
        return channels_last
    if device.type == "cuda":
        return True
    return device.type == "cpu" and cpu_has_native_bf16() and (cpu_has_amx() or prefers_channels_last(model))


def fast_path_summary(dtype, channels_last: dict) -> dict:
    """What a run records of its fast path: {"amp": "bfloat16" | "float16" | None, "channels_last": {network: bool}}."""
    return {"amp": str(dtype).removeprefix("torch.") if dtype is not None else None, "channels_last": dict(channels_last)}


def describe_fast_path(summary: dict, device: torch.device | None = None) -> str:
    """One line for the log: "fast path on cpu: bfloat16 autocast; channels_last: generator"."""
    precision = f"{summary['amp']} autocast" if summary["amp"] else "fp32"
    layouts = [name for name, on in summary["channels_last"].items() if on]
    where = f" on {device.type}" if device is not None else ""
    return f"fast path{where}: {precision}; channels_last: {', '.join(layouts) or 'none'}"


def check_fast_path_matches(saved: dict | None, current: dict, path) -> None:
    """Refuse (ValueError) to resume a checkpoint written in another fast-path mode: bf16 and fp32
    steps differ in their last bits, so the resumed run would not continue exactly (a run with
    "auto" moved to another processor, for example). A checkpoint from before the fast path
    (`saved` None) is not checked."""
    if saved is None or saved == current:
        return
    raise ValueError(f"cannot resume {path}: it was written with {describe_fast_path(saved)[11:]}, this run would use "
                     f"{describe_fast_path(current)[11:]}; resume in the checkpoint's mode with --amp / --no-amp and "
                     "--channels-last / --no-channels-last")


def autocast(device: torch.device, dtype):
    """An autocast context in `dtype` on `device`; a no-op for None (fp32).

    `dtype` may also be a bool (the old form): True means `amp_dtype(device, True)`."""
    if isinstance(dtype, bool):
        dtype = amp_dtype(device, dtype)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(device: torch.device, dtype) -> torch.amp.GradScaler:
    """A GradScaler that is active only for fp16 autocast (bf16 and fp32 need none)."""
    if isinstance(dtype, bool):
        dtype = amp_dtype(device, dtype)
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def prepare_model(model: torch.nn.Module, device: torch.device, channels_last: bool = False) -> torch.nn.Module:
    """Move `model` to `device`, in channels_last memory format when asked."""
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def to_device(batch: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """Copy a (B, C, H, W) batch to `device` (non-blocking from pinned memory), channels_last when asked."""
    batch = batch.to(device, non_blocking=True)
    if channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


def loader_workers(requested: int) -> int:
    """DataLoader workers: as requested, but never more than the cores this process may use."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if requested > cores:
        session.note(f"workers: {requested} requested, {cores} core(s) here: using {cores}")
        return cores
    return requested


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


def worker_init(init_fn=None):
    """A DataLoader `worker_init_fn` under which loader workers ignore SIGINT and SIGTERM,
    then run `init_fn` (any existing one). A scheduler's SIGTERM (SLURM, docker stop,
    systemd) goes to the whole process group: the workers would die first (torch's own
    handler) and take the run with them before it checkpoints. This way the main process
    alone decides (StopRequest), and the loader stops its workers when it is done."""
    return functools.partial(_ignore_stop_signals, init_fn)


def _ignore_stop_signals(init_fn, worker_id: int) -> None:
    for sig in StopRequest.SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # blocked by start_workers until now: a pending one is dropped
        signal.pthread_sigmask(signal.SIG_UNBLOCK, StopRequest.SIGNALS)
    if init_fn is not None:
        init_fn(worker_id)


def start_workers(loader):
    """`iter(loader)` with SIGINT/SIGTERM blocked while its workers start: they inherit the
    block and unblock only once they ignore both (`worker_init`), so a signal to the process
    group in that window cannot kill a worker that torch's handler still guards. The main
    process gets its signal as soon as the workers are up."""
    if not hasattr(signal, "pthread_sigmask") or loader.num_workers == 0:
        return iter(loader)
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, StopRequest.SIGNALS)
    try:
        return iter(loader)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


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


LONG_RUN_HOURS = 3.0  # a run estimated to take longer gets a warning that names the flags making it smaller


class RunEstimate:
    """Says, once, how long the run will take: from the mean time of its first timed steps
    (after `warmup` untimed ones), the time per epoch and in all, with a warning when it
    exceeds LONG_RUN_HOURS that names `smaller_flags`. Call `step()` after every step."""

    def __init__(self, steps_per_epoch: int, total_steps: int, steps_done: int, smaller_flags: str,
                 warmup: int = 1, timed: int = 3, enabled: bool = True):
        self.steps_per_epoch, self.remaining = steps_per_epoch, total_steps - steps_done
        self.smaller_flags, self.warmup, self.timed, self.enabled = smaller_flags, warmup, timed, enabled
        self.seen, self.started, self.seconds_per_step = 0, None, None

    def step(self) -> None:
        self.seen += 1
        if not self.enabled or self.seconds_per_step is not None:
            return
        if self.seen == self.warmup:
            self.started = time.perf_counter()
        elif self.seen == self.warmup + self.timed or self.seen == self.remaining:
            if self.started is None:
                return
            self.seconds_per_step = (time.perf_counter() - self.started) / max(1, self.seen - self.warmup)
            session.note(self.message())

    def message(self) -> str:
        per_epoch = self.seconds_per_step * self.steps_per_epoch
        total = self.seconds_per_step * self.remaining
        text = (f"estimate: {self.seconds_per_step:.3g} s/step, {format_duration(per_epoch)} per epoch "
                f"({self.steps_per_epoch} steps), {format_duration(total)} for the {self.remaining} steps to go "
                "(training steps only, from the first timed steps)")
        if total > LONG_RUN_HOURS * 3600:
            text += (f"\nwarning: this run would take about {format_duration(total)}; to make it smaller use "
                     f"{self.smaller_flags}")
        return text


def format_duration(seconds: float) -> str:
    """'42 s', '12.5 min', '3.2 h'."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def resume_lr(optimizers, saved_lr: float, lr: float) -> None:
    """Give every param group of `optimizers` (None entries skipped) the config's `lr`
    after a resume restored their state (lr may change on resume), and say so when
    it differs from the checkpoint's `saved_lr`."""
    for optimizer in optimizers:
        for group in optimizer.param_groups if optimizer is not None else ():
            group["lr"] = lr
    if saved_lr != lr:
        session.note(f"resume: lr changed from {saved_lr} to {lr}")


# ----------------------------------------------------------------------------- progress


LOG_LINES = 20  # lines a run's progress writes into a log (no terminal): one every total/20 steps


class LogLines(std_tqdm):
    """tqdm for log files: a whole line every `miniters` steps instead of carriage-return redraws."""

    def display(self, msg=None, pos=None):
        self.fp.write(self.__str__() + "\n")
        self.fp.flush()
        return True


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (where tqdm draws a widget)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


def progress_bar(total: int, desc: str, initial: int = 0, disable: bool = False):
    """The progress of a run: tqdm's bar on a terminal or in a notebook; elsewhere (a batch job's
    log, a sweep's sweep.log) a line every total / LOG_LINES steps, not hundreds of redraws."""
    if disable or sys.stderr.isatty() or in_notebook():
        return auto_tqdm(total=total, initial=initial, disable=disable, desc=desc)
    # maxinterval=inf: tqdm's monitor thread would otherwise drop miniters to 1 after the first pause
    # longer than 10 s (an evaluation, a checkpoint) and write a line every step from then on
    return LogLines(total=total, initial=initial, desc=desc, miniters=max(1, total // LOG_LINES), mininterval=0,
                    maxinterval=float("inf"), file=sys.stderr, ascii=True)
