"""TEMImageNet (xinhuolin/TEM-ImageNet-v1.3): simulated ADF-STEM images and labels.

On disk: one flat folder per label type, one 8-bit `NNNNN.png` (256 x 256) per
sample, the same ID across folders. A restoration task reads the noisy `image/`
folder as input and one label folder as target (`TEMIMAGENET_TASKS`; the
super-resolution mapping is inferred from the folder names).

Split: a seeded shuffle of the IDs present in both folders, in the proportions
of the paper's Table 1 (`emlib.paper.table1`): on the full release (14364 samples)
that gives exactly its counts, on a smaller folder the same fractions (rounded,
at least one sample each for val and test).
"""
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from emlib import paper

TEMIMAGENET_TASKS = {
    "denoising": ("image", "noNoise"),
    "noise_background_removal": ("image", "noBackgroundnoNoise"),
    "super_resolution": ("image", "noNoiseNoBackgroundSuperresolution"),
}
TASK_ALIASES = {"background_removal": "noise_background_removal"}  # the one table of task aliases
SPLITS = ("train", "val", "test")


def resolve_task(task):
    """Canonical task name (accepts the alias `background_removal`)."""
    task = TASK_ALIASES.get(task, task)
    if task not in TEMIMAGENET_TASKS:
        raise ValueError(f"task must be one of {list(TEMIMAGENET_TASKS)} (or {list(TASK_ALIASES)}), got {task!r}")
    return task


def png_ids(folder):
    """Sample IDs (file stems) of the *.png files in a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"TEMImageNet folder not found: {folder}")
    return {p.stem for p in folder.glob("*.png")}


def split_counts(total):
    """(train, val, test) sizes for `total` samples in Table 1 proportions."""
    table = paper.table1()["TEMImageNet"]
    paper_total = table["train"][0] + table["validation"] + table["test"]
    n_val = max(1, round(total * table["validation"] / paper_total))  # at least 1 each for tiny folders
    n_test = max(1, round(total * table["test"] / paper_total))
    return total - n_val - n_test, n_val, n_test


def split_ids(ids, split, seed):
    """One split of a seeded shuffle of the sorted IDs."""
    ids = sorted(ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    n_train, n_val, _ = split_counts(len(ids))
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, len(ids))}
    start, stop = bounds[split]
    return [ids[i] for i in sorted(order[start:stop])]


def read_png_unit(path):
    """An 8-bit grayscale PNG as float32 (H, W) in [0, 1]; unreadable files raise ValueError naming them."""
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("L") if image.mode not in ("L", "I;16") else image)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read PNG {path}: {err}") from err
    scale = 65535.0 if array.dtype == np.uint16 else 255.0
    return array.astype(np.float32) / scale


class TEMImageNet(Dataset):
    """(input, target) float32 tensors (1, 256, 256) in [0, 1] for one restoration task.

    root: the release folder (holding `image/`, `noNoise/`, ...). task: a key of
    TEMIMAGENET_TASKS or an alias. split: "train", "val", "test". seed: the split's seed.
    Only IDs present in both the input and the target folder are used.
    Attributes: ids, sources (the sample id of each item; splits are by sample id).
    """

    def __init__(self, root, task, split="train", seed=0):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        self.root, self.task, self.split = Path(root), resolve_task(task), split
        input_name, target_name = TEMIMAGENET_TASKS[self.task]
        self.input_dir, self.target_dir = self.root / input_name, self.root / target_name
        ids = png_ids(self.input_dir) & png_ids(self.target_dir)
        if len(ids) < 3:
            raise ValueError(f"{self.input_dir} and {self.target_dir} share {len(ids)} IDs, need at least 3")
        self.ids = split_ids(ids, split, seed)
        self.sources = list(self.ids)  # one sample id per item: a sample never straddles two splits

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, index):
        name = f"{self.ids[index]}.png"
        input_path, target_path = self.input_dir / name, self.target_dir / name
        inputs, target = read_png_unit(input_path), read_png_unit(target_path)
        if inputs.shape != target.shape:
            raise ValueError(f"size mismatch: {input_path} is {inputs.shape}, {target_path} is {target.shape}")
        return torch.from_numpy(inputs).unsqueeze(0), torch.from_numpy(target).unsqueeze(0)
