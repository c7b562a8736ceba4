"""Results files: one schema per downstream task, shared by the runs that write
them and the notebooks that read them.

The columns are those of the paper's tables (`emlib/paper/*.csv`) plus what makes
a result traceable: the seed, the label fraction and the source of the data
(`synthetic` for toy runs on generated data, `real` for the real datasets).
"""
import csv
import os
from pathlib import Path

PAPER_SEGMENTATION_COLUMNS = ["table", "dataset", "model", "blocks", "receptive_field", "init", "epoch", "dice_percent"]
SEGMENTATION_COLUMNS = PAPER_SEGMENTATION_COLUMNS + ["seed", "label_fraction", "source", "run_id"]

PAPER_RESTORATION_COLUMNS = ["table", "dataset", "task", "model", "init", "epoch", "l1"]
RESTORATION_COLUMNS = PAPER_RESTORATION_COLUMNS + ["psnr", "ssim", "seed", "source", "run_id"]

SOURCES = ("paper", "real", "synthetic")

# Registry names -> the names printed in the paper's tables.
def paper_model_name(registry_name: str) -> str:
    """`unet_4_424` -> `U-Net_4_424`; every HRNet width -> `HRNet` (the paper has one)."""
    if registry_name.startswith("unet_"):
        _, blocks, rf = registry_name.split("_")
        return f"U-Net_{blocks}_{rf}"
    if registry_name.startswith("hrnet"):
        return "HRNet"
    return registry_name


def append_rows(path, rows, columns):
    """Append dict rows to a CSV file, writing the header when the file is new.

    Rows must have exactly `columns` as keys (missing or unknown keys raise a
    ValueError naming them), so that every results file keeps one schema.
    """
    path = Path(path)
    for row in rows:
        missing, unknown = set(columns) - set(row), set(row) - set(columns)
        if missing or unknown:
            raise ValueError(f"results row for {path}: missing columns {sorted(missing)}, unknown columns {sorted(unknown)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        if new:
            writer.writeheader()
        writer.writerows(rows)
        f.flush()
        os.fsync(f.fileno())


def read_rows(path):
    """All rows of a results CSV as a list of dicts (strings as written)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
