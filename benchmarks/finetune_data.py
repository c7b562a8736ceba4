"""Fine-tuning's train items per second, side by side in one process: the real study's data path.

    OMP_NUM_THREADS=1 python benchmarks/finetune_data.py            # EMPS from ../shared/data/real
    OMP_NUM_THREADS=1 python benchmarks/finetune_data.py --items 160 --rounds 3

A fine-tuning step draws `batch_size` augmented crops (emlib.data.augment) of whole images
(emlib.data.SegmentationFolder). Three ways of drawing them are timed in turn, round after
round (the best round of each counts, robust to other processes on the CPU):

- "decode each time": the images read from their PNG files at every draw (the cache's
  budget set to 0; how fine-tuning read before the cache), 192 px crops of full-size images;
- "cached": decoded once (`DecodedCache`), the same 192 px crops;
- "cached, half size": `downsample=2` and 96 px crops, the real study's setting (the same
  field of view).

Printed: items/s of each and the ratios to the first. The caches are filled by an untimed
first pass, as a run's first epoch fills them.
"""
import argparse
import time
from pathlib import Path

from emlib.data import catalog
from emlib.data.augment import Augmented, PairAugment

REAL = Path(__file__).resolve().parents[1].parent / "shared/data/real/nanoparticles"


def train_items(root: Path, downsample: int, crop: int, cache: bool):
    dataset = catalog.segmentation_dataset("emps", root / "emps", "train", downsample=downsample)
    if not cache:
        dataset.cache.budget = 0
    return Augmented(dataset, PairAugment(crop))


def items_per_second(items, count: int) -> float:
    start = time.perf_counter()
    for index in range(count):
        items[index % len(items.dataset)]
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, default=REAL, help="the folder holding emps/ (default: %(default)s)")
    parser.add_argument("--items", type=int, default=160, help="items a round draws (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ways = {"decode each time": train_items(args.data_root, 1, 192, cache=False),
            "cached": train_items(args.data_root, 1, 192, cache=True),
            "cached, half size": train_items(args.data_root, 2, 96, cache=True)}
    for items in ways.values():  # fill the caches (a run's first epoch)
        for index in range(len(items.dataset)):
            items[index]
    best = {name: 0.0 for name in ways}
    for _ in range(args.rounds):
        for name, items in ways.items():
            best[name] = max(best[name], items_per_second(items, args.items))
    base = best["decode each time"]
    print(f"EMPS train items (augmented crops), best of {args.rounds} rounds of {args.items}:")
    for name, rate in best.items():
        print(f"  {name:<18} {rate:7.1f} items/s  {rate / base:5.2f}x")


if __name__ == "__main__":
    main()
