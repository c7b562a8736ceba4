"""Datasets by name: where a run's `data_root` points, and which class reads it (the facts: emlib.data.registry).

    pretraining   any folder of EM images (ImageFolder), used as given: never narrowed
                  to a sub-folder, so a root of several sources (cellular_em/: mussel,
                  cremi, isbi, cem500k) is read whole; None = the synthetic CEM500K stand-in
    segmentation  the paper's Au sets (AU_DATASETS, HDF5), the real nanoparticle sets
                  (NANOPARTICLE_DATASETS: msa_segtrack, emps) and "folder" (a user's own
                  images/ + masks/ folder, see emlib.data.segmentation_folder)
    restoration   TEMImageNet

A named dataset's folder is `data_root/<name>` when that exists, else `data_root`
itself (`locate`); data_root None is the synthetic set, written on first use. Each
resolution prints one line saying which folder is used and whether it holds
synthetic or real data.
"""
import os
from pathlib import Path

from emlib.data.au import AU_DATASETS, AuSegmentation
from emlib.data.registry import DATASETS
from emlib.data.segmentation_folder import NANOPARTICLE_DATASETS, SegmentationFolder
from emlib.data.synthetic import ensure_synthetic, is_synthetic
from emlib.data.temimagenet import TEMImageNet

USER_FOLDER = "folder"
SEGMENTATION_DATASETS = (*AU_DATASETS, *NANOPARTICLE_DATASETS, USER_FOLDER)
RESTORATION_DATASET = "TEMImageNet"
# The sub-folder of a data root (and of the synthetic set) that holds each dataset.
FOLDER_NAMES = {d.name: d.folder for d in DATASETS.values() if d.task != "pretraining"}


def shown_path(path) -> str:
    """A data folder as printed: relative to the working directory (the repository, or a notebook's
    folder in it) when it is at most two levels up, so that logs and the built book do not carry
    the absolute paths of the machine they ran on; else as given."""
    relative = os.path.relpath(Path(path).resolve(), Path.cwd().resolve())
    return relative if not relative.startswith(os.path.join(os.pardir, os.pardir, os.pardir)) else str(path)


def check_data_root(data_root) -> Path | None:
    """data_root as a Path (None stays None: the synthetic set); FileNotFoundError when
    the folder does not exist. Runs call it when they start; configs never do."""
    if data_root is None:
        return None
    root = Path(data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"data_root folder not found: {root}")
    return root


def locate(data_root, name: str, verbose: bool = False):
    """(folder of dataset folder `name`, "synthetic" | "real").

    `name` is a sub-folder path ("cem500k", "au", "nanoparticles/emps", ...). data_root
    None means the synthetic set (written on first use); a root that holds `name`
    (or its last component) resolves to it, any other root is the dataset's folder itself.
    """
    root = Path(ensure_synthetic()) if data_root is None else check_data_root(data_root)
    candidates = [root / name, root / Path(name).name]  # data/real/nanoparticles/emps or nanoparticles/ + emps
    folder = next((c for c in candidates if c.is_dir()), root)
    source = "synthetic" if is_synthetic(folder) else "real"
    if verbose:
        print(f"data: {shown_path(folder)} ({source})")
    return folder, source


def pretraining_folder(data_root, verbose: bool = True):
    """(folder of images to pretrain on, source): data_root as given (searched recursively), or the synthetic CEM500K."""
    if data_root is None:
        return locate(None, "cem500k", verbose)
    root = check_data_root(data_root)
    source = "synthetic" if is_synthetic(root) else "real"
    if verbose:
        print(f"pretraining data: every image under {shown_path(root)} ({source})")
    return root, source


def dataset_folder(dataset: str, data_root, verbose: bool = True):
    """(folder, source) of a fine-tuning dataset name."""
    if dataset == USER_FOLDER:
        if data_root is None:
            raise ValueError("dataset='folder' needs data_root: a folder with images/ and masks/ (see emlib.data.segmentation_folder)")
        return locate(data_root, ".", verbose)
    if dataset not in FOLDER_NAMES:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {[*SEGMENTATION_DATASETS, RESTORATION_DATASET]}")
    return locate(data_root, FOLDER_NAMES[dataset], verbose)


def segmentation_dataset(dataset: str, folder, split: str, seed: int = 0, label_fraction: float = 1.0, masks_dir=None,
                         downsample: int = 1):
    """One split of a segmentation dataset by name: whole tiles or images, (image, mask) items with `sources`.
    `masks_dir` (dataset "folder" only): `folder` holds the images and `masks_dir` their masks.
    `downsample`: images and masks at 1/n of their size per side (image folders; the Au tiles are the paper's)."""
    if dataset in AU_DATASETS:
        if downsample != 1:
            raise ValueError(f"downsample={downsample!r}: the Au datasets are read as the paper's 512 px tiles; "
                             "downsample is for image folders (msa_segtrack, emps, folder)")
        return AuSegmentation(folder, dataset, split=split, seed=seed, label_fraction=label_fraction)
    options = NANOPARTICLE_DATASETS.get(dataset, {})
    if dataset != USER_FOLDER and not options:
        raise ValueError(f"{dataset!r} is not a segmentation dataset; choose one of {list(SEGMENTATION_DATASETS)}")
    return SegmentationFolder(folder, masks_dir, split=split, seed=seed, label_fraction=label_fraction,
                              downsample=downsample, **options)


def restoration_dataset(task: str, folder, split: str, seed: int = 0):
    """One split of TEMImageNet for a restoration task."""
    return TEMImageNet(folder, task, split=split, seed=seed)

