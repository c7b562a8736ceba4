"""Segmentation data as users have it: a folder of images and a folder of masks.

Layouts found under `root` (checked in this order):

    root/train/<images> + root/train/<masks>, root/test/... [, root/val/...]   published split folders (msa_segtrack)
    root/<images> + root/<masks> + root/train.csv + root/test.csv [+ val.csv]  published split lists (EMPS)
    root/<images> + root/<masks>                                               no published split

`<images>` is the first of IMAGE_FOLDERS present (images/, image/) and `<masks>` the
first of MASK_FOLDERS (masks/, mask/, labels/, label/, ground_truth/, gt/, segmaps/).
Two folders can also be named outright, `SegmentationFolder(images_dir, masks_dir,
split=...)` (`--images DIR --masks DIR`): their pairs are split 60/20/20. A split list holds one image id
(file stem) per line. Validation is carved from the train side (a seeded
VAL_FRACTION of its images) unless a val split is published; without any
published split the images are split 60/20/20. Every split is a split of source
images: an image and all crops of it stay in one split (`sources`). Where images
were cut from larger sources (EMPS: crops of published figures), an optional
`root/sources.csv` names each image's source (first column the image file, the
other columns its source, e.g. doi and figure): splits emlib carves keep the
images of one source together, so validation holds no crop of a training figure.

Pairing: by file stem; where stems differ only by a word prefix (msa's `image_N`
and `label_N`), by the stem without that prefix; or by sorted order when
`pair_by="index"`. Files left unpaired are an error that lists them.

Masks are read as binary: {0, 1}, {0, 255} (any subset), colour masks with
equal channels, and instance maps (foreground = id > 0). `masks="auto"` treats
16-bit masks as instance maps and 8-bit masks as binary; any other value set in
a binary mask is a ValueError naming the file.

Items: images are standardised per image (mean 0, std 1, as Sytwu's Au data)
from [0, 1] intensities (`emlib.data.images`). Every split returns whole images,
(1, H, W) each; fine-tuning crops the train items (`emlib.data.augment`) and
scores whole val/test images, so every test pixel counts.
"""
import csv
import re
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from emlib.data.images import (IMAGE_SUFFIXES, DecodedCache, downsample, downsample_mask, find_images, read_raw,
                               read_unit, standardize)
from emlib.data.registry import read_by
from emlib.data.subsets import check_fraction, labelled

SPLITS = ("train", "val", "test")
IMAGE_FOLDERS = ("images", "image")
MASK_FOLDERS = ("masks", "mask", "labels", "label", "ground_truth", "gt", "segmaps")
MASK_KINDS = ("auto", "binary", "instances")
PAIRINGS = ("stem", "index")
VAL_FRACTION, NO_SPLIT_FRACTIONS = 0.2, (0.6, 0.2, 0.2)
SOURCES_FILE = "sources.csv"
WORD_PREFIX = re.compile(r"^[A-Za-z]+[_-]")

# The real nanoparticle sets, by name (see emlib.data.download for their sources).
NANOPARTICLE_DATASETS = read_by("segmentation_folder")  # name -> the mask kind (emlib.data.registry)


# ----------------------------------------------------------------------------- masks


def to_binary_mask(raw: np.ndarray, kind: str, path) -> np.ndarray:
    """uint8 {0, 1} mask from a mask file's pixels (see the module docstring for the rule)."""
    if kind == "auto":
        kind = "instances" if raw.dtype.itemsize > 1 else "binary"
    if kind == "instances":
        return (raw > 0).astype(np.uint8)
    values = np.unique(raw)
    if not (set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}):
        shown = values[:8].tolist()
        raise ValueError(f"mask {path} is declared binary but holds the values {shown}{' ...' if len(values) > 8 else ''};"
                         " expected {0, 1} or {0, 255} (use masks='instances' for instance maps)")
    return (raw > 0).astype(np.uint8)


# ----------------------------------------------------------------------------- pairing


def pair_files(images: list, masks: list, by: str = "stem", where="") -> list:
    """[(image file, mask file)] by stem (or stem without a word prefix), or by sorted index."""
    if by not in PAIRINGS:
        raise ValueError(f"pair_by must be one of {PAIRINGS}, got {by!r}")
    if by == "index":
        if len(images) != len(masks):
            raise ValueError(f"{where}: {len(images)} images but {len(masks)} masks; pairing by index needs equal counts")
        return list(zip(sorted(images), sorted(masks)))
    for files, what in ((images, "images"), (masks, "masks")):
        shared = _shared_stems(files)
        if shared:
            raise ValueError(f"{where}: {what} share a file stem, so they cannot be paired or listed by id: "
                             f"{shared[:5]}; keep one file per stem")
    for key in (_stem, lambda f: WORD_PREFIX.sub("", _stem(f))):
        image_keys, mask_keys = _keyed(images, key), _keyed(masks, key)
        if image_keys is not None and mask_keys is not None and image_keys.keys() == mask_keys.keys():
            return [(image_keys[k], mask_keys[k]) for k in sorted(image_keys)]
    image_keys, mask_keys = {_stem(f): f for f in images}, {_stem(f): f for f in masks}
    lonely = sorted(set(image_keys) - set(mask_keys))[:10], sorted(set(mask_keys) - set(image_keys))[:10]
    raise ValueError(f"{where}: unpaired files: images without a mask {lonely[0]}, masks without an image {lonely[1]}"
                     " (pairing is by file stem, optionally without a prefix like image_/label_; or pair_by='index')")


def _stem(relative: str) -> str:
    return Path(relative).stem


def _shared_stems(files) -> list:
    """[[file, file, ...]] of the files that share a stem (im0.png and im0.tif)."""
    by_stem = {}
    for f in files:
        by_stem.setdefault(_stem(f), []).append(f)
    return [group for group in by_stem.values() if len(group) > 1]


def _keyed(files, key) -> dict | None:
    """{key(file): file}, or None when two files share a key (such keys cannot pair)."""
    out = {key(f): f for f in files}
    return out if len(out) == len(files) else None


# ----------------------------------------------------------------------------- layout and splits


def mask_folder(folder: Path) -> Path | None:
    return next((folder / name for name in MASK_FOLDERS if (folder / name).is_dir()), None)


def image_folder(folder: Path) -> Path | None:
    return next((folder / name for name in IMAGE_FOLDERS if (folder / name).is_dir()), None)


def read_id_list(path: Path) -> list:
    """Image ids (file stems) of a split list: one per line, first column; a header line `id`/`name` is skipped."""
    with open(path, newline="") as f:
        ids = [row[0].strip() for row in csv.reader(f) if row and row[0].strip()]
    if ids and ids[0].lower() in ("id", "name", "filename", "image"):
        ids = ids[1:]
    return [Path(i).stem for i in ids]


def find_layout(root: Path, pair_by: str, masks_dir=None) -> dict:
    """{published split name: [(image path, mask path)]}; a single key "all" when nothing is published.
    With `masks_dir`, `root` is the folder of images and `masks_dir` that of their masks."""
    root = Path(root)
    if masks_dir is not None:
        return {"all": _pairs(root, Path(masks_dir), pair_by)}
    if not root.is_dir():
        raise FileNotFoundError(f"segmentation folder not found: {root}")
    split_dirs = [s for s in SPLITS if image_folder(root / s) is not None]
    if split_dirs:
        return {s: _layout_pairs(root / s, pair_by) for s in split_dirs}
    if image_folder(root) is None:
        raise FileNotFoundError(f"{root} has neither images/ (or image/) nor train/images/ (and test/images/): "
                                "not a segmentation folder (or name the two folders: --images DIR --masks DIR)")
    pairs = _layout_pairs(root, pair_by)
    lists = {s: root / f"{s}.csv" for s in SPLITS if (root / f"{s}.csv").is_file()}
    if not lists:
        return {"all": pairs}
    by_stem = {_stem(image): (image, mask) for image, mask in pairs}
    out, listed = {}, {}
    for split, path in lists.items():
        ids = read_id_list(path)
        unknown = [i for i in ids if i not in by_stem]
        if unknown:
            raise ValueError(f"{path} lists {len(unknown)} id(s) with no image/mask pair in {root}: {unknown[:10]}")
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:  # a repeat could land in train and in the validation set carved from it
            raise ValueError(f"{path} lists {len(repeated)} id(s) more than once: {repeated[:10]}")
        for other, other_ids in listed.items():
            both = sorted(set(ids) & other_ids)
            if both:
                raise ValueError(f"{len(both)} id(s) are listed in both {lists[other]} and {path}, so they would be in "
                                 f"both splits: {both[:10]}")
        listed[split] = set(ids)
        out[split] = [by_stem[i] for i in ids]
    return out


def _layout_pairs(folder: Path, pair_by: str) -> list:
    images_dir, masks_dir = image_folder(folder), mask_folder(folder)
    if masks_dir is None:
        raise FileNotFoundError(f"{folder} has {images_dir.name}/ but no mask folder (one of {MASK_FOLDERS})")
    return _pairs(images_dir, masks_dir, pair_by, where=folder)


def _pairs(images_dir: Path, masks_dir: Path, pair_by: str, where=None) -> list:
    images = find_images(images_dir, IMAGE_SUFFIXES, "image")
    masks = find_images(masks_dir, IMAGE_SUFFIXES, "mask")
    pairs = pair_files(images, masks, pair_by, where=str(where or images_dir))
    return [(images_dir / i, masks_dir / m) for i, m in pairs]


def seeded_split(items: list, fractions: tuple, seed: int, source_of=None) -> list:
    """`items` cut into len(fractions) disjoint seeded parts; every part after the first gets at least one.

    With `source_of(item)`, whole sources are dealt to the parts after the first until each
    holds its share (so it may exceed it by part of one source); the first part gets the rest."""
    if source_of is None:
        order = np.random.default_rng(seed).permutation(len(items))
        sizes = [max(1, round(f * len(items))) for f in fractions[1:]]
        first = len(items) - sum(sizes)
        if first < 1:
            raise ValueError(f"{len(items)} images cannot be split into {len(fractions)} non-empty parts")
        bounds = np.cumsum([0, first, *sizes])
        return [[items[i] for i in sorted(order[a:b])] for a, b in zip(bounds[:-1], bounds[1:])]
    sources = sorted({source_of(item) for item in items})
    members = {source: [i for i, item in enumerate(items) if source_of(item) == source] for source in sources}
    targets = [max(1, round(f * len(items))) for f in fractions[1:]]
    parts = [[] for _ in fractions]
    for index in np.random.default_rng(seed).permutation(len(sources)):
        part = next((k + 1 for k, target in enumerate(targets) if len(parts[k + 1]) < target), 0)
        parts[part] += members[sources[index]]
    if any(not part for part in parts):
        raise ValueError(f"{len(items)} images from {len(sources)} sources cannot be split into {len(fractions)} "
                         "non-empty parts by source")
    return [[items[i] for i in sorted(part)] for part in parts]


def read_sources(root: Path):
    """{image file name: its source} from root/sources.csv (see the module docstring), or None without one."""
    path = Path(root) / SOURCES_FILE
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        rows = [row for row in csv.reader(f) if row]
    if len(rows) < 2 or len(rows[0]) < 2:
        raise ValueError(f"{path}: expected a header and rows of (image file, source columns...)")
    return {Path(row[0]).name: "/".join(row[1:]) for row in rows[1:]}


def split_pairs(layout: dict, split: str, seed: int, sources: dict | None = None) -> list:
    """The pairs of one split: published where available, else seeded by source image (and by
    the `sources` of the images, where the folder names them)."""
    source_of = None
    if sources is not None:
        def source_of(pair):
            return sources.get(pair[0].name, pair[0].name)
    if "all" in layout:
        return dict(zip(SPLITS, seeded_split(layout["all"], NO_SPLIT_FRACTIONS, seed, source_of)))[split]
    if "train" not in layout or "test" not in layout:
        raise ValueError(f"a published split needs train and test, found {sorted(layout)}")
    if "val" in layout:
        return layout[split]
    if split == "test":
        return layout["test"]
    train, val = seeded_split(layout["train"], (1 - VAL_FRACTION, VAL_FRACTION), seed, source_of)
    return train if split == "train" else val


# ----------------------------------------------------------------------------- the dataset


def check_downsample(factor) -> None:
    """ValueError unless `factor` is a whole number >= 1."""
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"downsample must be a whole number >= 1 (1: images as they are), got {factor!r}")


class SegmentationFolder(Dataset):
    """(image (1, H, W) standardised, mask (1, H, W) in {0, 1}) pairs of one split of a segmentation folder.

    root: the folder (see the module docstring for the layouts), or the folder of
    images when `masks_dir` names the folder of masks. split: "train", "val" or "test". masks: "auto", "binary" or "instances". pair_by: "stem" or
    "index". seed: the seeded parts of the split (validation carve-out, label subset).
    label_fraction: keep a seeded fraction of the train images, in (0, 1].
    downsample: read images and masks at 1/n of their size per side (`emlib.data.images.downsample`).
    Attributes: pairs [(image path, mask path)], sources (the image file of each item).
    """

    def __init__(self, root, masks_dir=None, split="train", masks="auto", pair_by="stem", seed=0, label_fraction=1.0,
                 downsample=1):
        if masks_dir in SPLITS:  # SegmentationFolder(root, "test"): the split in second place, as before masks_dir
            masks_dir, split = None, masks_dir
        if masks_dir is not None and not Path(masks_dir).is_dir():
            raise FileNotFoundError(f"mask folder not found: {masks_dir}")
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if masks not in MASK_KINDS:
            raise ValueError(f"masks must be one of {MASK_KINDS}, got {masks!r}")
        check_fraction(label_fraction)
        check_downsample(downsample)
        self.root, self.split, self.masks, self.downsample = Path(root), split, masks, downsample
        self.pairs = split_pairs(find_layout(self.root, pair_by, masks_dir), split, seed, read_sources(self.root))
        if split == "train":
            self.pairs = [self.pairs[i] for i in labelled(len(self.pairs), label_fraction, seed)]
        self.sources = [str(image.relative_to(self.root)) for image, _ in self.pairs]
        self.cache = DecodedCache()

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        image_path, mask_path = self.pairs[index]
        image, mask = self.cache.get(index, lambda: self._read(image_path, mask_path))
        return torch.from_numpy(image.copy()).unsqueeze(0), torch.from_numpy(mask.astype(np.float32)).unsqueeze(0)

    def _read(self, image_path, mask_path) -> tuple:
        """(the standardised image, its binary mask as uint8), checked to be the same size."""
        image = read_unit(image_path)
        mask = to_binary_mask(read_raw(mask_path), self.masks, mask_path)
        if image.shape != mask.shape:
            raise ValueError(f"image {image_path} is {image.shape} but its mask {mask_path} is {mask.shape}")
        return standardize(downsample(image, self.downsample)), downsample_mask(mask, self.downsample)
