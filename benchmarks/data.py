"""Reading speed of `emlib.data.ImageFolder` against plain `tifffile.imread`, side by side in one process.

    python benchmarks/data.py                      # the real cellular EM patches (../shared/data/real) when present
    python benchmarks/data.py --data-root DIR      # any folder of TIFFs
    python benchmarks/data.py --files 200 --rounds 3

Prints images/s of `ImageFolder` items (read, intensities to [0, 1], pad / crop to
image_size, a tensor) and of plain `tifffile.imread(path).astype(np.float32) / 255`
on the same files, and their ratio (target >= 0.5). Without real data the files are
random uint8 TIFF patches in CEM500K's format, written to a temporary folder. The
rounds alternate between the two readers and the best round of each counts, which
is robust to other processes sharing the CPU; an untimed first pass warms the OS
file cache for both. The split manifest goes to a temporary folder, never into the
data folder.
"""
import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from emlib.data import ImageFolder

REAL = Path(__file__).resolve().parents[1].parent / "shared/data/real/cellular_em"


def write_tiff_folder(folder: Path, count: int, size: int = 224) -> Path:
    """Random uint8 TIFF patches in CEM500K's format (decode cost does not depend on content)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        tifffile.imwrite(folder / f"patch{i:05d}.tif", rng.integers(0, 256, (size, size), dtype=np.uint8))
    return folder


def image_folder_pass(dataset, count) -> float:
    """Seconds to load the first `count` items of an ImageFolder."""
    start = time.perf_counter()
    for i in range(count):
        dataset[i]
    return time.perf_counter() - start


def plain_pass(paths) -> float:
    """Seconds to read the same files with tifffile and scale them to float32 in [0, 1]."""
    start = time.perf_counter()
    for path in paths:
        torch.from_numpy(tifffile.imread(path).astype(np.float32) / 255.0)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", help=f"a folder of TIFF images (default: {REAL} when present, else random TIFFs)")
    parser.add_argument("--files", type=int, default=500, help="files read per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args(argv)
    print(f"torch threads {torch.get_num_threads()}, {args.rounds} rounds, best round of each reader")

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        if args.data_root:
            folder, what = Path(args.data_root), f"the folder {args.data_root}"
        elif REAL.is_dir():
            folder, what = REAL, f"real data (cellular_em, {REAL})"
        else:
            folder = write_tiff_folder(tmp / "tiffs", count=int(args.files * 1.3) + 10, size=args.image_size)
            what = "random uint8 TIFFs in a temporary folder (real data absent)"
        start = time.perf_counter()
        dataset = ImageFolder(folder, split="train", image_size=args.image_size, manifest_path=tmp / "manifest.json")
        setup = time.perf_counter() - start
        count = min(args.files, len(dataset))
        paths = [folder / f for f in dataset.files[:count]]
        shapes = {tifffile.imread(p).shape for p in paths[:20]}
        print(f"data: {what}; {count} files, shapes e.g. {sorted(shapes)[:3]}; ImageFolder set-up (scan + manifest) {setup:.2f} s")

        image_folder_pass(dataset, count), plain_pass(paths)  # warm the file cache
        best_folder, best_plain = float("inf"), float("inf")
        for _ in range(args.rounds):
            best_folder = min(best_folder, image_folder_pass(dataset, count))
            best_plain = min(best_plain, plain_pass(paths))

    folder_rate, plain_rate = count / best_folder, count / best_plain
    print(f"ImageFolder:      {folder_rate:8.1f} images/s  (read, to [0, 1], pad/crop to {args.image_size}, tensor)")
    print(f"tifffile.imread:  {plain_rate:8.1f} images/s  (read, to float32 / 255)")
    print(f"ratio ImageFolder / tifffile: {folder_rate / plain_rate:.2f} (target >= 0.5)")


if __name__ == "__main__":
    main()
