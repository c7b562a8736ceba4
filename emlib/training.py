"""Shared run machinery for every training loop in emlib (pretraining, fine-tuning).

Nothing here knows about GANs or datasets. It provides, top to bottom:

- devices, seeding and deterministic mode;
- mixed precision (bf16 where supported, else fp16 + GradScaler), channels_last
  and optional `torch.compile`;
- a resumable DistributedSampler (the sampler position is part of a checkpoint);
- capture / restore of every RNG state, as plain tensors and lists, so that a
  checkpoint loads with `torch.load(..., weights_only=True)`;
- atomic checkpoint files (never holding NaN/inf weights), one clear error for a
  corrupt one, and the checks on resume: config mismatch, data fingerprint;
- the run folder: an exclusive lock, config.json first, summary.json last;
- a resume-safe CSV logger (torn rows skipped) and `plot_log` for loss curves;
- a SIGINT/SIGTERM handler that asks the loop to checkpoint and stop;
- a NaN/inf loss guard;
- DistributedDataParallel helpers driven by the `torchrun` environment variables;
- config dataclass <-> dict / JSON / command-line flags.

A loop resumes exactly (same losses to float precision on CPU with
`set_deterministic(True)`) when nothing random escapes the checkpoint:

    sampler = ResumableSampler(dataset, world_size, rank, seed=seed)
    sampler.set_epoch(epoch, start_index=batches_done * batch_size)
    loader = DataLoader(dataset, sampler=sampler, generator=torch.Generator().manual_seed(seed + epoch))
    ...  # a DataLoader without `generator=` draws its worker seed from the global RNG
    save_checkpoint(path, {"model": ..., "rng": capture_rng_state(), "position": ...})

Random augmentations inside workers should be seeded per sample (see
`SeededSamples`), so that they do not depend on worker count.
"""
import collections
import contextlib
import csv
import dataclasses
import errno
import hashlib
import json
import math
import numbers
import os
import pickle
import random
import signal
import sys
import types
import typing
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

try:
    import fcntl
except ImportError:  # Windows: the lock falls back to an exclusively created file
    fcntl = None

DEVICES = ("auto", "cpu", "cuda")


# ----------------------------------------------------------------------------- devices, seeds


def select_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """`"auto"` -> CUDA when available else CPU; `"cuda"` without a GPU raises ValueError."""
    if name not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' but no CUDA GPU is available; use device='cpu' or 'auto'")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds all CUDA devices


def set_deterministic(enabled: bool = True) -> None:
    """Use deterministic algorithms only (tests, exact-resume checks); slower on GPU."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=False)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


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


# ----------------------------------------------------------------------------- the sampler position


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


# ----------------------------------------------------------------------------- RNG state


def capture_rng_state(generators: dict | None = None) -> dict:
    """Every RNG state as tensors and lists (safe for `torch.load(weights_only=True)`).

    `generators` maps names to extra `torch.Generator`s the loop uses (corruptions,
    sampling); their states are stored under the same names.
    """
    np_state = np.random.get_state()
    state = {
        "python": _to_plain(random.getstate()),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    return state


def restore_rng_state(state: dict, generators: dict | None = None) -> None:
    """Restore what `capture_rng_state` captured (same `generators` names)."""
    random.setstate(_to_tuple(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    for name, g in (generators or {}).items():
        if name not in state["generators"]:
            raise ValueError(f"checkpoint has no RNG state for generator {name!r}")
        g.set_state(state["generators"][name].cpu())


def _to_plain(obj):
    return [_to_plain(x) for x in obj] if isinstance(obj, (tuple, list)) else obj


def _to_tuple(obj):
    return tuple(_to_tuple(x) for x in obj) if isinstance(obj, (tuple, list)) else obj


# ----------------------------------------------------------------------------- checkpoints


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: empty, truncated, corrupt, or not a checkpoint of this run kind."""


class NonFiniteWeightsError(FloatingPointError):
    """Weights (or optimiser state) hold NaN/inf; they are never written to disk."""


class RunFolderLockedError(RuntimeError):
    """Another run is writing into the same run folder."""


class DiskFullError(OSError):
    """The disk filled up while a file was written atomically; the previous file is untouched."""

    def __init__(self, path: Path):
        kept = "the previous checkpoint is kept" if path.suffix == ".pt" else f"the previous {path.name} is kept"
        if not path.exists():
            kept = "nothing was written"
        super().__init__(errno.ENOSPC, f"no space left on device while writing {path}; {kept} (free some space, then continue with --resume)", str(path))

    def __str__(self):
        return self.strerror


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _is_disk_full(err: BaseException) -> bool:
    """Whether `err`, or an exception it was raised from or during, is ENOSPC / EDQUOT
    (torch.save reports a full disk as a RuntimeError raised while handling the OSError)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            return True
        err = err.__cause__ or err.__context__
    return False


def atomic_write(path, write_fn) -> None:
    """Write a file atomically: `write_fn(file)` into a temp file in the same folder,
    fsync, `os.replace` onto `path`, fsync the folder. A crash leaves the old file; a
    full disk raises DiskFullError naming `path`. The file gets the mode `open()` would
    give it (0o666 less the umask), not mkstemp's 0o600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if _is_disk_full(err):
            raise DiskFullError(path) from err
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every OS / filesystem allows it
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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


def save_checkpoint(path, state: dict) -> None:
    """Save a checkpoint dict atomically. Keep it to tensors, numbers, strings,
    lists and dicts (no pickled objects) so that it loads with weights_only=True.

    A state holding any NaN/inf floating-point tensor (weights, buffers, optimiser
    moments) is refused with NonFiniteWeightsError naming the tensor; the previous
    checkpoint stays as it was.
    """
    path = Path(path)
    check_finite_weights(state, f"refusing to write {path}; the previous checkpoint is kept (the run diverged: "
                                "continue from it with --resume and a lower lr, or without amp)")
    atomic_write(path, lambda f: torch.save(state, f))


CHECKPOINT_ADVICE = "move it away (or restore a copy of the run folder), then run again without --resume to start over"


def load_checkpoint(path, map_location="cpu", required=()) -> dict:
    """Load a checkpoint written by `save_checkpoint` (weights_only=True, never pickle).

    `required`: keys the checkpoint dict must have. An empty, truncated or corrupt
    file, or one of another structure, raises CheckpointError naming the path and
    what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes; a crash or a full disk?): {CHECKPOINT_ADVICE}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except OSError:
        raise  # permissions and the like: the message names the file already
    except pickle.UnpicklingError:
        # torch's own message here suggests weights_only=False: never do that with a file you did not write.
        raise CheckpointError(f"checkpoint {path} is corrupt, or holds objects other than tensors, numbers, strings, "
                              f"lists and dicts (which are never unpickled): {CHECKPOINT_ADVICE}") from None
    except Exception as err:  # torch raises RuntimeError, EOFError, ... for truncated archives
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({type(err).__name__}): {CHECKPOINT_ADVICE}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not an emlib checkpoint (it holds a {type(state).__name__}, not a dict): {CHECKPOINT_ADVICE}")
    missing = [key for key in required if key not in state]
    if missing:
        raise CheckpointError(f"{path} is not a checkpoint of this kind of run (no {', '.join(missing)}): {CHECKPOINT_ADVICE}")
    return state


def write_json_atomic(path, data: dict) -> None:
    """Write `data` as indented JSON, atomically."""
    atomic_write(path, lambda f: f.write((json.dumps(data, indent=2, sort_keys=True) + "\n").encode()))


# ----------------------------------------------------------------------------- the run folder

LOCK_NAME = ".lock"


@contextlib.contextmanager
def lock_run_folder(output_dir, enabled: bool = True):
    """Hold an exclusive lock on a run folder (`output_dir/.lock`) for the whole run.

    A second run into the same folder raises RunFolderLockedError instead of
    interleaving its files with the first. The lock is an flock on the file: the
    OS releases it when the process dies, even by kill -9; a clean exit also
    removes the file (and the folder, when the run created it and left it empty).
    `enabled=False` (ranks other than 0) does nothing.
    """
    if not enabled:
        yield
        return
    folder = Path(output_dir)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = _acquire_lock(path)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # while still holding it: a waiting run then sees a new file
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: a run that failed before writing anything


def _acquire_lock(path: Path) -> int:
    def busy():
        with contextlib.suppress(OSError, ValueError):
            holder = path.read_text().strip()
            return RunFolderLockedError(f"{path.parent} is in use by another run (process {holder}; lock file {path}): "
                                        "wait for it to finish, or use another output_dir")
        return RunFolderLockedError(f"{path.parent} is in use by another run (lock file {path}): wait for it to finish, or use another output_dir")

    if fcntl is None:  # no flock: an exclusively created file (left behind by a killed run: delete it)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            raise busy() from None
        os.write(fd, str(os.getpid()).encode())
        return fd
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise busy() from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else the holder removed the file between our open and flock: try again
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            return fd
        os.close(fd)


def plan_run(output_dir, resume: bool, overwrite: bool = False, announce: bool = True) -> bool:
    """Decide, before anything in `output_dir` changes, whether the run resumes.

    Returns True when `resume` and output_dir/checkpoint.pt exists. `resume` without
    a checkpoint says so (one line, when `announce`) and starts fresh. A fresh run
    into a folder holding a finished run (summary.json) raises ValueError unless
    `overwrite`.
    """
    output_dir = Path(output_dir)
    if resume and (output_dir / "checkpoint.pt").is_file():
        return True
    if resume and announce:
        note(f"resume: no checkpoint in {output_dir}; starting a new run")
    if (output_dir / "summary.json").exists() and not overwrite:
        raise ValueError(f"output_dir {output_dir} holds a finished run (summary.json): continue it with --resume "
                         "(e.g. with more epochs), replace it with --overwrite, or choose another output_dir")
    return False


def remove_stale_temp_files(output_dir) -> list:
    """Delete the temp files that killed runs left in `output_dir` (`.checkpoint.pt.*.tmp`
    of atomic writes, `*.tmp` of other writers); returns their names. Call it with
    the run folder's lock held."""
    folder = Path(output_dir)
    removed = []
    for path in sorted(set(folder.glob(".*.tmp")) | set(folder.glob("*.tmp"))):
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
            path.unlink()
            removed.append(path.name)
    return removed


def start_run_folder(output_dir, config: dict) -> None:
    """Mark a run folder as running: create it, remove stale temp files and an old
    summary.json, write config.json.

    The run contract (read by emlib.sweep): config.json at the start, summary.json
    last, and only for a finished run. Call it only once every check of the run
    (config, checkpoint, data) has passed, so that a refused run leaves the folder
    as it was.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(output_dir)
    (output_dir / "summary.json").unlink(missing_ok=True)
    write_json_atomic(output_dir / "config.json", config)


def finish_run_folder(output_dir, summary: dict) -> None:
    """Mark a run as finished: its summary.json, written atomically and last."""
    write_json_atomic(Path(output_dir) / "summary.json", summary)


def exit_code(summary: dict) -> int:
    """The CLI's exit status for a run summary: 0 when finished; for an interrupted run
    128 + the signal's number, as shells report it (130 SIGINT, 143 SIGTERM)."""
    if summary.get("status") != "interrupted":
        return 0
    name = summary.get("signal")
    return 128 + signal.Signals[name].value if name in signal.Signals.__members__ else 1


# ----------------------------------------------------------------------------- checks on resume


def data_fingerprint(datasets) -> str:
    """A sha256 of what `datasets` (a list) hold, to refuse resuming on other data.

    Each dataset is unwrapped through `.dataset` (Subset, crops, repeats, seeded
    samples); Subset `indices` on the way count, and at the bottom its item list:
    `sources` (the source image of each item), else `files`, else `ids`, else only
    its length.
    """
    parts = [_item_list(dataset) for dataset in datasets]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _item_list(dataset) -> list:
    parts = []
    for _ in range(100):
        indices = getattr(dataset, "indices", None)
        if indices is not None:
            parts.append(["indices", [int(i) for i in indices]])
        for name in ("sources", "files", "ids"):
            items = getattr(dataset, name, None)
            if items is not None and not isinstance(items, (str, bytes)):
                parts.append([name, [str(item) for item in items]])
                return parts
        inner = getattr(dataset, "dataset", None)
        if inner is None or isinstance(inner, (str, bytes)) or not hasattr(inner, "__len__"):
            parts.append(["length", len(dataset)])
            return parts
        dataset = inner
    raise ValueError("data_fingerprint: datasets nested more than 100 deep")


def check_data_matches(saved: str | None, current: str, path, data_root=None) -> None:
    """Raise ValueError when a checkpoint was trained on other data than the run now
    sees (fingerprints differ). Checkpoints without a fingerprint pass."""
    if saved is not None and saved != current:
        raise ValueError(f"cannot resume from {path}: the data differs from the data it was trained on "
                         f"(fingerprint {saved[:12]} -> {current[:12]}; data_root={data_root!r}): point data_root "
                         "at the original data, or start a new run in another output_dir")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> float | None:
    """Give every param group of `optimizer` learning rate `lr` (lr may change on resume);
    returns the previous lr of the first group."""
    previous = optimizer.param_groups[0]["lr"] if optimizer.param_groups else None
    for group in optimizer.param_groups:
        group["lr"] = lr
    return previous


def config_differences(saved: dict, current: dict, may_grow=("epochs",), ignore=()) -> list[str]:
    """The fields that differ between a checkpoint's config and the current one.

    Fields in `may_grow` may increase (train longer); fields in `ignore` may change
    freely (device, workers, output folder, ...). Returns "field: saved -> current"
    strings, empty when compatible.
    """
    diffs = []
    for key in sorted(set(saved) | set(current)):
        if key in ignore:
            continue
        old, new = saved.get(key, "<missing>"), current.get(key, "<missing>")
        if _same(old, new):
            continue
        if key in may_grow and _grows(old, new):
            continue
        diffs.append(f"{key}: {old!r} -> {new!r}")
    return diffs


def check_config_matches(saved: dict, current: dict, path="checkpoint", may_grow=("epochs",), ignore=()) -> None:
    """Raise ValueError listing the differing fields when a checkpoint cannot be resumed."""
    diffs = config_differences(saved, current, may_grow=may_grow, ignore=ignore)
    if diffs:
        raise ValueError(f"cannot resume from {path}: its config differs in " + "; ".join(diffs) + " (use a new output_dir or the original config)")


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _grows(old, new) -> bool:
    if new is None:  # None = unbounded (e.g. max_steps)
        return True
    return old is not None and isinstance(old, (int, float)) and isinstance(new, (int, float)) and new >= old


def config_to_dict(config) -> dict:
    """A config dataclass as a JSON-ready dict (tuples become lists, paths strings)."""
    out = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Path):
            value = str(value)
        out[field.name] = value
    return out


def config_from_dict(cls, data: dict):
    """Build config dataclass `cls` from a dict; unknown keys raise ValueError naming them."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    return cls(**data)


_KIND_NAMES = {type(None): "None", bool: "true or false", int: "an integer", float: "a number", str: "a string",
               tuple: "a list", list: "a list", dict: "a dict"}


def check_config_types(config) -> None:
    """Raise ValueError naming the first field of config dataclass `config` whose value
    has the wrong type (e.g. epochs='abc' from `papermill -p epochs abc`) or is a
    NaN / inf number. Types come from the annotations (`int | None`, `float`, ...);
    a tuple field whose default holds numbers must hold numbers."""
    for field in dataclasses.fields(config):
        kinds = _annotation_kinds(field.type)
        if kinds is None:
            continue  # an annotation this check does not know
        value = getattr(config, field.name)
        if not any(_is_kind(value, kind) for kind in kinds):
            wanted = " or ".join(_KIND_NAMES.get(kind, kind.__name__) for kind in kinds)
            raise ValueError(f"{field.name} must be {wanted}, got {value!r}")
        if isinstance(value, (tuple, list)):
            default = field.default if field.default is not dataclasses.MISSING else None
            if isinstance(default, tuple) and default and all(_is_kind(d, float) for d in default):
                if not all(_is_kind(v, float) for v in value):
                    raise ValueError(f"{field.name} must be a list of numbers, got {value!r}")
        for number in (value if isinstance(value, (tuple, list)) else (value,)):
            if _is_kind(number, float) and not math.isfinite(number):
                raise ValueError(f"{field.name} must be finite, got {value!r}")


def _annotation_kinds(annotation):
    """The plain types an annotation allows (`int | None` -> [int, NoneType]); None if unknown."""
    if isinstance(annotation, str):
        return None
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    kinds = []
    for arg in typing.get_args(annotation) if union else (annotation,):
        kind = typing.get_origin(arg) or arg
        if kind not in _KIND_NAMES:
            return None
        kinds.append(kind)
    return kinds


def _is_kind(value, kind) -> bool:
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, (bool, np.bool_))
    if kind is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if kind is float:
        return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if kind is tuple:
        return isinstance(value, (tuple, list))
    return isinstance(value, kind)


# ----------------------------------------------------------------------------- CSV logging


class CSVLogger:
    """Append rows to a CSV file, flushed row by row.

    On resume pass `resume_step`: rows whose `step_key` is beyond the checkpoint's
    step (written after the last checkpoint by the interrupted run) are dropped, so
    the log matches a run that was never interrupted. Without `resume_step` an
    existing file is replaced. Rows that do not parse (a torn last row, from a crash
    in the middle of an append) are dropped.
    """

    def __init__(self, path, fieldnames, resume_step: int | None = None, step_key: str = "step"):
        self.path, self.fieldnames = Path(path), list(fieldnames)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows = self._rows_up_to(resume_step, step_key) if resume_step is not None and self.path.exists() else []
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fieldnames)
            writer.writeheader()
            writer.writerows(rows)

    def _rows_up_to(self, step: int, step_key: str) -> list:
        kept = []
        for row in _read_rows(self.path):
            with contextlib.suppress(KeyError, ValueError):
                if int(float(row[step_key])) <= step:
                    kept.append({k: row.get(k, "") for k in self.fieldnames})
        return kept

    def log(self, row: dict) -> None:
        """Append one row (missing fields are left empty, floats written with 7 significant digits)."""
        unknown = set(row) - set(self.fieldnames)
        if unknown:
            raise ValueError(f"{self.path.name}: unknown log column(s) {sorted(unknown)}")
        row = {k: (f"{v:.7g}" if isinstance(v, float) else v) for k, v in row.items()}
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fieldnames).writerow(row)


def _read_rows(path) -> list:
    """The complete rows of a CSV file as dicts: a row with too few or too many cells
    (torn by a crash mid-append) is skipped."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return [row for row in reader if None not in row and None not in row.values()]


def _float_row(row: dict) -> dict | None:
    """The row's cells as floats (empty cells NaN); None when a cell does not parse."""
    try:
        return {k: float(v) if v != "" else np.nan for k, v in row.items()}
    except ValueError:
        return None


def read_log(path) -> dict:
    """A log CSV as {column: np.ndarray of floats} (empty cells become NaN; rows that
    do not parse, such as a row torn by a crash, are skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"log file not found: {path}")
    rows = [r for r in map(_float_row, _read_rows(path)) if r is not None]
    columns = rows[0].keys() if rows else []
    return {c: np.array([r[c] for r in rows], dtype=float) for c in columns}


def plot_log(csv_path, columns=None, x: str = "step", ax=None, title: str | None = None, logy: bool = False, label_prefix: str = ""):
    """Plot columns of a log CSV against `x` (all numeric columns but `x` when None)."""
    import matplotlib.pyplot as plt

    log = read_log(csv_path)
    if x not in log:
        raise ValueError(f"{csv_path}: no column {x!r} to plot against; columns are {list(log)}")
    columns = columns or [c for c in log if c != x and not np.all(np.isnan(log[c]))]
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    for column in columns:
        if column not in log:
            raise ValueError(f"{csv_path}: no column {column!r}; columns are {list(log)}")
        ax.plot(log[x], log[column], label=label_prefix + column)
    ax.set_xlabel(x)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


# ----------------------------------------------------------------------------- interrupts and the NaN guard


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


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or inf; the last good checkpoint is kept."""


def check_finite(step: int, **losses) -> None:
    """Raise NonFiniteLossError naming the step and the loss when any loss is NaN/inf."""
    for name, value in losses.items():
        value = float(value)
        if not math.isfinite(value):
            raise NonFiniteLossError(f"loss {name} = {value} at step {step}: stopping; the last good checkpoint is kept (try a lower lr or amp=False)")


# ----------------------------------------------------------------------------- distributed (torchrun)


@dataclasses.dataclass
class DistributedContext:
    """Where this process sits in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str = "auto") -> DistributedContext:
    """Read the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK) and start the
    process group (nccl on CUDA, gloo on CPU). Without those variables: one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def is_main_process() -> bool:
    """True on rank 0 (and in single-process runs)."""
    return not dist.is_initialized() or dist.get_rank() == 0


def note(message: str) -> None:
    """Print a one-line notice to stderr, once (on rank 0 or in a single process)."""
    if is_main_process():
        print(message, file=sys.stderr, flush=True)


def barrier() -> None:
    """Wait for every rank (no-op in single-process runs)."""
    if dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over ranks (itself in single-process runs)."""
    if not dist.is_initialized():
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value / dist.get_world_size()


def all_reduce_any(flag: bool, device: torch.device) -> bool:
    """True when `flag` is true on any rank (so that all ranks stop together)."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def wrap_ddp(model: torch.nn.Module, ctx: DistributedContext) -> torch.nn.Module:
    """Wrap `model` in DistributedDataParallel when the run has several processes."""
    if not ctx.distributed:
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def cleanup_distributed() -> None:
    """Destroy the process group if one was started."""
    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def run_session(device_name: str = "auto", deterministic: bool = False):
    """One run's process setup, undone on exit: torchrun's process group (when
    launched so) and, on request, deterministic algorithms. Yields the
    DistributedContext."""
    switch = deterministic and not torch.are_deterministic_algorithms_enabled()
    ctx = init_distributed(device_name)
    try:
        if switch:
            set_deterministic(True)
        yield ctx
    finally:
        if switch:
            set_deterministic(False)
        cleanup_distributed()


# ----------------------------------------------------------------------------- throughput


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


# ----------------------------------------------------------------------------- config <-> command line


def add_config_arguments(parser, cls) -> None:
    """One `--field-name` flag per field of config dataclass `cls` (defaults suppressed,
    so that only the flags given on the command line override --config / presets).

    bool fields get `--x/--no-x`; tuple fields take several values; fields whose
    default is None take a value, or "none" for None.
    """
    import argparse

    for field in dataclasses.fields(cls):
        flag = "--" + field.name.replace("_", "-")
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        kwargs = {"dest": field.name, "default": argparse.SUPPRESS, "help": f"(default: {default!r})"}
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif isinstance(default, tuple):
            parser.add_argument(flag, nargs=len(default), type=type(default[0]), **kwargs)
        else:
            parser.add_argument(flag, type=_parse_value(field.type, default), **kwargs)


def _parse_value(annotation, default):
    """A parser for one flag value from the field's annotation and default."""
    text = str(annotation)
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        base = type(default)
    elif "int" in text and "float" not in text:
        base = int
    elif "float" in text:
        base = float
    else:
        base = str

    def parse(value: str):
        return None if value.lower() == "none" else base(value)

    parse.__name__ = base.__name__
    return parse


def add_run_parser(subparsers, name: str, cls, help: str, description: str):
    """The subcommand of one run kind: --toy, --config FILE.json, --resume, --overwrite,
    and one flag per field of `cls`."""
    parser = subparsers.add_parser(name, help=help, description=description)
    parser.add_argument("--toy", action="store_true", help=f"start from {cls.__name__}.toy() (CPU, synthetic data)")
    parser.add_argument("--config", help=f"JSON file of {cls.__name__} fields (flags override it)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from output_dir/checkpoint.pt (epochs may grow, lr may change; starts fresh without one)")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in output_dir (refused without it)")
    add_config_arguments(parser, cls)
    return parser


def print_run_summary(summary: dict, leave_out=()) -> None:
    """Print a run's summary as JSON, once: on rank 0 of a torchrun launch, or in a single process."""
    if int(os.environ.get("RANK", "0")) == 0:  # the process group is gone by now: ask torchrun's variable
        print(json.dumps({k: v for k, v in summary.items() if k not in leave_out}, indent=2))


def read_config_file(path) -> dict:
    """The fields in a `--config` JSON file; ValueError naming the file (and the line)
    when it is not a JSON object."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"--config {path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    except UnicodeDecodeError:
        raise ValueError(f"--config {path}: not a UTF-8 text file") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a JSON object of fields, got a {type(data).__name__}")
    return data


def config_from_cli(cls, args, preset=None):
    """Build a config: `preset()` (or the defaults), then `--config FILE.json`, then flags."""
    data = config_to_dict(preset() if preset else cls())
    names = {f.name for f in dataclasses.fields(cls)}
    if getattr(args, "config", None):
        from_file = read_config_file(args.config)
        unknown = sorted(set(from_file) - names)
        if unknown:
            raise ValueError(f"--config {args.config}: unknown {cls.__name__} field(s): {', '.join(unknown)}")
        data.update(from_file)
    data.update({k: v for k, v in vars(args).items() if k in names})
    return config_from_dict(cls, {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
