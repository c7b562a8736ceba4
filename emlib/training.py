"""Shared run machinery for every training loop in emlib (pretraining, fine-tuning).

Nothing here knows about GANs or datasets. It provides, top to bottom:

- devices, seeding and deterministic mode;
- mixed precision (bf16 where supported, else fp16 + GradScaler), channels_last
  and optional `torch.compile`;
- a resumable DistributedSampler (the sampler position is part of a checkpoint);
- capture / restore of every RNG state, as plain tensors and lists, so that a
  checkpoint loads with `torch.load(..., weights_only=True)`;
- atomic checkpoint files and a config-mismatch check on resume;
- a resume-safe CSV logger and `plot_log` for loss curves;
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
import json
import math
import os
import random
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler

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


def atomic_write(path, write_fn) -> None:
    """Write a file atomically: `write_fn(file)` into a temp file in the same folder,
    fsync, `os.replace` onto `path`, fsync the folder. A crash leaves the old file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every OS / filesystem allows it
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_checkpoint(path, state: dict) -> None:
    """Save a checkpoint dict atomically. Keep it to tensors, numbers, strings,
    lists and dicts (no pickled objects) so that it loads with weights_only=True."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path, map_location="cpu") -> dict:
    """Load a checkpoint written by `save_checkpoint` (weights_only=True, never pickle)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location=map_location, weights_only=True)


def write_json_atomic(path, data: dict) -> None:
    """Write `data` as indented JSON, atomically."""
    atomic_write(path, lambda f: f.write((json.dumps(data, indent=2, sort_keys=True) + "\n").encode()))


def start_run_folder(output_dir, config: dict) -> None:
    """Mark a run folder as running: create it, remove an old summary.json, write config.json.

    The run contract (read by emlib.sweep): config.json at the start, summary.json
    last, and only for a finished run.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "summary.json").unlink(missing_ok=True)
    write_json_atomic(output_dir / "config.json", config)


def finish_run_folder(output_dir, summary: dict) -> None:
    """Mark a run as finished: its summary.json, written atomically and last."""
    write_json_atomic(Path(output_dir) / "summary.json", summary)


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


# ----------------------------------------------------------------------------- CSV logging


class CSVLogger:
    """Append rows to a CSV file, flushed row by row.

    On resume pass `resume_step`: rows whose `step_key` is beyond the checkpoint's
    step (written after the last checkpoint by the interrupted run) are dropped, so
    the log matches a run that was never interrupted. Without `resume_step` an
    existing file is replaced.
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
        with open(self.path, newline="") as f:
            rows = list(csv.DictReader(f))
        return [{k: r.get(k, "") for k in self.fieldnames} for r in rows if int(float(r[step_key])) <= step]

    def log(self, row: dict) -> None:
        """Append one row (missing fields are left empty, floats written with 7 significant digits)."""
        unknown = set(row) - set(self.fieldnames)
        if unknown:
            raise ValueError(f"{self.path.name}: unknown log column(s) {sorted(unknown)}")
        row = {k: (f"{v:.7g}" if isinstance(v, float) else v) for k, v in row.items()}
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fieldnames).writerow(row)


def read_log(path) -> dict:
    """A log CSV as {column: np.ndarray of floats} (empty cells become NaN)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"log file not found: {path}")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = rows[0].keys() if rows else []
    return {c: np.array([float(r[c]) if r[c] not in ("", None) else np.nan for r in rows]) for c in columns}


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
    """The subcommand of one run kind: --toy, --config FILE.json, --resume, and one flag per field of `cls`."""
    parser = subparsers.add_parser(name, help=help, description=description)
    parser.add_argument("--toy", action="store_true", help=f"start from {cls.__name__}.toy() (CPU, synthetic data)")
    parser.add_argument("--config", help=f"JSON file of {cls.__name__} fields (flags override it)")
    parser.add_argument("--resume", action="store_true", help="continue from output_dir/checkpoint.pt")
    add_config_arguments(parser, cls)
    return parser


def print_run_summary(summary: dict, leave_out=()) -> None:
    """Print a run's summary as JSON, once: on rank 0 of a torchrun launch, or in a single process."""
    if int(os.environ.get("RANK", "0")) == 0:  # the process group is gone by now: ask torchrun's variable
        print(json.dumps({k: v for k, v in summary.items() if k not in leave_out}, indent=2))


def config_from_cli(cls, args, preset=None):
    """Build a config: `preset()` (or the defaults), then `--config FILE.json`, then flags."""
    data = config_to_dict(preset() if preset else cls())
    if getattr(args, "config", None):
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f"--config file not found: {path}")
        data.update(json.loads(path.read_text()))
    names = {f.name for f in dataclasses.fields(cls)}
    data.update({k: v for k, v in vars(args).items() if k in names})
    return config_from_dict(cls, {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
