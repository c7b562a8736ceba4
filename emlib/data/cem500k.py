"""CEM500K (EMPIAR-10592): a folder of uint8 grayscale TIFF patches, unlabeled.

The paper pretrains on subsets of 50k, 100k and 200k images and keeps 5000 for
validation and 5000 for testing (Table 1). Which file goes where is decided once,
by a seeded shuffle, and written to a JSON manifest that later runs reuse, so
that every model of a sweep sees the same images. The train order of the
manifest is itself shuffled, and `subset=n` takes its first n files: the 50k
subset is contained in the 100k one, which is contained in the 200k one.

Small folders (the synthetic stand-in, a test folder) cannot spare 5000 images;
there the validation and test sets each get 10 % of the files, at least one
(`eval_split_size`).

Edge patches of CEM500K can be smaller than 224 in one dimension (224 x 138):
a side shorter than `image_size` is mirror-padded (numpy "symmetric") up to
`image_size`, then the image is cropped to `image_size` (random position for
train, centre for val/test).
"""
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import tifffile
import torch
from torch.utils.data import Dataset

SPLITS = ("train", "val", "test")
PAPER_EVAL_SIZE = 5000
MANIFEST_VERSION = 1


def find_tiffs(root):
    """Every *.tif / *.tiff under root (recursive, any case), as sorted relative POSIX paths."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"CEM500K folder not found: {root}")
    files = [p for p in root.rglob("*") if p.suffix.lower() in (".tif", ".tiff") and p.is_file()]
    return sorted(p.relative_to(root).as_posix() for p in files)


def eval_split_size(n_files):
    """Size of each of val and test: 5000 (paper) or 10 % of a smaller folder, at least 1."""
    return min(PAPER_EVAL_SIZE, max(1, n_files // 10))


def make_manifest(files, seed):
    """Seeded disjoint val / test / train lists (train in shuffled order) from a file list."""
    if len(files) < 3:
        raise ValueError(f"CEM500K needs at least 3 images for train/val/test, found {len(files)}")
    order = np.random.default_rng(seed).permutation(len(files))
    shuffled = [files[i] for i in order]
    n_eval = eval_split_size(len(files))
    return {
        "version": MANIFEST_VERSION,
        "seed": seed,
        "n_files": len(files),
        "val": shuffled[:n_eval],
        "test": shuffled[n_eval:2 * n_eval],
        "train": shuffled[2 * n_eval:],
    }


def default_manifest_path(root, seed):
    """Inside root when it is writable, else under ~/.cache/emlib (keyed by root's absolute path).

    A folder without write permission bits counts as read-only even for root,
    so that shared read-only data folders are never written to.
    """
    root = Path(root).resolve()
    name = f"cem500k_manifest_seed{seed}.json"
    if os.access(root, os.W_OK) and root.stat().st_mode & 0o222:
        return root / name
    key = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "emlib" / "manifests" / key / name


def write_json_atomic(path, payload):
    """Write JSON through a temporary file and a rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=1)
    os.replace(tmp, path)


def load_or_create_manifest(root, seed, manifest_path=None):
    """Return (manifest dict, path, sha256 of its bytes); creates it on first use.

    An existing manifest is trusted without rescanning the folder (a scan of
    500k files takes a while); its seed must match.
    """
    path = Path(manifest_path) if manifest_path else default_manifest_path(root, seed)
    if not path.exists():
        write_json_atomic(path, make_manifest(find_tiffs(root), seed))
    raw = path.read_bytes()
    try:
        manifest = json.loads(raw)
        missing = [k for k in ("seed",) + SPLITS if k not in manifest]
    except (json.JSONDecodeError, TypeError):
        manifest, missing = None, ["valid JSON"]
    if missing:
        raise ValueError(f"manifest {path} is not a CEM500K manifest (missing {missing}); delete it to rebuild")
    if manifest["seed"] != seed:
        raise ValueError(f"manifest {path} was made with seed {manifest['seed']}, not seed={seed}")
    return manifest, path, hashlib.sha256(raw).hexdigest()


def read_tiff_uint8(path):
    """Read a single-channel TIFF as a 2-D array; an unreadable file raises ValueError naming it."""
    try:
        image = tifffile.imread(path)
    except Exception as err:  # tifffile raises many types for broken files
        raise ValueError(f"cannot read TIFF {path}: {err}") from err
    image = np.squeeze(image)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale TIFF, got shape {image.shape} in {path}")
    return image


def to_unit_float(image, path="image"):
    """uint8 (or other unsigned int) -> float32 in [0, 1]."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if np.issubdtype(image.dtype, np.unsignedinteger):
        return image.astype(np.float32) / np.iinfo(image.dtype).max
    raise ValueError(f"expected an unsigned integer TIFF, got {image.dtype} in {path}")


def pad_to_at_least(image, size):
    """Mirror-pad (symmetric) each side shorter than size, split evenly before and after."""
    pads = []
    for length in image.shape:
        missing = max(0, size - length)
        pads.append((missing // 2, missing - missing // 2))
    if not any(sum(p) for p in pads):
        return image
    return np.pad(image, pads, mode="symmetric")


def crop(image, size, random):
    """Square crop of side size: random position (torch RNG) or the centre."""
    height, width = image.shape
    if random:
        top = int(torch.randint(0, height - size + 1, (1,)))
        left = int(torch.randint(0, width - size + 1, (1,)))
    else:
        top, left = (height - size) // 2, (width - size) // 2
    return image[top:top + size, left:left + size]


class CEM500K(Dataset):
    """Clean CEM500K images as float32 tensors (1, image_size, image_size) in [0, 1].

    root: folder searched recursively for *.tif / *.tiff.
    split: "train", "val" or "test". subset: number of train images (the first n of
    the manifest's shuffled train list; None = all). seed: the split's seed.
    manifest_path: where the split is stored (default: see `default_manifest_path`).
    Attributes: files (relative paths), manifest_path, manifest_hash (sha256).
    """

    def __init__(self, root, split="train", subset=None, image_size=224, seed=0, manifest_path=None):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if int(image_size) < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.root, self.split, self.image_size = Path(root), split, int(image_size)
        if not self.root.is_dir():
            raise FileNotFoundError(f"CEM500K folder not found: {self.root}")
        manifest, self.manifest_path, self.manifest_hash = load_or_create_manifest(root, seed, manifest_path)
        files = manifest[split]
        if subset is not None:
            if split != "train":
                raise ValueError(f"subset applies to the train split only, got split={split!r}")
            if not 0 < int(subset) <= len(files):
                raise ValueError(f"subset={subset} but the folder {self.root} supplies {len(files)} train images")
            files = files[: int(subset)]
        self.files = list(files)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        path = self.root / self.files[index]
        if not path.is_file():
            raise FileNotFoundError(f"{path} is listed in the manifest {self.manifest_path} but missing")
        image = to_unit_float(read_tiff_uint8(path), path)
        image = pad_to_at_least(image, self.image_size)
        image = crop(image, self.image_size, random=self.split == "train")
        return torch.from_numpy(np.ascontiguousarray(image)).unsqueeze(0)
