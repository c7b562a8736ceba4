"""Au nanoparticle HRTEM segmentation: the Sytwu (2022) and Groschner (2021) sets.

On disk (DESIGN section 4):
- Sytwu, Zenodo 6419024: `<tag>_Images.h5` (dataset `images`, raw counts (N, H, W))
  and `<tag>_Labels.h5` (dataset `labels`, binary (N, H, W)), one pair per tag.
- Groschner, Zenodo 3755011: `Au_Bal_MedFilt_cutimages_20190726.h5` (`images`,
  (N, 512, 512, 1), median filtered) and `Au_Bal_unFilt_cutimages_20190423_maps.h5`
  (`maps`, one-hot (N, 512, 512, 2); channel 1 = particle).

Sytwu's preprocessing (ScottLabUCB/HRTEM-Receptive-Field, preprocessing_routines.py),
as public functions: x-ray spike removal, per-image standardisation, 512 x 512
tiles, dropping tiles with <= 400 particle pixels. The Groschner images are
already 512 x 512 and filtered: they are only standardised, and all are kept.

Split: a seeded 60/20/20 shuffle of the kept tiles (the paper's proportions,
`paper/dataset_splits.csv`). Train items are a random `crop` of the tile with a
random dihedral transform (Sytwu's 8-fold augmentation, drawn on the fly);
val/test items are the full tile, untransformed, so that evaluation is fixed.
All kept tiles of the requested split are held in memory (float32 images,
uint8 masks): about 1 MiB per tile.
"""
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

AU_DATASETS = {
    "Au2.2nm": dict(source="sytwu", tag="Au_2p2nm_330kx_423e", spike_threshold=1500),
    "Au5nm": dict(source="sytwu", tag="Au_5nm_330kx_423e", spike_threshold=1500),
    "Au10nm": dict(source="sytwu", tag="Au_10nm_330kx_425e", spike_threshold=1500),
    "Au20nm": dict(source="sytwu", tag="Au_20nm_87kx_16e", spike_threshold=400),
    "Au5nmV1": dict(
        source="groschner",
        images_file="Au_Bal_MedFilt_cutimages_20190726.h5",
        maps_file="Au_Bal_unFilt_cutimages_20190423_maps.h5",
        spike_threshold=None,
    ),
}
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


def standardise(image):
    """Mean 0, standard deviation 1 over the whole image (a constant image becomes 0)."""
    image = np.asarray(image, dtype=np.float32)
    std = image.std()
    return (image - image.mean()) / (std if std > 0 else 1.0)


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
    return (masks > 0.5).astype(np.uint8)


def read_images(root, dataset, indices):
    """Yield (index, float32 (H, W) image as stored) for the given image indices."""
    (images_path, images_key), _ = data_files(root, dataset)
    f, images = open_h5(images_path, images_key)
    with f:
        for i in indices:
            image = images[i]
            yield i, (image[..., 0] if image.ndim == 3 else image).astype(np.float32)


def split_indices(count, split, seed):
    """Indices of one split of a seeded 60/20/20 shuffle of range(count) (count >= 3)."""
    order = np.random.default_rng(seed).permutation(count)
    # At least one tile in each of val and test, so that tiny folders still evaluate.
    n_val = max(1, round(SPLIT_FRACTIONS["val"] * count))
    n_test = max(1, round(SPLIT_FRACTIONS["test"] * count))
    n_train = count - n_val - n_test
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, count)}
    start, stop = bounds[split]
    return np.sort(order[start:stop])


def random_dihedral_numpy(image, mask, rng):
    """The same one of the 8 flips/rotations, drawn from rng, applied to image and mask."""
    turns, flip = int(rng.integers(4)), bool(rng.integers(2))
    if flip:
        image, mask = image[:, ::-1], mask[:, ::-1]
    return np.rot90(image, turns), np.rot90(mask, turns)


class AuSegmentation(Dataset):
    """Tiles of one Au dataset: (image (1, h, w) standardised, mask (1, h, w) in {0, 1}).

    root: folder with the dataset's HDF5 files. dataset: a key of AU_DATASETS.
    split: "train", "val", "test". crop: train crop size (val/test return the full
    tile). augment: a random dihedral transform of each train item (default True;
    val/test items are never transformed).
    label_fraction: keep a seeded fraction of the train tiles, in (0, 1].
    tile: tile size. seed: the split's seed.
    """

    def __init__(self, root, dataset, split="train", crop=448, augment=None, seed=0, label_fraction=1.0, tile=512):
        if dataset not in AU_DATASETS:
            raise ValueError(f"dataset must be one of {list(AU_DATASETS)}, got {dataset!r}")
        if split not in SPLIT_FRACTIONS:
            raise ValueError(f"split must be one of {list(SPLIT_FRACTIONS)}, got {split!r}")
        if not 0.0 < label_fraction <= 1.0:
            raise ValueError(f"label_fraction must be in (0, 1], got {label_fraction}")
        if crop is not None and not 0 < crop <= tile:
            raise ValueError(f"crop must be in (0, tile={tile}], got {crop}")
        self.root, self.dataset, self.split, self.crop, self.tile = Path(root), dataset, split, crop, tile
        if not self.root.is_dir():
            raise FileNotFoundError(f"Au data folder not found: {self.root}")
        self.augment = split == "train" and (augment is None or bool(augment))
        self.images, self.masks = self._load_tiles(seed, label_fraction)

    def _load_tiles(self, seed, label_fraction):
        spec = AU_DATASETS[self.dataset]
        masks = read_masks(self.root, self.dataset)
        # The split is over kept tiles; find them from the masks alone first.
        tiles = []  # (image index, tile index)
        for i, mask in enumerate(masks):
            for t, (_, mask_tile) in enumerate(tile_image(mask, mask, self.tile)):
                if spec["source"] == "groschner" or keep_tile(mask_tile):
                    tiles.append((i, t))
        if len(tiles) < len(SPLIT_FRACTIONS):
            raise ValueError(f"{self.dataset} in {self.root} has {len(tiles)} usable tiles, need at least 3")
        chosen = [tiles[k] for k in split_indices(len(tiles), self.split, seed)]
        if self.split == "train" and label_fraction < 1.0:
            keep = max(1, round(label_fraction * len(chosen)))
            chosen = [chosen[k] for k in np.sort(np.random.default_rng(seed + 1).permutation(len(chosen))[:keep])]
        wanted = {}
        for i, t in chosen:
            wanted.setdefault(i, []).append(t)
        out_images, out_masks = [], []
        loaded = read_images(self.root, self.dataset, sorted(wanted))
        for i, image in tqdm(loaded, total=len(wanted), desc=f"{self.dataset} {self.split}", leave=False,
                             disable=len(wanted) < 50):
            if spec["spike_threshold"] is not None:
                image = remove_xray_spikes(image, spec["spike_threshold"])
            pieces = tile_image(standardise(image), masks[i], self.tile)
            for t in wanted[i]:
                out_images.append(pieces[t][0])
                out_masks.append(pieces[t][1])
        return np.stack(out_images), np.stack(out_masks)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        image, mask = self.images[index], self.masks[index]
        if self.split == "train":
            rng = np.random.default_rng(int(torch.randint(0, 2 ** 62, (1,))))  # follows torch's seed
            if self.crop is not None and self.crop < self.tile:
                top, left = rng.integers(0, self.tile - self.crop + 1, size=2)
                image = image[top:top + self.crop, left:left + self.crop]
                mask = mask[top:top + self.crop, left:left + self.crop]
            if self.augment:
                image, mask = random_dihedral_numpy(image, mask, rng)
        image = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).unsqueeze(0)
        mask = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)).unsqueeze(0)
        return image, mask
