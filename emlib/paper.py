"""The paper's results as data: its tables and the words of its claims.

The numbers are those of Kazimi, Ruzaeva and Sandfeld, "Self-Supervised Learning
in Electron Microscopy: Towards a Foundation Model for Advanced Image Analysis"
(arXiv 2402.18286, 2024), Tables 1-7, shipped in `emlib/paper_tables/*.csv` (see
the README there): each fact of the paper has that one home. Rows are plain dicts with the columns of
`emlib.results`, so `emlib.claims` summarises the paper's rows and the rows our runs write alike.
"""
import csv
from functools import cache
from pathlib import Path

from emlib.results import parse_row, read_rows

TABLES_DIR = Path(__file__).parent / "paper_tables"
PRETRAINED_TAGS = {50_000: "P50k", 100_000: "P100k", 200_000: "P200k"}  # CEM500K pretraining subset -> the paper's name
INITS = ("random", *PRETRAINED_TAGS.values())
PRETRAINED_INITS = INITS[1:]
SEGMENTATION_DATASETS = ("Au5nmV1", "Au2.2nm", "Au5nm", "Au10nm", "Au20nm")  # Tables 2-6
RESTORATION_TASKS = ("denoising", "noise_background_removal", "super_resolution")  # Table 7
TASK_ABBREVIATIONS = {"denoising": "DN", "noise_background_removal": "N&BGR", "super_resolution": "SR"}
# The rows of Tables 2-6, in the paper's order.
MODELS = ("HRNet", "U-Net_4_424", "U-Net_4_360", "U-Net_4_200", "U-Net_3_240", "U-Net_3_176",
          "U-Net_3_96", "U-Net_2_116", "U-Net_2_84", "U-Net_2_44")


# ---------------------------------------------------------------- the tables


def _load_paper_csv(name: str) -> list:
    rows = [parse_row(row) for row in read_rows(TABLES_DIR / name)]
    for row in rows:
        row.setdefault("source", "paper")
    return rows


def load_segmentation() -> list:
    """Tables 2-6: test Dice (%) per dataset, model, init and epoch (2400 rows)."""
    return _load_paper_csv("segmentation_dice.csv")


def load_restoration() -> list:
    """Table 7: test L1 of HRNet per TEMImageNet task, init and epoch (144 rows)."""
    return _load_paper_csv("temimagenet_l1.csv")


def load_splits() -> list:
    """Table 1: train / validation / test image counts per dataset.

    `train` is a tuple because CEM500K was used in three subset sizes.
    """
    with open(TABLES_DIR / "dataset_splits.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["train"] = tuple(int(n) for n in row["train"].split("|"))
        row["validation"], row["test"] = int(row["validation"]), int(row["test"])
    return rows


def table1() -> dict:
    """Table 1 by dataset name: {dataset: {"train": (n, ...), "validation": n, "test": n, "note": ...}}."""
    return {row["dataset"]: row for row in load_splits()}


@cache
def table_numbers() -> dict:
    """{dataset: the number of the paper's table of its results} (Tables 2-7)."""
    return {row["dataset"]: row["table"] for row in load_segmentation() + load_restoration()}


def train_images(dataset: str) -> int | None:
    """Table 1's train image count of a fine-tuning dataset; None for a dataset the paper does not use."""
    row = table1().get(dataset)
    return row["train"][0] if row else None


# ---------------------------------------------------------------- the claims (emlib.claims tests them)

CLAIMS = (
    "Pretraining helps every model: fine-tuned from GAN-pretrained weights, each model scores better than from random weights.",
    "Small pretrained U-Nets match or beat larger randomly initialised ones.",
    "Pretrained HRNet beats all: every pretrained HRNet beats the random HRNet and every U-Net.",
    "Training is more stable when pretrained: the curves have fewer and smaller setbacks.",
)
