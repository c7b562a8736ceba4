"""Reading 2-D grayscale EM images of any common format, and the crops that every dataset shares.

Formats: TIFF (uint8, uint16, float32, ...), PNG (8-bit, 16-bit, grey, RGB or RGBA
whose colour channels are equal), BMP. A colour image whose channels differ is
not a grayscale micrograph: a ValueError names the file.

Intensities to [0, 1] (`to_unit_range`), one rule for every loader:
- uint8 is divided by 255: the value as stored;
- any other integer type, and floats, are scaled per image between their 0.1 and
  99.9 percentiles (PERCENTILES), then clipped to [0, 1]: a 12-bit camera image
  stored as uint16 (max 4095) spans [0, 1], not [0, 0.06], and a few hot, dead or
  saturated pixels (a 65535 in a 12-bit frame) cannot squeeze the contrast of the
  rest (a min-max rule would); a constant image becomes 0;
- NaN or Inf pixels raise a ValueError naming the file.

Stacks: a multi-page TIFF (FIB-SEM, serial sections) is a stack of 2-D images, read
page by page (`page_count`, `read_raw(path, page)`).

Crops: a side shorter than the crop is mirror-padded (numpy "symmetric"), split
evenly before and after; larger images are cropped at a random place (torch RNG,
so the per-sample seeding of `emlib.training.SeededSamples` makes it
reproducible) or at the centre.
"""
import math
from pathlib import Path

import numpy as np
import tifffile
import torch
import torch.nn.functional as F
from PIL import Image

TIFF_SUFFIXES = (".tif", ".tiff")
PERCENTILES = (0.1, 99.9)  # the intensity range of non-8-bit images (BioImage.IO packages declare the same)
IMAGE_SUFFIXES = TIFF_SUFFIXES + (".png", ".bmp")
# The most pixels (values) an image file may hold: PIL's own limit for PNG and BMP
# (DecompressionBombError), applied to a TIFF's header before its pixels are decoded.
MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS
CACHE_BYTES = 1 << 30  # decoded pixels a dataset keeps in memory (DecodedCache)


def find_images(root, suffixes=IMAGE_SUFFIXES, what="image"):
    """Every file under root (recursive) with one of `suffixes` (any case), as sorted relative POSIX paths.

    A missing folder raises FileNotFoundError; a folder without such files a
    ValueError; both name the folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {root}")
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
    if not files:
        raise ValueError(f"no {what} files ({', '.join(suffixes)}) found under {root}")
    return files


def page_count(path) -> int:
    """The number of 2-D images in a file: the pages of a multi-page TIFF (a stack), else 1."""
    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES:
        return 1
    try:
        with tifffile.TiffFile(path) as tif:
            pages = len(tif.pages)
            if pages == 1 and len(tif.pages[0].shape) == 3 and tif.pages[0].shape[-1] not in (1, 3, 4):
                pages = tif.pages[0].shape[0]  # one page holding a (N, H, W) volume
            return pages
    except Exception as err:
        raise ValueError(f"cannot read the header of image {path}: {err}") from err


def read_raw(path, page: int | None = None) -> np.ndarray:
    """The pixels of one image file as stored (`page`: one page of a multi-page TIFF): a 2-D
    array of its own dtype.

    Colour images must have equal colour channels (one is kept; an alpha channel
    is ignored). Unreadable, truncated or non-2-D files (a stack read without `page`)
    raise ValueError naming the file.
    """
    path = Path(path)
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            array = _read_tiff(path, page)
        else:
            with Image.open(path) as image:
                image.load()  # decode now, so that a truncated file fails here
                array = np.asarray(image)
    except (FileNotFoundError, ImageTooLargeError):
        raise
    except Exception as err:  # PIL and tifffile raise many types for broken files
        raise ValueError(f"cannot read image {path}: {err}") from err
    return _to_2d(array, path)


class DecodedCache:
    """Decoded images kept in memory up to `budget_bytes`: a fine-tuning run reads every image of its
    splits at each epoch and evaluation, and decoding a PNG costs more than augmenting a crop of it.

    `get(key, load)` returns `load()`'s tuple of arrays, read once while the budget lasts (later
    items are read from disk each time, so a dataset larger than memory still works). Callers
    must not modify the arrays it returns.
    """

    def __init__(self, budget_bytes: int = CACHE_BYTES):
        self.budget, self.used, self.items = budget_bytes, 0, {}

    def get(self, key, load):
        if key in self.items:
            return self.items[key]
        value = load()
        size = sum(array.nbytes for array in value)
        if self.used + size <= self.budget:
            self.items[key] = value
            self.used += size
        return value


class ImageTooLargeError(ValueError):
    """An image file whose header claims more than MAX_PIXELS values (a memory bomb)."""


def _read_tiff(path: Path, page: int | None = None) -> np.ndarray:
    """A TIFF's pixels (with `page`, one page of a stack), once the shape its header claims for what
    is read is within MAX_PIXELS (checked before decoding)."""
    with tifffile.TiffFile(path) as tif:
        one_page = page is not None and len(tif.pages) > 1
        shape = tuple(tif.pages[page].shape) if one_page else tuple(tif.series[0].shape)
        if math.prod(shape) > MAX_PIXELS:
            raise ImageTooLargeError(f"image {path} claims a shape of {' x '.join(map(str, shape))} = "
                                     f"{math.prod(shape):,} values, over the limit of {MAX_PIXELS:,}; not decoded")
        volume = tif.pages[page].asarray() if one_page else tif.asarray()
    if page is not None and not one_page and volume.ndim == 3 and volume.shape[-1] not in (1, 3, 4):
        return volume[page]  # one page holding a (N, H, W) volume
    return volume


def _to_2d(array: np.ndarray, path) -> np.ndarray:
    """(H, W), (1, H, W), (H, W, 1) or equal-channel (H, W, 3|4) -> (H, W)."""
    while array.ndim > 2 and array.shape[0] == 1:  # a single page / plane
        array = array[0]
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        colour = array[..., :3]
        if not (np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 0], colour[..., 2])):
            raise ValueError(f"{path} is a colour image with unequal R, G, B channels; expected a grayscale micrograph")
        array = colour[..., 0]
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {array.shape} in {path}"
                         + (" (a stack: read it page by page)" if array.ndim == 3 else ""))
    return array


def to_unit_range(image: np.ndarray, path="image") -> np.ndarray:
    """float32 in [0, 1] by the module's rule: uint8 / 255; other types between their
    PERCENTILES, clipped."""
    if image.dtype == np.bool_:
        return image.astype(np.float32)
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ValueError(f"unsupported pixel type {image.dtype} in {path}")
    image = image.astype(np.float32)
    if not np.isfinite(image).all():
        raise ValueError(f"{path} has {int((~np.isfinite(image)).sum())} NaN or Inf pixel(s)")
    low, high = (float(v) for v in np.percentile(image, PERCENTILES))
    if high <= low:  # constant, or all but a few pixels equal: fall back to the full range
        low, high = float(image.min()), float(image.max())
    if high == low:
        return np.zeros_like(image)
    return np.clip((image - low) / (high - low), 0.0, 1.0)


def read_unit(path, page: int | None = None) -> np.ndarray:
    """One image file (or one page of a stack) as float32 (H, W) in [0, 1]: `read_raw` then `to_unit_range`."""
    return to_unit_range(read_raw(path, page), path if page is None else f"{path} page {page}")


def standardize(image) -> np.ndarray:
    """Mean 0, standard deviation 1 over the whole image (a constant image becomes 0)."""
    image = np.asarray(image, dtype=np.float32)
    std = image.std()
    return (image - image.mean()) / (std if std > 0 else 1.0)


def pad_to_at_least(image, size):
    """Mirror-pad (symmetric) each of the last two sides shorter than size, split evenly before and after."""
    pads = [(0, 0)] * (image.ndim - 2)
    for length in image.shape[-2:]:
        missing = max(0, size - length)
        pads.append((missing // 2, missing - missing // 2))
    if not any(sum(p) for p in pads):
        return image
    return np.pad(image, pads, mode="symmetric")


def downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """A (H, W) image at 1/factor of its size per side (rounded, at least 1 pixel), each pixel the
    mean of the area it covers; float32. factor 1 returns the image as float32."""
    image = np.asarray(image, dtype=np.float32)
    if factor == 1:
        return image
    height, width = image.shape
    size = (max(1, round(height / factor)), max(1, round(width / factor)))
    return F.interpolate(torch.from_numpy(np.ascontiguousarray(image))[None, None], size=size, mode="area")[0, 0].numpy()


def downsample_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """A binary (H, W) mask at 1/factor of its size per side: a pixel is 1 where at least half of the
    area it covers is (uint8 {0, 1})."""
    return (downsample(mask, factor) >= 0.5).astype(np.uint8)


def crop_window(height, width, size, random):
    """(top, left) of a size x size window: random (torch RNG) or centred; sides must be >= size."""
    if random:
        return int(torch.randint(0, height - size + 1, ())), int(torch.randint(0, width - size + 1, ()))
    return (height - size) // 2, (width - size) // 2


def crop(image, size, random):
    """Square crop of side size of the last two axes: random position (torch RNG) or the centre."""
    top, left = crop_window(*image.shape[-2:], size, random)
    return image[..., top:top + size, left:left + size]


def tile_corners(height, width, size):
    """(top, left) of the non-overlapping size x size tiles of an image (at least one: the centre)."""
    rows, cols = height // size, width // size
    if rows == 0 or cols == 0:
        return [crop_window(max(height, size), max(width, size), size, random=False)]
    return [(r * size, c * size) for r in range(rows) for c in range(cols)]


def image_shape(path):
    """(H, W) of an image file from its header, without decoding the pixels."""
    path = Path(path)
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            with tifffile.TiffFile(path) as tif:
                shape = tuple(tif.pages[0].shape)
            if len(shape) == 3:  # (H, W, samples) or (1, H, W)
                shape = shape[1:] if shape[0] == 1 else shape[:2]
            return shape[:2]
        with Image.open(path) as image:
            return image.size[1], image.size[0]
    except Exception as err:
        raise ValueError(f"cannot read the header of image {path}: {err}") from err
