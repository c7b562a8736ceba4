# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The data
#
# The paper uses three datasets, each for a different job:
#
# | dataset | what | labels | role |
# |---|---|---|---|
# | CEM500K {cite:p}`conrad2021cem500k` | ~500k cellular EM patches, 224 x 224, uint8 TIFF | none | GAN pretraining |
# | Au nanoparticles {cite:p}`sytwu2022receptive` | HRTEM images of gold particles on amorphous carbon, HDF5 | binary masks | segmentation |
# | TEMImageNet {cite:p}`lin2021temimagenet` | simulated ADF-STEM images, 256 x 256, 8-bit PNG | clean / background-free / sharper images | restoration |
#
# The datasets are far apart: pretraining sees *cells* (membranes, mitochondria,
# vesicles at nanometre resolution) while the downstream tasks see *atoms*
# (lattice fringes, atom columns at ångström resolution). Whether features learnt
# on the first help on the second is the paper's question.
#
# None of the three can be downloaded on CI, so `emlib.data` also *draws* a small
# synthetic stand-in for each one and writes it in exactly the real on-disk
# format; the same loaders read both. This chapter shows the three formats, the
# synthetic images beside real samples (where the folder `shared/data/real`
# of this project is present), the preprocessing of the Au images, and the
# corruption task that pretraining learns to undo.
#
# To use the real datasets, download them
# (`python -m emlib data download cem500k|au-sytwu|au-groschner|temimagenet --out DIR`)
# and set `data_root`.

# %%
import sys, subprocess
if "google.colab" in sys.modules:  # install emlib on Colab only
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "emlib[book] @ git+https://github.com/emlib-book/emlib"], check=True)
import torch
print("device:", "cuda" if torch.cuda.is_available() else "cpu")

# %% tags=["parameters"]
data_root = None  # None = synthetic data (emlib.data.ensure_synthetic); real: a folder with cem500k/, au/, temimagenet/
real_samples = None  # None = look for shared/data/real above the working directory; "" = do not show real samples
n_show = 4  # images per row in the figures
image_size = 224  # CEM500K patch size; paper: 224
seed = 0  # the seed of every split and of the corruptions shown
figure_dpi = 80

# %%
# NBVAL_IGNORE_OUTPUT
# (the output depends on whether the real sample files are present)
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import tifffile
from PIL import Image

from emlib import data, paper
from emlib.data import au as au_prep

plt.rcParams["figure.dpi"] = figure_dpi
root = data.ensure_synthetic() if data_root is None else Path(data_root)
source = "synthetic" if data.is_synthetic(root) else "real"
if real_samples is None:
    found = [p / "shared/data/real" for p in [Path.cwd(), *Path.cwd().parents] if (p / "shared/data/real").is_dir()]
    real_samples = found[0] if found else ""
real = Path(real_samples) if real_samples else None
print(f"datasets: {source} data | real samples for comparison: {'yes' if real else 'no'}")


def show_row(axes, images, titles, cmap="gray"):
    """Draw one row of images without axes."""
    for ax, image, title in zip(axes, images, titles):
        ax.imshow(image, cmap=cmap)
        ax.set_title(title, fontsize=8)
        ax.axis("off")


# %% [markdown]
# ## CEM500K: unlabelled cellular EM
#
# CEM500K is a folder tree of single-channel uint8 TIFF patches cut from 2D and
# 3D cellular EM of many sources. The paper pretrains on subsets of 50k, 100k and
# 200k of them and holds out 5000 for validation and 5000 for testing (Table 1).
# `emlib.data.CEM500K` draws this split once with a seed and writes it to a JSON
# manifest that every later run reuses; its SHA-256 goes into each model card.
# The train list of the manifest is shuffled and a subset takes its first n
# files, so the 50k subset lies inside the 100k one, which lies inside the 200k one.

# %%
splits = {s: data.CEM500K(root / "cem500k", split=s, image_size=image_size, seed=seed) for s in ("train", "val", "test")}
print("images per split:", {s: len(d) for s, d in splits.items()}, f"({source} data)")
print("paper, Table 1:", {row["dataset"]: (row["train"], row["validation"], row["test"])
                          for row in paper.load_splits() if row["dataset"] == "CEM500K"})
print("manifest sha256:", splits["train"].manifest_hash[:16], "...")

# %%
# NBVAL_IGNORE_OUTPUT
# (the output depends on whether the real sample files are present)
rows = [("synthetic (ours)", [splits["val"][i][0].numpy() for i in range(n_show)])]
if real:
    examples = sorted((real / "cem500k_examples").glob("*.tif*"))[:n_show]
    rows.append(("real CEM500K examples", [tifffile.imread(p) for p in examples]))
fig, axes = plt.subplots(len(rows), n_show, figsize=(2.2 * n_show, 2.4 * len(rows)), squeeze=False)
for ax_row, (label, images) in zip(axes, rows):
    show_row(ax_row, images, [f"{label}\n{im.shape[0]}x{im.shape[1]}" for im in images])
fig.suptitle(f"Cellular EM patches: {source} data (top)" + (", real samples (bottom)" if real else ""))
plt.tight_layout()
plt.show()

# %% [markdown]
# Patches at the border of a volume can be narrower than 224 pixels (the real
# `example5.tiff` is 224 x 138). The loader never crashes on them: a short side is
# mirror-padded up to `image_size`, then the image is cropped to a square (at a
# random position for training, at the centre for validation and test).

# %%
from emlib.data.cem500k import crop, pad_to_at_least

if real and (real / "cem500k_examples/example5.tiff").exists():
    edge, edge_label = tifffile.imread(real / "cem500k_examples/example5.tiff"), "real edge patch"
else:
    edge = next(im for im in (tifffile.imread(p) for p in sorted((root / "cem500k").rglob("*.tif*"))) if min(im.shape) < 224)
    edge_label = f"{source} edge patch"
padded = crop(pad_to_at_least(edge / 255.0, image_size), image_size, random=False)
fig, axes = plt.subplots(1, 2, figsize=(5, 2.6))
show_row(axes, [edge, padded], [f"{edge_label} {edge.shape[0]}x{edge.shape[1]}", f"as loaded {padded.shape[0]}x{padded.shape[1]}"])
fig.suptitle("Edge patches are mirror-padded")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The pretraining task: undo a corruption
#
# Pretraining (next chapters) feeds the generator a *corrupted* image A and asks
# for the clean image B. `emlib.data.Corruption` draws, per image, additive
# Gaussian noise and a Gaussian blur (applied to A only) and a random flip and
# 90° rotation (applied to A and B alike: these are augmentations, not damage).
# It works on whole batches on the CPU or the GPU, and a seeded
# `torch.Generator` gives the same corruptions every time, which is how the fixed
# validation set of pretraining is made.

# %%
corruption = data.Corruption()
print(corruption)
clean = torch.stack([splits["val"][i] for i in range(n_show)])
corrupted, target = corruption(clean, torch.Generator().manual_seed(seed))
fig, axes = plt.subplots(3, n_show, figsize=(2.2 * n_show, 7))
show_row(axes[0], clean[:, 0], ["clean image"] * n_show)
show_row(axes[1], corrupted[:, 0], ["input A (corrupted)"] * n_show)
show_row(axes[2], target[:, 0], ["target B (flipped/rotated clean)"] * n_show)
fig.suptitle(f"Corruption pairs of pretraining ({source} data, seed {seed})")
plt.tight_layout()
plt.show()
print("mean |A - B| per image:", np.round((corrupted - target).abs().mean(dim=(1, 2, 3)).numpy(), 4))

# %% [markdown]
# ## Au nanoparticles: HRTEM segmentation
#
# Sytwu et al. {cite:p}`sytwu2022receptive` recorded gold particles of 2.2, 5 and
# 10 nm (aberration-corrected TEAM 0.5, lattice fringes visible) and 20 nm (lower
# magnification, no fringes), and labelled every particle pixel. Each set is a
# pair of HDF5 files `<tag>_Images.h5` / `<tag>_Labels.h5`. The paper adds a
# fifth, older set of 5 nm particles from Groschner et al.
# {cite:p}`groschner2021pipeline` ("Au5nmV1"), stored as already-cut 512 x 512
# images with one-hot masks. The table `emlib.data.AU_DATASETS` maps the paper's
# names to these files.

# %%
for name, spec in data.AU_DATASETS.items():
    print(f"{name:8s} {spec['source']:9s} {spec.get('tag') or spec['images_file']}  spike threshold: {spec['spike_threshold']}")

# %% [markdown]
# Sytwu's preprocessing, which `AuSegmentation` applies and `emlib.data.au`
# exposes as functions:
#
# 1. **x-ray spikes**: stray x-rays light up single pixels far above the rest;
#    pixels brighter than the median + a threshold (1500 counts, 400 for the 20 nm
#    set) get the mean of their neighbours (`remove_xray_spikes`);
# 2. **standardisation**: each image to mean 0, standard deviation 1 (`standardise`);
# 3. **tiles**: 512 x 512 pieces (`tile_image`), dropping those with 400 or fewer
#    particle pixels (`keep_tile`): almost pure background teaches little.
#
# Training then crops 448 x 448 at random and applies one of the 8 flips/rotations.

# %%
tag = data.AU_DATASETS["Au5nm"]["tag"]
masks = au_prep.read_masks(root / "au", "Au5nm")
_, raw = next(au_prep.read_images(root / "au", "Au5nm", [0]))
cleaned = au_prep.remove_xray_spikes(raw, data.AU_DATASETS["Au5nm"]["spike_threshold"])
tiles = au_prep.tile_image(au_prep.standardise(cleaned), masks[0])
print(f"raw image {raw.shape}: max {raw.max():.0f} counts, median {np.median(raw):.0f} -> after spike removal max {cleaned.max():.0f}")
fig, axes = plt.subplots(1, 2 + len(tiles), figsize=(2.6 * (2 + len(tiles)), 2.8))
axes[0].imshow(raw, cmap="gray")
axes[0].set_title("raw counts (spikes saturate the scale)", fontsize=8)
axes[1].imshow(cleaned, cmap="gray")
axes[1].set_title("after spike removal", fontsize=8)
for ax, (tile, mask) in zip(axes[2:], tiles):
    ax.imshow(tile, cmap="gray")
    ax.contour(mask, levels=[0.5], colors="gold", linewidths=0.6)
    ax.set_title(f"tile: {int(mask.sum())} particle px, {'kept' if au_prep.keep_tile(mask) else 'dropped'}", fontsize=8)
for ax in axes:
    ax.axis("off")
fig.suptitle(f"Sytwu preprocessing of one Au5nm image ({source} data)")
plt.tight_layout()
plt.show()

# %%
fig, axes = plt.subplots(2, len(data.AU_DATASETS), figsize=(2.4 * len(data.AU_DATASETS), 5))
counts = {}
for col, name in enumerate(data.AU_DATASETS):
    sets = {s: data.AuSegmentation(root / "au", name, split=s, seed=seed) for s in ("train", "val", "test")}
    counts[name] = {s: len(d) for s, d in sets.items()}
    image, mask = sets["test"][0]
    show_row([axes[0, col]], [image[0]], [f"{name} test tile"])
    show_row([axes[1, col]], [mask[0]], ["mask"])
fig.suptitle(f"The five Au datasets ({source} data): standardised tile and mask")
plt.tight_layout()
plt.show()
print(f"tiles per split ({source} data):", counts)
print("paper, Table 1:", {row["dataset"]: (row["train"], row["validation"], row["test"])
                          for row in paper.load_splits() if row["dataset"].startswith("Au")})

# %% [markdown]
# ## TEMImageNet: restoration of atomic-resolution images
#
# TEMImageNet {cite:p}`lin2021temimagenet` simulates annular dark-field STEM
# images of eight materials with scan and Poisson noise and a low-frequency
# background, and stores for each noisy input (`image/NNNNN.png`) several label
# images with the same ID. The paper's three restoration tasks read three of the
# label folders (`emlib.data.TEMIMAGENET_TASKS`; the super-resolution folder is
# our reading of the names).

# %%
for task, (inputs, target) in data.TEMIMAGENET_TASKS.items():
    print(f"{task:25s} {inputs}/ -> {target}/")
sets = {task: data.TEMImageNet(root / "temimagenet", task, split="test", seed=seed) for task in data.TEMIMAGENET_TASKS}
print(f"{source} split sizes:", {s: len(data.TEMImageNet(root / "temimagenet", "denoising", s, seed)) for s in ("train", "val", "test")},
      "| paper, Table 1: 10377 / 1832 / 2155")

# %%
# NBVAL_IGNORE_OUTPUT
# (the output depends on whether the real sample files are present)
n_rows = 2 + (1 if real else 0)
fig, axes = plt.subplots(n_rows, 4, figsize=(9, 2.4 * n_rows))
for row in range(2):
    inputs, _ = sets["denoising"][row]
    targets = [sets[task][row][1][0] for task in data.TEMIMAGENET_TASKS]
    show_row(axes[row], [inputs[0], *targets], [f"{source} input", *data.TEMIMAGENET_TASKS])
if real:
    pngs = sorted((real / "temimagenet_inputs").glob("*.png"))
    show_row(axes[2], [np.asarray(Image.open(p)) for p in pngs], [f"real input {p.stem}" for p in pngs])
    for ax in axes[2, len(pngs):]:
        ax.axis("off")
fig.suptitle(f"ADF-STEM inputs and labels ({source} data)" + ("; bottom: real TEMImageNet inputs" if real else ""))
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Summary
#
# - `CEM500K`, `AuSegmentation` and `TEMImageNet` read the real on-disk formats;
#   `ensure_synthetic()` writes small look-alikes in the same formats, so every
#   chapter of this book runs on a laptop, and on the real data when given `data_root`.
# - All splits are seeded and reproducible; CEM500K's is stored in a manifest.
# - `Corruption` defines the pretraining task: noise and blur on the input,
#   flips and rotations on input and target alike.
#
# The synthetic images only *look* like the real ones: numbers computed on them
# say that the code works, not how well a model does on electron micrographs.
