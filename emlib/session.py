"""One process of a run: its device, seeds, RNG state and place in a torchrun launch.

    with session.run_session(config.device, config.deterministic) as ctx:
        ...  # ctx.device, ctx.rank, ctx.world_size, ctx.is_main

`run_session` starts torchrun's process group (when launched so: RANK,
WORLD_SIZE, LOCAL_RANK) and, on request, deterministic algorithms, and undoes
both on exit. `capture_rng_state` / `restore_rng_state` put every RNG state in
a checkpoint as plain tensors and lists, so that it loads with
`torch.load(..., weights_only=True)` and a resumed run draws the same numbers.
The collective helpers (`barrier`, `all_reduce_mean`, `all_reduce_any`) are
no-ops in a single process.
"""
import contextlib
import dataclasses
import os
import random
import sys

import numpy as np
import torch
import torch.distributed as dist

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


MACHINE_VALUES = ("cuda", "cpu")  # notebook parameters that hold on one kind of machine only


def on_device(value, device: str):
    """A notebook's parameter value for the machine it runs on: "cuda" -> True on a GPU and
    False on the CPU (AMP, channels_last: the book's CPU runs stay fp32, so their outputs
    are the same on every CPU), "cpu" -> the reverse (deterministic algorithms: some CUDA
    backward kernels have no deterministic version); any other value is returned as given."""
    if value not in MACHINE_VALUES:
        return value
    return (select_device(device).type == "cuda") == (value == "cuda")


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


def note(message: str) -> None:
    """Print a one-line notice to stderr, once (on rank 0 or in a single process)."""
    if not dist.is_initialized() or dist.get_rank() == 0:
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


def share_from_main(value: float, device: torch.device) -> float:
    """Rank 0's `value` on every rank (itself in single-process runs)."""
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return t.item()


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
