"""Any folder of 2-D grayscale EM images, unlabeled, for pretraining (CEM500K is one such folder).

The folder is searched recursively for TIFF, PNG and BMP files (`emlib.data.images`
reads them and maps intensities to [0, 1]). Which file goes to train, val and
test is decided once, by a seeded shuffle of the sorted file list, and written
to a JSON manifest that later runs reuse, so that every model of a sweep sees the
same images. The train order of the manifest is itself shuffled, and `subset=n`
takes its first n files: a 50k subset is contained in the 100k one.

The paper keeps 5000 images each for validation and test (Table 1). A smaller
folder cannot spare them; there val and test each get 10 % of the files, at least
one (`eval_split_size`). Splits are by source image: patches cut from one source
image never straddle two splits, since neighbouring patches of one micrograph would
make validation a copy of training. The source of each file comes from (in order):

    root/index.csv    a row per image file: its `patch` (relative path) and its
                      `source_file` (or `source`) column: the image it was cut from
    sub-folders       the file's folder, when the files sit in at least MIN_FOLDER_GROUPS
                      folders (CEM500K's layout: one folder per source volume)
    the file itself   otherwise

The manifest records which rule it used (`split_by`). Whole sources are dealt to
val, then test, until each holds at least its share of files, so their sizes may
exceed it by part of one source. Every crop of one file, and every page of a
multi-page TIFF (a stack: each page is one 2-D image), stays in one split (`sources`
names the file of each item). The manifest records the stacks' page counts (`pages`).

Manifests are never written into the data folder (data folders are often
read-only or shared): by default they go to the user cache
(`$XDG_CACHE_HOME/emlib/manifests`, keyed by the folder's absolute path); runs put
theirs in the run folder.

Images larger than `image_size` give a random crop (train) or the centre crop
(val, test); smaller sides are mirror-padded. With `tiles_per_image=True` an
image contributes as many items per epoch as it holds non-overlapping tiles of
`image_size` (a 2048 x 2048 SEM tile at 224 px: 81 items), so big images are not
wasted: train items are still random crops, val/test items are the tiles.
"""
import csv
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from emlib import atomic, paper
from emlib.data.images import IMAGE_SUFFIXES, crop, image_shape, page_count, pad_to_at_least, read_unit, tile_corners, find_images

SPLITS = ("train", "val", "test")
MANIFEST_VERSION = 3
INDEX_FILE, SOURCE_COLUMNS = "index.csv", ("source_file", "source")
MIN_FOLDER_GROUPS = 10


def eval_split_size(n_files):
    """Size of each of val and test: CEM500K's in the paper's Table 1 (5000) or 10 % of a
    smaller folder, at least 1."""
    return min(paper.table1()["CEM500K"]["validation"], max(1, n_files // 10))


def source_groups(root, files) -> tuple:
    """({file: the source it was cut from}, the rule that said so): see the module docstring."""
    index = Path(root) / INDEX_FILE if root is not None else None
    if index is not None and index.is_file():
        with open(index, newline="") as f:
            rows = list(csv.DictReader(f))
        column = next((c for c in SOURCE_COLUMNS if rows and c in rows[0]), None)
        if column is None or "patch" not in rows[0]:
            raise ValueError(f"{index} needs a 'patch' column and one of {SOURCE_COLUMNS}, found {list(rows[0]) if rows else []}")
        listed = {row["patch"]: row[column] for row in rows}
        return {f: listed.get(f, f) for f in files}, f"{INDEX_FILE}:{column}"
    folders = {f: str(Path(f).parent) for f in files}
    if len(set(folders.values())) >= MIN_FOLDER_GROUPS:
        return folders, "sub-folder"
    return {f: f for f in files}, "file"


def make_manifest(files, seed, root=None):
    """Seeded disjoint val / test / train lists (train in shuffled order) from a sorted file list,
    dealing whole sources (`source_groups`) to val and test."""
    if len(files) < 3:
        raise ValueError(f"{root or 'the image folder'} needs at least 3 images for train/val/test, found {len(files)}")
    group_of, split_by = source_groups(root, files)
    groups = sorted(set(group_of.values()))
    if len(groups) < 3:
        raise ValueError(f"{root or 'the image folder'}: its {len(files)} images come from {len(groups)} source(s) "
                         f"({split_by}); train/val/test by source needs at least 3")
    rng = np.random.default_rng(seed)
    members = {g: [] for g in groups}
    for f in files:
        members[group_of[f]].append(f)
    n_eval = eval_split_size(len(files))
    parts = {"val": [], "test": [], "train": []}
    for index in rng.permutation(len(groups)):
        name = "val" if len(parts["val"]) < n_eval else "test" if len(parts["test"]) < n_eval else "train"
        parts[name] += members[groups[index]]
    if not parts["train"]:
        raise ValueError(f"{root or 'the image folder'}: no source left for training after val and test ({split_by})")
    train = [parts["train"][i] for i in rng.permutation(len(parts["train"]))]
    return {
        "version": MANIFEST_VERSION,
        "seed": seed,
        "n_files": len(files),
        "files_sha256": files_digest(files),
        "split_by": split_by,
        "val": parts["val"],
        "test": parts["test"],
        "train": train,
        "pages": stack_pages(root, files) if root is not None else {},
    }


def stack_pages(root, files) -> dict:
    """{file: page count} of the multi-page TIFFs (stacks) among `files` under root."""
    counts = {f: page_count(Path(root) / f) for f in files if (Path(root) / f).is_file()}
    return {f: n for f, n in counts.items() if n > 1}


def files_digest(files) -> str:
    """sha256 of a sorted file list: the folder's fingerprint in a manifest."""
    return hashlib.sha256("\n".join(files).encode()).hexdigest()


def cache_dir() -> Path:
    """emlib's folder in the user cache: $XDG_CACHE_HOME/emlib, else ~/.cache/emlib."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "emlib"


def default_manifest_path(root, seed, kind="images"):
    """The manifest of (root, seed) in the user cache, keyed by root's absolute path."""
    key = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:16]
    return cache_dir() / "manifests" / key / f"{kind}_manifest_v{MANIFEST_VERSION}_seed{seed}.json"


def load_or_create_manifest(root, seed, manifest_path, suffixes=IMAGE_SUFFIXES):
    """Return (manifest dict, sha256 of its bytes); creates it on first use.

    The folder is scanned every time (about a second per 100k files): an existing
    manifest must have the same seed and list the same files, else the folder
    has changed since the split was made and a ValueError says so.
    """
    path = Path(manifest_path)
    if Path(root).resolve() in path.resolve().parents:
        raise ValueError(f"manifest_path {path} is inside the data folder {root}; emlib never writes into data folders")
    files = find_images(root, suffixes)
    if not path.exists():
        atomic.write_json(path, make_manifest(files, seed, root), indent=1, sort_keys=False)
    raw = path.read_bytes()
    try:
        manifest = json.loads(raw)
        missing = [k for k in ("seed",) + SPLITS if k not in manifest]
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError):
        manifest, missing = None, ["valid JSON"]
    if missing:
        raise ValueError(f"manifest {path} is not an image-folder manifest (missing {missing}); delete it to rebuild")
    if manifest["seed"] != seed:
        raise ValueError(f"manifest {path} was made with seed {manifest['seed']}, not seed={seed}")
    if manifest.get("files_sha256", files_digest(files)) != files_digest(files):
        raise ValueError(f"the folder {root} has changed since its split {path} was made ({manifest.get('n_files')} files "
                         f"then, {len(files)} now); use a new run folder (or delete the manifest) to split it anew")
    return manifest, hashlib.sha256(raw).hexdigest()


class ImageFolder(Dataset):
    """Clean images of a folder as float32 tensors (1, image_size, image_size) in [0, 1].

    root: folder searched recursively for images. split: "train", "val" or "test".
    subset: number of train images (the first n of the manifest's shuffled train
    list; None = all). seed: the split's seed. manifest_path: where the split is
    stored (default: the user cache, see `default_manifest_path`).
    tiles_per_image: one item per non-overlapping image_size tile of each image.
    Attributes: files (relative paths, one per file), sources (the file of each
    item), manifest_path, manifest_hash (sha256 of the manifest's bytes).
    """

    suffixes = IMAGE_SUFFIXES
    kind = "images"

    def __init__(self, root, split="train", subset=None, image_size=224, seed=0, manifest_path=None, tiles_per_image=False):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if int(image_size) < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.root, self.split, self.image_size = Path(root), split, int(image_size)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.kind} folder not found: {self.root}")
        self.manifest_path = Path(manifest_path) if manifest_path else default_manifest_path(root, seed, self.kind)
        manifest, self.manifest_hash = load_or_create_manifest(root, seed, self.manifest_path, self.suffixes)
        files = manifest[split]
        if subset is not None:
            if split != "train":
                raise ValueError(f"subset applies to the train split only, got split={split!r}")
            if not 0 < int(subset) <= len(files):
                raise ValueError(f"subset={subset} but the folder {self.root} supplies {len(files)} train images; "
                                 "to train on every image leave subset out (subset=None, --subset none)")
            files = files[: int(subset)]
        self.files = list(files)
        pages = manifest.get("pages", {})  # manifests from before stacks were read hold none
        self.items = [(f, page, None) for f in self.files
                      for page in (range(pages[f]) if f in pages else [None])]
        if tiles_per_image:
            self.items = [(f, page, corner) for f, page, _ in self.items for corner in tile_corners(*self._shape(f), self.image_size)]
        self.sources = [f for f, _, _ in self.items]

    def _shape(self, relative):
        return image_shape(self._path(relative))

    def _path(self, relative):
        path = self.root / relative
        if not path.is_file():
            raise FileNotFoundError(f"{path} is listed in the manifest {self.manifest_path} but missing")
        return path

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        relative, page, corner = self.items[index]
        image = pad_to_at_least(read_unit(self._path(relative), page), self.image_size)
        if corner is not None and self.split != "train":
            top, left = corner
            image = image[top:top + self.image_size, left:left + self.image_size]
        else:
            image = crop(image, self.image_size, random=self.split == "train")
        return torch.from_numpy(np.ascontiguousarray(image)).unsqueeze(0)
