"""Results files: one schema per downstream task, shared by the runs that write
them and the notebooks that read them.

The columns are those of the paper's tables (`emlib/paper_tables/*.csv`) plus what makes
a result traceable: the seed, the label fraction and the source of the data
(`synthetic` for toy runs on generated data, `real` for the real datasets).
"""
import csv
import glob
import os
from pathlib import Path

from emlib.paths import repository_path

PAPER_SEGMENTATION_COLUMNS = ["table", "dataset", "model", "blocks", "receptive_field", "init", "epoch", "dice_percent"]
SEGMENTATION_COLUMNS = PAPER_SEGMENTATION_COLUMNS + ["seed", "label_fraction", "source", "run_id"]

PAPER_RESTORATION_COLUMNS = ["table", "dataset", "task", "model", "init", "epoch", "l1"]
RESTORATION_COLUMNS = PAPER_RESTORATION_COLUMNS + ["psnr", "ssim", "seed", "source", "run_id"]
INT_COLUMNS = ("table", "blocks", "receptive_field", "epoch", "seed")
FLOAT_COLUMNS = ("dice_percent", "l1", "psnr", "ssim", "label_fraction")


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


def parse_row(row: dict) -> dict:
    """A results row with numbers as numbers; empty cells become None."""
    parsed = {}
    for key, value in row.items():
        if value is None or value == "":
            parsed[key] = None
        elif key in INT_COLUMNS:
            parsed[key] = int(float(value))
        elif key in FLOAT_COLUMNS:
            parsed[key] = float(value)
        else:
            parsed[key] = value
    return parsed


def results_folders(results_dir) -> list:
    """The results folder, and for a relative one the same name in the two parent
    folders too: notebooks run from notebooks/ see both their own runs and the
    repository's runs/ (where `python -m emlib sweep` writes). A relative `results/...`
    found nowhere there is looked up in the repository emlib runs from, or in the copy of
    the study that a pip install carries (`emlib.paths.repository_path`)."""
    results_dir = Path(results_dir)
    candidates = [results_dir] if results_dir.is_absolute() else [base / results_dir for base in [Path.cwd(), *Path.cwd().parents[:2]]]
    if not results_dir.is_absolute() and not any(c.is_dir() for c in candidates):
        candidates.append(repository_path(results_dir))
    folders = []
    for folder in candidates:
        if folder.is_dir() and folder.resolve() not in folders:
            folders.append(folder.resolve())
    return folders


def load_our_results(results_dir="runs") -> tuple:
    """All results rows our runs wrote under `results_dir` (see `emlib.results.results_folders`), parsed and deduplicated.

    Reads every `**/results.csv` plus the sweep's aggregates
    `results_segmentation.csv` / `results_restoration.csv`; a row present in
    several files counts once. Returns (segmentation_rows, restoration_rows).
    """
    paths = sorted({path for folder in results_folders(results_dir)
                    for path in glob.glob(os.path.join(folder, "**", "results*.csv"), recursive=True)})
    segmentation, restoration, seen = [], [], set()
    for path in paths:
        for row in read_rows(path):
            key = tuple(sorted(row.items()))
            if key in seen:
                continue
            seen.add(key)
            if "dice_percent" in row:
                segmentation.append(parse_row(row))
            elif "l1" in row:
                restoration.append(parse_row(row))
    return segmentation, restoration
