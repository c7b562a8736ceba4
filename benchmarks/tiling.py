"""Peak memory and time of exact tiled prediction against one whole-image pass.

    python benchmarks/tiling.py                            # 2048x2048; unet_2_44, unet_4_424, hrnet_w18_small; CPU (+ CUDA)
    python benchmarks/tiling.py --size 1024 --models unet_4_424 --devices cpu

Each measurement runs in a fresh subprocess, so that one cannot inherit another's
allocator caches. CPU peak memory is the rise of the process's resident set
(VmHWM after resetting it through /proc/self/clear_refs, minus VmRSS before);
CUDA peak memory is torch.cuda.max_memory_allocated above what was allocated
before. Both include everything the call allocates: for `emlib.predict` the
tiles, their activations and the float32 output and weight maps; for the whole
pass its activations and its output. Random weights, eval mode, no_grad, float32
(the memory of a forward pass does not depend on the weights).
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from emlib import models
from emlib.tiling import predict, tile_plan, tile_starts


def _rss_kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def tiled_pixels(name: str, size: int) -> int:
    """Pixels that `predict` sends through the model for a size x size image."""
    plan = tile_plan(models.create(name))
    padded = -(-size // plan.multiple) * plan.multiple
    side = min(plan.tile, padded)
    return (len(tile_starts(padded, side, plan.stride)) * side) ** 2


def measure(mode: str, name: str, size: int, device: str, out: str) -> dict:
    """One measurement in this process: peak memory (MB) and seconds of `mode` ("whole" or "tiled")."""
    torch.manual_seed(0)
    model = models.create(name).to(device).eval()
    image = torch.randn(size, size, generator=torch.Generator().manual_seed(0))
    if mode == "tiled":
        tile_plan(model)  # the reach is computed once per architecture: not part of the call
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current VmRSS
        before = _rss_kb("VmRSS") * 1024
    start = time.perf_counter()
    if mode == "whole":
        with torch.no_grad():
            result = model(image[None, None].to(device))[0, 0].cpu().numpy()
    else:
        result = predict(model, image, standardize=None)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else _rss_kb("VmHWM") * 1024
    np.save(out, result)
    return {"peak_mb": (peak - before) / 2**20, "seconds": seconds}


def run_child(mode, name, size, device, out) -> dict:
    argv = [sys.executable, __file__, "--child", mode, "--models", name, "--size", str(size), "--devices", device, "--out", out]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="image side in pixels")
    parser.add_argument("--models", nargs="*", default=["unet_2_44", "unet_4_424", "hrnet_w18_small"])
    parser.add_argument("--devices", nargs="*", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--child", choices=("whole", "tiled"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, args.models[0], args.size, args.devices[0], args.out)))
        return

    print(f"{args.size}x{args.size} image, torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", GPU {torch.cuda.get_device_name()}" if "cuda" in args.devices else ""))
    header = (f"{'model':<16} {'device':<6} {'tile':>5} {'overlap':>7} {'px ratio':>8} {'whole MB':>9} {'tiled MB':>9} "
              f"{'mem ratio':>9} {'whole s':>8} {'tiled s':>8} {'time ratio':>10} {'max |diff|':>10}")
    print(header + "\n" + "-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            plan = tile_plan(models.create(name))
            pixel_ratio = tiled_pixels(name, args.size) / args.size**2
            for device in args.devices:
                whole = run_child("whole", name, args.size, device, str(Path(tmp) / "whole.npy"))
                tiled = run_child("tiled", name, args.size, device, str(Path(tmp) / "tiled.npy"))
                diff = np.abs(np.load(Path(tmp) / "whole.npy") - np.load(Path(tmp) / "tiled.npy")).max()
                print(f"{name:<16} {device:<6} {plan.tile:>5} {plan.overlap:>7} {pixel_ratio:>8.2f} "
                      f"{whole['peak_mb']:>9.0f} {tiled['peak_mb']:>9.0f} {whole['peak_mb'] / tiled['peak_mb']:>9.1f} "
                      f"{whole['seconds']:>8.2f} {tiled['seconds']:>8.2f} {tiled['seconds'] / whole['seconds']:>10.2f} "
                      f"{diff:>10.1e}", flush=True)
    print("px ratio: pixels sent through the model / image pixels (the overlap's compute cost); "
          "mem ratio: whole / tiled peak memory; time ratio: tiled / whole")


if __name__ == "__main__":
    main()
