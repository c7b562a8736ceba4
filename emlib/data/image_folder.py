"""Any folder of 2-D grayscale EM images, unlabeled, for pretraining (CEM500K is one such folder).

The folder is searched recursively for TIFF, PNG and BMP files (`emlib.data.images`
reads them and maps intensities to [0, 1]). Which file goes to train, val and
test is decided once, by a seeded shuffle of the sorted file list, and written
to a JSON manifest that later runs reuse, so that every model of a sweep sees the
same images. The train order of the manifest is itself shuffled, and `subset=n`
takes its first n files: a 50k subset is contained in the 100k one.

The paper keeps 5000 images each for validation and test (Table 1). A smaller
folder cannot spare them; there val and test each get 10 % of the files, at least
one (`eval_split_size`). Splits are by file: every crop of one file stays in one
split (`sources` names the file of each item).

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
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from emlib import atomic, paper
from emlib.data.images import IMAGE_SUFFIXES, crop, image_shape, pad_to_at_least, read_unit, tile_corners, find_images

SPLITS = ("train", "val", "test")
MANIFEST_VERSION = 2


def eval_split_size(n_files):
    """Size of each of val and test: CEM500K's in the paper's Table 1 (5000) or 10 % of a
    smaller folder, at least 1."""
    return min(paper.table1()["CEM500K"]["validation"], max(1, n_files // 10))


def make_manifest(files, seed, root=None):
    """Seeded disjoint val / test / train lists (train in shuffled order) from a sorted file list."""
    if len(files) < 3:
        raise ValueError(f"{root or 'the image folder'} needs at least 3 images for train/val/test, found {len(files)}")
    order = np.random.default_rng(seed).permutation(len(files))
    shuffled = [files[i] for i in order]
    n_eval = eval_split_size(len(files))
    return {
        "version": MANIFEST_VERSION,
        "seed": seed,
        "n_files": len(files),
        "files_sha256": files_digest(files),
        "val": shuffled[:n_eval],
        "test": shuffled[n_eval:2 * n_eval],
        "train": shuffled[2 * n_eval:],
    }


def files_digest(files) -> str:
    """sha256 of a sorted file list: the folder's fingerprint in a manifest."""
    return hashlib.sha256("\n".join(files).encode()).hexdigest()


def cache_dir() -> Path:
    """emlib's folder in the user cache: $XDG_CACHE_HOME/emlib, else ~/.cache/emlib."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "emlib"


def default_manifest_path(root, seed, kind="images"):
    """The manifest of (root, seed) in the user cache, keyed by root's absolute path."""
    key = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:16]
    return cache_dir() / "manifests" / key / f"{kind}_manifest_seed{seed}.json"


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
                raise ValueError(f"subset={subset} but the folder {self.root} supplies {len(files)} train images")
            files = files[: int(subset)]
        self.files = list(files)
        self.items = [(f, None) for f in self.files]
        if tiles_per_image:
            self.items = [(f, corner) for f in self.files for corner in tile_corners(*self._shape(f), self.image_size)]
        self.sources = [f for f, _ in self.items]

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
        relative, corner = self.items[index]
        image = pad_to_at_least(read_unit(self._path(relative)), self.image_size)
        if corner is not None and self.split != "train":
            top, left = corner
            image = image[top:top + self.image_size, left:left + self.image_size]
        else:
            image = crop(image, self.image_size, random=self.split == "train")
        return torch.from_numpy(np.ascontiguousarray(image)).unsqueeze(0)
