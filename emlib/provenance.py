"""Where a result came from: the code's commit, the machine and the library versions.

Every run writes `provenance()` into its summary.json (and the pretrained
generator's model card), so that a committed result can be traced back to the
code that made it and the hardware it ran on.
"""
import os
import platform
import subprocess
from pathlib import Path

import torch

from emlib import __version__
from emlib.paths import REPO_ROOT


def git_commit(folder=REPO_ROOT) -> str | None:
    """The commit of the emlib checkout, with `+dirty` when tracked files differ from it; None outside git."""
    try:
        commit = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no", "--", "emlib"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def cpu_name() -> str:
    """The CPU model as the OS reports it (Linux /proc/cpuinfo), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device | None = None) -> dict:
    """The hardware a run used: CPU model and cores, torch threads, and the GPU when it ran on one."""
    info = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform()}
    if device is not None and device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def provenance(device: torch.device | None = None) -> dict:
    """{"commit", "emlib_version", "torch_version", "machine"} for a run's summary.json."""
    return {"commit": git_commit(), "emlib_version": __version__, "torch_version": torch.__version__,
            "machine": machine(device)}
