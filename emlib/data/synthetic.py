"""Synthetic stand-ins for the three datasets, written in each real on-disk format.

CI and the book cannot download CEM500K, the Au HRTEM sets or TEMImageNet, so
this module draws look-alikes and writes them exactly as the real releases lay
them out; the same loaders then read both.

- cellular EM (CEM500K): uint8 TIFF patches with cell membranes, organelle-like
  blobs (mitochondria with cristae, vesicles, dense granules) and granular
  texture; mostly 224 x 224, some edge patches narrower in one dimension.
- HRTEM Au (Sytwu HDF5 pairs and the Groschner pair): crystalline particles with
  lattice fringes on an amorphous background, x-ray spikes, exact binary masks.
- ADF-STEM (TEMImageNet): Gaussian atom columns on a lattice, a low-frequency
  background, Poisson + scan noise, 8-bit PNG labels (clean, background-free,
  sharper "super-resolution" columns).

Everything is vectorised numpy (no scipy); `ensure_synthetic` writes the "ci"
scale in a few seconds.
"""
import functools
import json
import os
import shutil
import tempfile
from pathlib import Path

import h5py
import numpy as np
import tifffile
from PIL import Image

from emlib.data.au import AU_DATASETS

MARKER = ".emlib_synthetic"
FORMAT_VERSION = 5  # bump when the generators change: older folders are then rewritten
SCALES = {
    # images per dataset: CEM patches, Sytwu raw 512 x 1024 images (2 tiles each),
    # Groschner 512 x 512 images, TEMImageNet samples.
    # nano: images of each nanoparticle folder (msa_segtrack and EMPS layouts).
    "tiny": dict(cem=12, sytwu=3, groschner=4, temimagenet=8, nano=8),  # unit tests (3 micrographs: one per split)
    "ci": dict(cem=200, sytwu=6, groschner=10, temimagenet=120, nano=16),
    "small": dict(cem=2000, sytwu=24, groschner=40, temimagenet=1000, nano=60),
}

# ----------------------------------------------------------------------------- helpers


def gaussian_transfer(shape, sigma, full=False):
    """Fourier transfer function of a Gaussian blur of sigma px on a (H, W) grid (rfft2 layout
    unless full); sigma scalar or an array, which adds leading axes."""
    height, width = shape
    fy = np.fft.fftfreq(height)[:, None]
    fx = (np.fft.fftfreq(width) if full else np.fft.rfftfreq(width))[None, :]
    sigma = np.asarray(sigma, dtype=np.float64).reshape(np.shape(sigma) + (1, 1))
    return np.exp(-2.0 * (np.pi * sigma) ** 2 * (fy ** 2 + fx ** 2)).astype(np.float32)  # float32 FFTs


def gaussian_filter(images, sigma):
    """Periodic Gaussian filter of (..., H, W) via the FFT; sigma scalar or one per leading item."""
    shape = images.shape[-2:]
    return np.fft.irfft2(np.fft.rfft2(images) * gaussian_transfer(shape, sigma), s=shape).astype(np.float32)


def smooth_noise(rng, shape, sigma):
    """Gaussian random field of correlation length sigma, zero mean, unit std per image."""
    field = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    axes = (-2, -1)
    return (field - field.mean(axis=axes, keepdims=True)) / (field.std(axis=axes, keepdims=True) + 1e-8)


def blob_radius(theta, radius, rng, roughness=0.12):
    """Radius of a rounded, slightly faceted blob as a function of the polar angle."""
    r = np.full_like(theta, radius)
    for order in (2, 3, 4, 6):
        r = r + radius * roughness / order * rng.standard_normal() * np.cos(order * theta + rng.uniform(0, 2 * np.pi))
    return r


def blob_field(rng, shape, centre, radius):
    """(window, mask, rho) of one blob: window is the (row, col) slice pair of its bounding box,
    mask and rho (normalised radius, 1 on the boundary) are defined on that window."""
    reach = 1.6 * radius + 3
    top, left = (max(0, int(c - reach)) for c in centre)
    bottom, right = (min(n, int(c + reach) + 1) for c, n in zip(centre, shape))
    window = (slice(top, max(top, bottom)), slice(left, max(left, right)))
    yy, xx = np.mgrid[window].astype(np.float32)
    dy, dx = yy - centre[0], xx - centre[1]
    rho = np.hypot(dy, dx) / blob_radius(np.arctan2(dy, dx), radius, rng)
    return window, rho < 1.0, rho


def to_uint8(images, low_pct=0.5, high_pct=99.5):
    """Stretch each image between two percentiles to 0..255."""
    low = np.percentile(images, low_pct, axis=(-2, -1), keepdims=True)
    high = np.percentile(images, high_pct, axis=(-2, -1), keepdims=True)
    return (np.clip((images - low) / (high - low + 1e-8), 0, 1) * 255).round().astype(np.uint8)


# ----------------------------------------------------------------------------- cellular EM


def cellular_em_images(rng, count, size=224):
    """Float images (count, size, size) of cellular-EM-like texture (dark = stained)."""
    cells = 0.62 + 0.05 * smooth_noise(rng, (count, size, size), 25.0)
    cells += 0.05 * smooth_noise(rng, (count, size, size), 1.2)  # granular cytoplasm
    granules = (rng.random((count, size, size), dtype=np.float32) < rng.uniform(0.002, 0.01, (count, 1, 1)))
    cells -= 2.5 * gaussian_filter(granules.astype(np.float32), 1.2)  # ribosome-like dark dots
    # Membranes: thin dark lines along the zero set of a smooth random field.
    field = smooth_noise(rng, (count, size, size), rng.uniform(12, 28, size=count))
    field -= rng.uniform(-0.6, 0.6, size=(count, 1, 1))
    gy, gx = np.gradient(field, axis=(-2, -1))
    distance = np.abs(field) / (np.hypot(gy, gx) + 1e-3)
    width = rng.uniform(0.9, 2.5, size=(count, 1, 1))  # membrane half-width, px
    cells -= rng.uniform(0.2, 0.4, size=(count, 1, 1)) * np.exp(-((distance / width) ** 2))
    for image in cells:
        draw_organelles(rng, image)
    cells = gaussian_filter(cells, 0.8)
    cells += rng.uniform(0.01, 0.04, size=(count, 1, 1)) * rng.standard_normal(cells.shape).astype(np.float32)
    return cells


def draw_organelles(rng, image):
    """Paint mitochondria, vesicles and dense granules into one image, in place."""
    size = image.shape[0]
    for _ in range(rng.poisson(rng.uniform(3, 10))):
        kind = rng.choice(["mitochondrion", "vesicle", "granule"], p=[0.45, 0.4, 0.15])
        radius = {"mitochondrion": rng.uniform(10, 24), "vesicle": rng.uniform(5, 16), "granule": rng.uniform(3, 7)}[kind]
        centre = rng.uniform(0, size, size=2)
        window, inside, rho = blob_field(rng, image.shape, centre, radius)
        patch = image[window]  # a view: painting it paints the image
        if patch.size == 0:
            continue
        rim = np.exp(-(((rho - 1.0) * radius / 1.2) ** 2))
        if kind == "mitochondrion":
            angle, period = rng.uniform(0, np.pi), rng.uniform(5, 9)
            yy, xx = np.mgrid[window]
            cristae = 0.5 + 0.5 * np.cos(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
            patch[inside] = 0.42 + 0.12 * cristae[inside]
            patch -= 0.25 * rim
        elif kind == "vesicle":
            patch[inside] = 0.8 + 0.05 * rng.standard_normal()
            patch -= 0.3 * rim
        else:
            patch[inside] = 0.15


def write_cem500k(folder, count, rng):
    """CEM500K layout: uint8 TIFFs in a few source sub-folders; ~10 % are edge patches."""
    images = to_uint8(cellular_em_images(rng, count))
    for index, image in enumerate(images):
        if rng.random() < 0.1:  # edge patch: narrower in one dimension
            short = int(rng.choice([138, 200]))
            image = image[:, :short] if rng.random() < 0.5 else image[:short, :]
        path = Path(folder) / f"source{index % 4}" / f"patch{index:06d}.tiff"
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, np.ascontiguousarray(image))


# ----------------------------------------------------------------------------- HRTEM Au

# Per dataset: particle radius range (px), lattice fringe period (px, None = no
# fringes at low magnification), mean counts, x-ray spike height above the median.
AU_LOOKS = {
    "Au_2p2nm_330kx_423e": dict(radius=(10, 18), period=(5, 7), counts=900, spike=(3000, 8000)),
    "Au_5nm_330kx_423e": dict(radius=(22, 36), period=(5, 7), counts=900, spike=(3000, 8000)),
    "Au_10nm_330kx_425e": dict(radius=(40, 60), period=(5, 7), counts=900, spike=(3000, 8000)),
    "Au_20nm_87kx_16e": dict(radius=(25, 45), period=None, counts=120, spike=(800, 2500)),
    "groschner": dict(radius=(22, 36), period=(5, 7), counts=900, spike=None),
}


def place_particles(rng, shape, radius_range, count, avoid_right_half=False):
    """Non-overlapping (centre, radius) pairs inside shape, by rejection."""
    placed = []
    width = shape[1] // 2 if avoid_right_half else shape[1]
    for _ in range(count * 20):
        if len(placed) == count:
            break
        radius = rng.uniform(*radius_range)
        centre = rng.uniform([radius, radius], [shape[0] - radius, width - radius])
        if all(np.hypot(*(centre - c)) > 1.2 * (radius + r) for c, r in placed):
            placed.append((centre, radius))
    return placed


@functools.lru_cache(maxsize=4)
def carbon_filters(shape):
    """(noise filter, blur) in rfft2 layout: white noise times the first gives speckle of std 0.07
    (band-pass, 1-3 px) plus a slow variation of std 0.03 (80 px); the second is a 0.7 px blur."""
    band = gaussian_transfer(shape, 1.0) - gaussian_transfer(shape, 3.0)
    band_std = np.sqrt(np.mean((gaussian_transfer(shape, 1.0, True) - gaussian_transfer(shape, 3.0, True)) ** 2))
    slow = gaussian_transfer(shape, 80.0)
    slow_std = np.sqrt(np.mean(gaussian_transfer(shape, 80.0, True) ** 2))
    return (0.07 * band / band_std + 0.03 * slow / slow_std).astype(np.float32), gaussian_transfer(shape, 0.7)


def hrtem_image(rng, shape, look, empty_right_half=False):
    """(counts float32 with x-ray spikes, mask uint8) of Au particles on amorphous carbon."""
    transmission = np.ones(shape, np.float32)
    mask = np.zeros(shape, np.uint8)
    n_particles = max(2, int(shape[0] * shape[1] / (4 * np.pi * look["radius"][1] ** 2 * 2)))
    for centre, radius in place_particles(rng, shape, look["radius"], n_particles, empty_right_half):
        window, inside, _ = blob_field(rng, shape, centre, radius)
        yy, xx = np.mgrid[window]
        contrast = np.full(inside.shape, 1.0 - rng.uniform(0.15, 0.35), np.float32)
        if look["period"] is not None:  # lattice fringes, sometimes two crossing sets
            for _ in range(rng.choice([1, 2])):
                angle, period = rng.uniform(0, np.pi), rng.uniform(*look["period"])
                phase = 2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period
                contrast += rng.uniform(0.12, 0.25) * np.cos(phase + rng.uniform(0, 2 * np.pi)).astype(np.float32)
        transmission[window][inside] = contrast[inside]
        mask[window][inside] = 1
    # In Fourier space, all at once: amorphous carbon (also through the particles) and the blur.
    carbon, blur = carbon_filters(shape)
    noise = np.fft.rfft2(rng.standard_normal(shape, dtype=np.float32))
    spectrum = np.fft.rfft2(transmission) + noise * carbon
    transmission = np.fft.irfft2(spectrum * blur, s=shape).astype(np.float32)
    counts = look["counts"] * np.clip(transmission, 0.05, None)
    counts = rng.poisson(counts).astype(np.float32)
    if look["spike"] is not None:  # x-ray hits: single hot pixels far above the median
        n_spikes = rng.integers(5, 25)
        rows, cols = rng.integers(0, shape[0], n_spikes), rng.integers(0, shape[1], n_spikes)
        counts[rows, cols] = np.median(counts) + rng.uniform(*look["spike"], size=n_spikes)
    return counts, mask


def write_sytwu(folder, tag, count, rng):
    """Sytwu layout: `<tag>_Images.h5` ('images' (N,H,W)) + `<tag>_Labels.h5` ('labels' 0/1)."""
    shape = (512, 1024)
    pairs = [hrtem_image(rng, shape, AU_LOOKS[tag], empty_right_half=(i == 0)) for i in range(count)]
    images = np.stack([p[0] for p in pairs]).round().clip(0, 65535).astype(np.uint16)  # camera counts
    labels = np.stack([p[1] for p in pairs])
    with h5py.File(Path(folder) / f"{tag}_Images.h5", "w") as f:
        f.create_dataset("images", data=images)
    with h5py.File(Path(folder) / f"{tag}_Labels.h5", "w") as f:
        f.create_dataset("labels", data=labels, compression="gzip", compression_opts=1)


def write_groschner(folder, images_name, maps_name, count, rng):
    """Groschner layout: images (N,512,512,1) median-filtered in [0,1]; 'maps' one-hot (N,512,512,2)."""
    pairs = [hrtem_image(rng, (512, 512), AU_LOOKS["groschner"]) for _ in range(count)]
    images = np.stack([p[0] for p in pairs])
    images = gaussian_filter(images, 0.6)  # stands in for their 3x3 median filter
    low, high = images.min(axis=(1, 2), keepdims=True), images.max(axis=(1, 2), keepdims=True)
    images = ((images - low) / (high - low))[..., None].astype(np.float32)
    masks = np.stack([p[1] for p in pairs])
    maps = np.stack([1 - masks, masks], axis=-1).astype(np.uint8)
    with h5py.File(Path(folder) / images_name, "w") as f:
        f.create_dataset("images", data=images)
    with h5py.File(Path(folder) / maps_name, "w") as f:
        f.create_dataset("maps", data=maps, compression="gzip", compression_opts=1)


# ----------------------------------------------------------------------------- ADF-STEM


def atom_columns(rng, size=256):
    """(positions (K, 2) as (y, x), weights (K,), lattice spacing) of columns on a random 2-D lattice."""
    spacing, angle = rng.uniform(12, 22), rng.uniform(0, np.pi)
    gamma = rng.choice([np.pi / 2, np.pi / 3, rng.uniform(1.2, 1.9)])
    a1 = spacing * np.array([np.sin(angle), np.cos(angle)])
    a2 = spacing * rng.uniform(0.8, 1.4) * np.array([np.sin(angle + gamma), np.cos(angle + gamma)])
    n = int(2 * size / spacing) + 2
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    sites = size / 2 + i.reshape(-1, 1) * a1 + j.reshape(-1, 1) * a2
    weights = np.ones(len(sites))
    if rng.random() < 0.6:  # a two-atom basis: lighter columns between the heavy ones
        shift = rng.uniform(0.3, 0.7) * (a1 + a2)
        sites = np.concatenate([sites, sites + shift])
        weights = np.concatenate([weights, np.full(len(weights), rng.uniform(0.3, 0.8))])
    if rng.random() < 0.5:  # a nanoparticle instead of a film filling the field
        centre, radius = rng.uniform(0.35, 0.65, 2) * size, rng.uniform(60, 110)
        keep = np.hypot(*(sites - centre).T) < radius
    else:
        keep = np.ones(len(sites), bool)
    keep &= np.all((sites > -8) & (sites < size + 8), axis=1)
    return sites[keep], weights[keep], spacing


def splat(positions, weights, size):
    """Bilinear deposit of point weights onto a (size, size) grid."""
    grid = np.zeros((size + 2, size + 2), np.float64)
    y0, x0 = np.floor(positions[:, 0]), np.floor(positions[:, 1])
    fy, fx = positions[:, 0] - y0, positions[:, 1] - x0
    inside = (y0 >= 0) & (y0 < size) & (x0 >= 0) & (x0 < size)
    y0, x0, fy, fx, w = y0[inside].astype(int), x0[inside].astype(int), fy[inside], fx[inside], weights[inside]
    for dy, dx, share in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        np.add.at(grid, (y0 + dy, x0 + dx), w * share)
    return grid[:size, :size].astype(np.float32)


def adf_stem_sample(rng, size=256):
    """(input, noNoise, noBackgroundnoNoise, superresolution) uint8 images and column positions."""
    positions, weights, spacing = atom_columns(rng, size)
    margin = 16  # render on a larger grid so that the FFT's wrap-around stays outside the image
    big = size + 2 * margin
    spectrum = np.fft.rfft2(splat(positions + margin, weights, big))
    sigma = min(rng.uniform(2.0, 3.2), 0.2 * spacing)
    # The same columns blurred by the probe (sigma) and by a twice sharper one (the SR label).
    blurred = np.fft.irfft2(spectrum * gaussian_transfer((big, big), [sigma, 0.5 * sigma]), s=(big, big))
    columns, sharp = blurred[:, margin:-margin, margin:-margin]
    columns /= columns.max() + 1e-8
    sharp /= sharp.max() + 1e-8
    # Low-frequency background: a tilt plus a few long-wavelength waves.
    yy, xx = np.indices((size, size)) / size
    background = rng.uniform(-0.3, 0.3) * yy + rng.uniform(-0.3, 0.3) * xx
    for _ in range(3):
        ky, kx = rng.uniform(-2, 2, size=2)
        background += rng.uniform(0.05, 0.15) * np.cos(2 * np.pi * (ky * yy + kx * xx) + rng.uniform(0, 2 * np.pi))
    background = rng.uniform(0.1, 0.5) * (background - background.min()) / (np.ptp(background) + 1e-8)
    clean = np.clip(columns + background, 0, None)
    dose = rng.uniform(3, 30)  # electrons at a column's peak: heavily quantised inputs
    noisy = rng.poisson(dose * clean).astype(np.float32)
    noisy += rng.uniform(0.2, 1.0) * rng.standard_normal(noisy.shape)  # detector noise
    jitter = rng.integers(-1, 2, size)  # scan noise: rows shifted by a pixel, rows offset
    noisy = noisy[np.arange(size)[:, None], (np.arange(size)[None, :] + jitter[:, None]) % size]
    noisy += rng.uniform(0, 0.5) * rng.standard_normal((size, 1))
    noisy_u8 = (np.clip(noisy / (dose * clean.max() * rng.uniform(1.0, 2.5)), 0, 1) * 255).round()
    labels = [clean / clean.max(), columns, sharp]
    images = [noisy_u8] + [(np.clip(label, 0, 1) * 255).round() for label in labels]
    inside = np.all((positions >= 0) & (positions < size), axis=1)
    return [image.astype(np.uint8) for image in images], positions[inside]


TEMIMAGENET_FOLDERS = ("image", "noNoise", "noBackgroundnoNoise", "noNoiseNoBackgroundSuperresolution")


def write_temimagenet(folder, count, rng):
    """TEMImageNet layout: one flat folder per label, `NNNNN.png`, plus `position/NNNNN.txt`."""
    folder = Path(folder)
    for name in TEMIMAGENET_FOLDERS + ("position",):
        (folder / name).mkdir(parents=True, exist_ok=True)
    for index in range(1, count + 1):
        images, positions = adf_stem_sample(rng)
        for name, image in zip(TEMIMAGENET_FOLDERS, images):
            Image.fromarray(image).save(folder / name / f"{index:05d}.png", compress_level=1)
        np.savetxt(folder / "position" / f"{index:05d}.txt", positions, fmt="%.6f")


# ----------------------------------------------------------------------------- the entry point


def default_root():
    """$EMLIB_DATA, else ./data/synthetic."""
    return Path(os.environ.get("EMLIB_DATA") or "data/synthetic")


def write_all(root, scale, seed=0):
    """Write the three synthetic datasets under root (no marker; see ensure_synthetic)."""
    counts = SCALES[scale]
    rng = np.random.default_rng(seed)
    write_cem500k(root / "cem500k", counts["cem"], rng)
    (root / "au").mkdir(parents=True, exist_ok=True)
    for spec in AU_DATASETS.values():
        if spec["source"] == "sytwu":
            write_sytwu(root / "au", spec["tag"], counts["sytwu"], rng)
        else:
            write_groschner(root / "au", spec["images_file"], spec["maps_file"], counts["groschner"], rng)
    write_temimagenet(root / "temimagenet", counts["temimagenet"], rng)
    write_msa_segtrack(root / "nanoparticles" / "msa_segtrack", counts["nano"], rng)
    write_emps(root / "nanoparticles" / "emps", counts["nano"], rng)


def nanoparticle_image(rng, shape):
    """(8-bit grey image, mask uint8 {0, 1}): dark particles on a bright noisy support, as bright-field TEM."""
    counts, mask = hrtem_image(rng, shape, AU_LOOKS["groschner"])
    image = np.clip(counts, 0, np.percentile(counts, 99.5))
    image = 255 * (image - image.min()) / max(float(np.ptp(image)), 1e-6)
    return image.astype(np.uint8), mask


def write_msa_segtrack(folder, count, rng):
    """msa-em/microscopy-seg-track layout: {train,test}/images/image_N.png (RGBA, R=G=B) and labels/label_N.png {0,255}."""
    for split, numbers in (("train", range(0, count // 2)), ("test", range(count // 2, count))):
        (folder / split / "images").mkdir(parents=True, exist_ok=True)
        (folder / split / "labels").mkdir(parents=True, exist_ok=True)
        for n in numbers:
            image, mask = nanoparticle_image(rng, (256, 256))
            rgba = np.stack([image, image, image, np.full_like(image, 255)], -1)
            Image.fromarray(rgba, "RGBA").save(folder / split / "images" / f"image_{n}.png")
            Image.fromarray((mask * 255).astype(np.uint8)).save(folder / split / "labels" / f"label_{n}.png")


def write_emps(folder, count, rng):
    """EMPS layout: images/<id>.png (8-bit grey, varied sizes), segmaps/<id>.png (16-bit instance ids),
    train.csv / test.csv (one id a line, no header)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "segmaps").mkdir(parents=True, exist_ok=True)
    ids = [f"{rng.integers(16 ** 10):010x}" for _ in range(count)]
    for sample_id in ids:
        shape = (256, int(rng.choice([256, 288, 320])))
        image, mask = nanoparticle_image(rng, shape)
        # Instance ids: stripes stand in for particle labels (the loader only needs id > 0).
        instances = mask.astype(np.uint16) * (1 + np.arange(shape[1], dtype=np.uint16)[None, :] // 64)
        Image.fromarray(image).save(folder / "images" / f"{sample_id}.png")
        Image.fromarray(instances).save(folder / "segmaps" / f"{sample_id}.png")
    n_test = max(1, count // 4)
    (folder / "train.csv").write_text("\n".join(ids[n_test:]) + "\n")
    (folder / "test.csv").write_text("\n".join(ids[:n_test]) + "\n")


def marker_state(root, scale):
    """None (no marker), "current" or "outdated" (written by older generators)."""
    marker = Path(root) / MARKER
    if not marker.exists():
        return None
    try:
        info = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return "outdated"
    if info.get("version") != FORMAT_VERSION:
        return "outdated"
    if info.get("scale") != scale:
        raise ValueError(f"{root} holds synthetic data of scale {info.get('scale')!r}, not {scale!r}; delete it to rewrite")
    return "current"


def ensure_synthetic(root=None, scale="ci"):
    """Write the synthetic datasets once under root and return root.

    root defaults to $EMLIB_DATA or ./data/synthetic; it gets `cem500k/`, `au/`
    and `temimagenet/` and a marker file. A later call (from any process) finds
    the marker and returns at once. Writers work in a temporary folder that is
    renamed into place, so concurrent first calls are safe (the data are
    deterministic: whichever rename wins, the content is the same). A folder
    written by older generators (FORMAT_VERSION) is replaced the same way.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, got {scale!r}")
    root = Path(root) if root is not None else default_root()
    state = marker_state(root, scale)
    if state == "current":
        return root
    if state is None and root.exists() and any(root.iterdir()):
        raise ValueError(f"{root} exists and is not a synthetic data folder (no {MARKER}); choose another root")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}-writing-"))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private
        write_all(staging, scale)
        (staging / MARKER).write_text(json.dumps({"scale": scale, "version": FORMAT_VERSION}))
        if state == "outdated":
            retire(root)
        publish(staging, root, scale)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def retire(root):
    """Move an outdated folder out of the way (open files stay readable), then delete it."""
    old = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}-old-"))
    try:
        os.replace(root, old)  # replaces the empty temporary folder
    except FileNotFoundError:  # another writer retired it first
        pass
    shutil.rmtree(old, ignore_errors=True)


def publish(staging, root, scale):
    """Rename staging to root; losing the race to an identical writer is fine."""
    try:
        if root.exists():
            root.rmdir()  # only an empty folder: the rename needs the name free
        os.rename(staging, root)
    except OSError:
        if marker_state(root, scale) != "current":  # not a lost race: a real failure
            raise


def is_synthetic(root):
    """True iff root, its parent or its grandparent holds the synthetic marker file."""
    root = Path(root).resolve()
    return any((folder / MARKER).exists() for folder in [root, *root.parents][:3])
