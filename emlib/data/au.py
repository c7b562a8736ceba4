"""Au nanoparticle HRTEM segmentation: the Sytwu (2022) and Groschner (2021) sets.

On disk (as the records publish them; `emlib.data.download` fetches them):
- Sytwu, Zenodo 6419024: `<tag>_Images.h5` (dataset `images`, raw counts (N, H, W))
  and `<tag>_Labels.h5` (dataset `labels`, binary (N, H, W)), one pair per tag.
- Groschner, Zenodo 3755011: `Au_Bal_MedFilt_cutimages_20190726.h5` (`images`,
  (N, 512, 512, 1), median filtered) and `Au_Bal_unFilt_cutimages_20190423_maps.h5`
  (`maps`, one-hot (N, 512, 512, 2); channel 1 = particle).

Sytwu's preprocessing (ScottLabUCB/HRTEM-Receptive-Field, preprocessing_routines.py),
as public functions: x-ray spike removal, per-image standardisation, 512 x 512
tiles, dropping tiles with <= 400 particle pixels. The Groschner images are
already 512 x 512 and filtered: they are only standardised, and all are kept.

Split: a seeded 60/20/20 shuffle of the source images (micrographs), in the
paper's proportions (Table 1, `emlib/paper_tables/dataset_splits.csv`), made
before tiling as Sytwu et al. do: all tiles of one micrograph land in one split (`sources` names the
micrograph of each tile). Items are whole 512 x 512 tiles in every split;
fine-tuning crops and augments the train tiles (`emlib.data.augment`). All kept
tiles of the requested split are held in memory (float32 images, uint8 masks):
about 1 MiB per tile.
"""
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from emlib.data.images import standardize
from emlib.data.registry import read_by
from emlib.data.subsets import check_fraction, labelled

AU_DATASETS = read_by("au")  # name -> the HDF5 files and spike threshold (emlib.data.registry)
SPLIT_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


# ----------------------------------------------------------------------------- preprocessing


def remove_xray_spikes(image, threshold, passes=2):
    """Replace pixels brighter than median + threshold by the mean of their valid neighbours.

    Follows Sytwu's `xray_correct_threshold`: negative values are set to 0, and
    two passes are made. Vectorised: each spike gets the mean of its 8 neighbours
    that are not spikes themselves; spikes on the border (and spikes with no
    valid neighbour) get the image mean. Returns a new float32 array.
    """
    image = np.clip(np.asarray(image, dtype=np.float32), 0, None)
    if image.ndim != 2:
        raise ValueError(f"remove_xray_spikes expects a 2-D image, got shape {image.shape}")
    for _ in range(passes):
        spikes = image > np.median(image) + threshold
        if not spikes.any():
            break
        good = np.pad(~spikes, 1).astype(np.float32)
        values = np.pad(image, 1) * good
        neighbour_sum = sum(np.roll(np.roll(values, dy, 0), dx, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        neighbour_count = sum(np.roll(np.roll(good, dy, 0), dx, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
        neighbour_sum, neighbour_count = neighbour_sum[1:-1, 1:-1], neighbour_count[1:-1, 1:-1]
        replacement = np.divide(neighbour_sum, neighbour_count, out=np.zeros_like(image), where=neighbour_count > 0)
        border = np.zeros_like(spikes)
        border[[0, -1], :] = border[:, [0, -1]] = True
        use_mean = border | (neighbour_count == 0)
        replacement[use_mean] = image.mean()
        image = np.where(spikes, replacement, image)
    return image


def tile_image(image, mask, tile=512):
    """Non-overlapping tile x tile pieces of image and mask (a remainder at the edges is dropped)."""
    if image.shape != mask.shape:
        raise ValueError(f"image {image.shape} and mask {mask.shape} differ in shape")
    rows, cols = image.shape[0] // tile, image.shape[1] // tile
    if rows == 0 or cols == 0:
        raise ValueError(f"image {image.shape} is smaller than one tile of {tile}")
    corners = [(r * tile, c * tile) for r in range(rows) for c in range(cols)]
    return [(image[y:y + tile, x:x + tile], mask[y:y + tile, x:x + tile]) for y, x in corners]


def keep_tile(mask, min_pixels=400):
    """True when the tile has more than min_pixels particle pixels (Sytwu drop near-empty tiles)."""
    return int(np.count_nonzero(mask)) > min_pixels


# ----------------------------------------------------------------------------- files


def open_h5(path, key):
    """Open an HDF5 file and return (file, dataset `key`); errors name the file and the keys found."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Au data file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"cannot read HDF5 file {path}: {err}") from err
    if key not in f:
        keys = sorted(f.keys())
        f.close()
        raise ValueError(f"{path} has no dataset {key!r}; keys found: {keys}")
    return f, f[key]


def data_files(root, dataset):
    """((images path, key), (labels path, key)) of one dataset name."""
    spec, root = AU_DATASETS[dataset], Path(root)
    if spec["source"] == "sytwu":
        return (root / f"{spec['tag']}_Images.h5", "images"), (root / f"{spec['tag']}_Labels.h5", "labels")
    return (root / spec["images_file"], "images"), (root / spec["maps_file"], "maps")


def read_masks(root, dataset):
    """All masks of a dataset as uint8 (N, H, W) in {0, 1} (Groschner: channel 1 of the one-hot maps)."""
    (images_path, images_key), (labels_path, labels_key) = data_files(root, dataset)
    f, labels = open_h5(labels_path, labels_key)
    with f:
        if AU_DATASETS[dataset]["source"] == "groschner":
            if labels.ndim != 4 or labels.shape[-1] != 2:
                raise ValueError(f"{labels_path}: 'maps' must be one-hot (N, H, W, 2), got {labels.shape}")
            masks = labels[..., 1]
        else:
            masks = labels[()]
    f, images = open_h5(images_path, images_key)
    with f:
        image_shape = images.shape[:3]
    if masks.ndim != 3 or masks.shape != image_shape:
        raise ValueError(f"{images_path} {image_shape} and {labels_path} {masks.shape} must both be (N, H, W)")
    bad = ~np.isin(masks, (0, 1))
    if bad.any():
        index = int(np.argwhere(bad.reshape(len(masks), -1).any(1))[0, 0])
        values = np.unique(masks[index])[:8].tolist()
        raise ValueError(f"{labels_path}: label {index} holds the values {values}; binary labels must be 0 or 1")
    return masks.astype(np.uint8)


def read_images(root, dataset, indices):
    """Yield (index, float32 (H, W) image as stored) for the given image indices."""
    (images_path, images_key), _ = data_files(root, dataset)
    f, images = open_h5(images_path, images_key)
    with f:
        for i in indices:
            image = (images[i][..., 0] if images.ndim == 4 else images[i]).astype(np.float32)
            if not np.isfinite(image).all():
                raise ValueError(f"{images_path}: image {i} has {int((~np.isfinite(image)).sum())} NaN or Inf pixel(s)")
            yield i, image


def split_indices(count, split, seed):
    """Indices of one split of a seeded 60/20/20 shuffle of range(count) (count >= 3; val and test get at least one)."""
    order = np.random.default_rng(seed).permutation(count)
    n_val = max(1, round(SPLIT_FRACTIONS["val"] * count))
    n_test = max(1, round(SPLIT_FRACTIONS["test"] * count))
    n_train = count - n_val - n_test
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, count)}
    start, stop = bounds[split]
    return np.sort(order[start:stop])


class AuSegmentation(Dataset):
    """Tiles of one Au dataset: (image (1, tile, tile) standardised, mask (1, tile, tile) in {0, 1}).

    root: folder with the dataset's HDF5 files. dataset: a key of AU_DATASETS.
    split: "train", "val", "test" (a split of the micrographs, see the module docstring).
    label_fraction: keep a seeded fraction of the train micrographs, in (0, 1].
    tile: tile size. seed: the split's seed.
    Attributes: images, masks (arrays of the kept tiles), sources ("<dataset>:<micrograph index>" per tile).
    """

    def __init__(self, root, dataset, split="train", seed=0, label_fraction=1.0, tile=512):
        if dataset not in AU_DATASETS:
            raise ValueError(f"dataset must be one of {list(AU_DATASETS)}, got {dataset!r}")
        if split not in SPLIT_FRACTIONS:
            raise ValueError(f"split must be one of {list(SPLIT_FRACTIONS)}, got {split!r}")
        check_fraction(label_fraction)
        self.root, self.dataset, self.split, self.tile = Path(root), dataset, split, tile
        if not self.root.is_dir():
            raise FileNotFoundError(f"Au data folder not found: {self.root}")
        self.images, self.masks, self.sources = self._load_tiles(seed, label_fraction)

    def _load_tiles(self, seed, label_fraction):
        spec = AU_DATASETS[self.dataset]
        masks = read_masks(self.root, self.dataset)
        if len(masks) < len(SPLIT_FRACTIONS):
            raise ValueError(f"{self.dataset} in {self.root} has {len(masks)} micrographs, need at least 3 to split")
        chosen = split_indices(len(masks), self.split, seed)  # micrographs, before tiling
        if self.split == "train":
            chosen = chosen[labelled(len(chosen), label_fraction, seed)]
        out_images, out_masks, sources = [], [], []
        loaded = read_images(self.root, self.dataset, chosen)
        for i, image in tqdm(loaded, total=len(chosen), desc=f"{self.dataset} {self.split}", leave=False,
                             disable=len(chosen) < 50):
            if spec["spike_threshold"] is not None:
                image = remove_xray_spikes(image, spec["spike_threshold"])
            try:
                pieces = tile_image(standardize(image), masks[i], self.tile)
            except ValueError as err:  # name the file and the image
                raise ValueError(f"{data_files(self.root, self.dataset)[0][0]}, image {i}: {err}") from None
            for image_tile, mask_tile in pieces:
                if spec["source"] == "groschner" or keep_tile(mask_tile):  # Sytwu drop near-empty tiles
                    out_images.append(image_tile)
                    out_masks.append(mask_tile)
                    sources.append(f"{self.dataset}:{i}")
        if not out_images:
            raise ValueError(f"the {self.split} micrographs of {self.dataset} in {self.root} keep no tile "
                             f"(every tile has <= 400 particle pixels)")
        return np.stack(out_images), np.stack(out_masks), sources

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        image = torch.from_numpy(np.ascontiguousarray(self.images[index], dtype=np.float32)).unsqueeze(0)
        mask = torch.from_numpy(np.ascontiguousarray(self.masks[index], dtype=np.float32)).unsqueeze(0)
        return image, mask
