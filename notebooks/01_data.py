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
# format; the same loaders read both. This project also keeps a few **real** EM
# sets beside the repository (`../shared/data/real`, see its `PROVENANCE.md`):
# real cellular EM patches of four sources for pretraining, and two real
# nanoparticle sets with manual masks for segmentation. They are not the paper's
# data, but they are real electron micrographs, which the stand-ins are not.
#
# This chapter shows both, and every figure says which it shows: **"real data
# (name of the set)"** or **"synthetic stand-in"**. After a table of the real sets come the
# paper's datasets one by one, each in its on-disk format (drawn by the synthetic
# stand-in) and followed by the real data of the same kind: cellular EM patches
# of four sources; the corruption task that pretraining learns to undo, with an
# explorer to try it; nanoparticle images with their masks; and intensity
# histograms of real and synthetic images side by side. Where the folder
# `../shared/data/real` is absent (on Colab, say), the same cells show the
# synthetic stand-ins, labelled as such.
#
# To use the paper's datasets, download them
# (`python -m emlib data download cem500k|au-sytwu|au-groschner|temimagenet --out DIR`)
# and set `data_root`.

# %%
import sys, subprocess
if "google.colab" in sys.modules:  # install emlib on Colab only
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "emlib[book] @ git+https://github.com/emlib-book/emlib"], check=True)
import torch
print("device:", "cuda" if torch.cuda.is_available() else "cpu")

# %% tags=["parameters"]
data_root = None  # None: synthetic data (emlib.data.ensure_synthetic); real: a folder with cem500k/, au/, temimagenet/
real_data = None  # None: ../shared/data/real beside the repository (searched from the working directory up); "": do not show real data
n_show = 4  # images per row in the figures
image_size = 224  # CEM500K patch size; paper: 224
histogram_images = 40  # images per set in the intensity histograms
seed = 0  # the seed of every split and of the corruptions shown
figure_dpi = 80
show_widgets = True  # the ipywidgets explorer (False for batch runs: papermill)

# %%
# NBVAL_IGNORE_OUTPUT
# (the output depends on whether the real data files are present)
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import tifffile
from IPython.display import Markdown, display
from PIL import Image

from emlib import data, explorers, figures, paper
from emlib.data import au as au_prep
from emlib.data.images import find_images, image_shape, read_raw, read_unit

plt.rcParams["figure.dpi"] = figure_dpi
root = data.ensure_synthetic() if data_root is None else Path(data_root)
source = "synthetic" if data.is_synthetic(root) else "real"
label = "synthetic stand-in" if source == "synthetic" else f"real data ({root.name})"  # the paper's formats
if real_data is None:
    found = [p / "shared/data/real" for p in [Path.cwd(), *Path.cwd().parents] if (p / "shared/data/real").is_dir()]
    real_data = found[0] if found else ""
real = Path(real_data) if real_data else None
print(f"the paper's formats: {label} | the real data of this project: {data.catalog.shown_path(real) if real else 'absent (synthetic stand-ins shown instead)'}")


def show_row(axes, images, titles, cmap="gray"):
    """Draw one row of images without axes."""
    for ax, image, title in zip(axes, images, titles):
        ax.imshow(image, cmap=cmap)
        ax.set_title(title, fontsize=8)
        ax.axis("off")


# %% [markdown]
# ## The real data at a glance
#
# Three real sets serve the experiments of this book that run on real pixels
# (the notebooks' `data_root` and the real-data sweep point at them):
#
# - `cellular_em/`: unlabelled cellular EM patches in CEM500K's layout (a folder
#   of 224 x 224 uint8 TIFFs), one sub-folder per source. `emlib.data.ImageFolder`
#   reads the whole folder, searched recursively, and splits it *by file* with a
#   seed; as nothing is published, validation and test get 10 % each. The split's
#   manifest goes to the user cache (or a run's folder), never into the data folder.
# - `nanoparticles/msa_segtrack/`: bright-field TEM of metal nanoparticles with
#   binary masks, published as `train/` and `test/`; validation is carved from the
#   train side (`emlib.data.SegmentationFolder`, `masks="binary"`).
# - `nanoparticles/emps/`: EMPS, TEM/SEM images cropped from journal figures with
#   16-bit instance maps (`masks="instances"`: foreground = id > 0) and the official
#   `train.csv` / `test.csv` split.
#
# The counts and sizes below are read from the files; sources and licences are
# from `PROVENANCE.md` of the data folder.

# %%
# NBVAL_IGNORE_OUTPUT
# (the output depends on whether the real data files are present)
PROVENANCE = {name: data.registry.DATASETS[name].licence for name in ("cellular_em", "msa_segtrack", "emps")}


def size_range(folder):
    """'H x W' of every image under folder, as a range where sizes differ (read from the file headers)."""
    shapes = np.array([image_shape(folder / f) for f in find_images(folder)])
    low, high = shapes.min(axis=0), shapes.max(axis=0)
    return " x ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in zip(low, high))


if real:
    cells_root, nano_root = real / "cellular_em", real / "nanoparticles"
    cells = {s: data.ImageFolder(cells_root, split=s, image_size=image_size, seed=seed) for s in ("train", "val", "test")}
    table = {"cellular_em": {
        "images": str(len(find_images(cells_root))),
        "what": "unlabelled; " + ", ".join(f"{d.name} {len(find_images(d))}" for d in sorted(cells_root.iterdir()) if d.is_dir()),
        "H x W (px)": size_range(cells_root),
        "train / val / test": " / ".join(str(len(cells[s])) for s in cells) + " (seeded, by file)",
        "source, licence": PROVENANCE["cellular_em"]}}
    for name, masks in (("msa_segtrack", "binary"), ("emps", "instances")):
        folder, _ = data.dataset_folder(name, nano_root, verbose=False)
        splits = {s: data.SegmentationFolder(folder, split=s, masks=masks, seed=seed) for s in ("train", "val", "test")}
        image_folders = sorted({image.parent for d in splits.values() for image, _ in d.pairs})
        published = "train/, test/ folders" if (folder / "train").is_dir() else "train.csv, test.csv"
        table[name] = {
            "images": str(sum(len(d) for d in splits.values())),
            "what": "binary masks" if masks == "binary" else "16-bit instance maps",
            "H x W (px)": " and ".join(sorted({size_range(f) for f in image_folders})),
            "train / val / test": " / ".join(str(len(d)) for d in splits.values()) + f" (published: {published}; val from train)",
            "source, licence": PROVENANCE[name]}
    columns = ["images", "what", "H x W (px)", "train / val / test", "source, licence"]
    display(Markdown(figures.markdown_table(table, row_names=list(table), column_names=columns, fmt=str, corner="real set")))
else:
    print("../shared/data/real is absent: this chapter shows the synthetic stand-ins only")

# %% [markdown]
# ## CEM500K: unlabelled cellular EM (the paper's pretraining set)
#
# CEM500K is a folder tree of single-channel uint8 TIFF patches cut from 2D and
# 3D cellular EM of many sources. The paper pretrains on subsets of 50k, 100k and
# 200k of them and holds out 5000 for validation and 5000 for testing (Table 1).
# `emlib.data.CEM500K` draws this split once with a seed and writes it to a JSON
# manifest that every later run reuses; its SHA-256 goes into each model card.
# The train list of the manifest is shuffled and a subset takes its first n
# files, so the 50k subset lies inside the 100k one, which lies inside the 200k one.
# The counts below are those of the synthetic stand-in in CEM500K's format.

# %%
splits = {s: data.CEM500K(root / "cem500k", split=s, image_size=image_size, seed=seed) for s in ("train", "val", "test")}
print(f"images per split ({label}):", {s: len(d) for s, d in splits.items()})
print("paper, Table 1:", {row["dataset"]: (row["train"], row["validation"], row["test"])
                          for row in paper.load_splits() if row["dataset"] == "CEM500K"})
print("manifest sha256:", splits["train"].manifest_hash[:16], "...")

# %%
# NBVAL_IGNORE_OUTPUT
# (the output depends on whether the real data files are present)
rows = [(label, [splits["val"][i][0].numpy() for i in range(n_show)])]
if real:
    examples = sorted((real / "cem500k_examples").glob("*.tif*"))[:n_show]
    rows.append(("real data (cem500k_examples)", [tifffile.imread(p) for p in examples]))
fig, axes = plt.subplots(len(rows), n_show, figsize=(2.2 * n_show, 2.4 * len(rows)), squeeze=False)
for ax_row, (row_label, images) in zip(axes, rows):
    show_row(ax_row, images, [f"{row_label}\n{im.shape[0]}x{im.shape[1]}" for im in images])
fig.suptitle(f"Cellular EM patches in CEM500K's format: {label} (top)" + (", real CEM500K examples (bottom)" if real else ""))
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Real cellular EM: four sources
#
# The real pretraining folder mixes four kinds of cellular EM: serial-section SEM
# of mussel tissue (most of the patches), ssTEM of *Drosophila* brain (CREMI) and
# ventral nerve cord (ISBI 2012), and a few genuine CEM500K patches. Each row
# below shows patches of one source as `ImageFolder` delivers them for
# pretraining (float in [0, 1]). The sources differ in contrast, texture and
# scale far more than the synthetic stand-in varies, which is the point of
# pretraining on a mixture.

# %%
# NBVAL_IGNORE_OUTPUT
# (the output depends on whether the real data files are present)
if real:
    by_source = {}
    for index, file in enumerate(cells["train"].sources):
        by_source.setdefault(file.split("/")[0], []).append(index)
    rows = [(f"real data (cellular_em/{name})", [cells["train"][i][0] for i in by_source[name][:n_show]])
            for name in ("mussel", "cremi", "isbi", "cem500k")]
    title = "Real cellular EM patches, one row per source (real data: cellular_em, train split)"
else:
    rows = [("synthetic stand-in", [splits["train"][i][0] for i in range(n_show)])]
    title = "Cellular EM patches (synthetic stand-in: ../shared/data/real is absent)"
fig, axes = plt.subplots(len(rows), n_show, figsize=(2.2 * n_show, 2.3 * len(rows)), squeeze=False)
for ax_row, (row_label, images) in zip(axes, rows):
    show_row(ax_row, images, [row_label] * len(images))
fig.suptitle(title)
plt.tight_layout()
plt.show()

# %% [markdown]
# Patches at the border of a volume can be narrower than 224 pixels (the real
# `example5.tiff` is 224 x 138). The loader never crashes on them: a short side is
# mirror-padded up to `image_size`, then the image is cropped to a square (at a
# random position for training, at the centre for validation and test).

# %%
# NBVAL_IGNORE_OUTPUT
# (the output depends on whether the real data files are present)
from emlib.data.images import crop, pad_to_at_least

if real and (real / "cem500k_examples/example5.tiff").exists():
    edge, edge_label = tifffile.imread(real / "cem500k_examples/example5.tiff"), "real data (cem500k_examples)"
else:
    edge = next(im for im in (tifffile.imread(p) for p in sorted((root / "cem500k").rglob("*.tif*"))) if min(im.shape) < 224)
    edge_label = label
padded = crop(pad_to_at_least(edge / 255.0, image_size), image_size, random=False)
fig, axes = plt.subplots(1, 2, figsize=(5, 2.6))
show_row(axes, [edge, padded], [f"{edge_label}\n{edge.shape[0]}x{edge.shape[1]}", f"as loaded {padded.shape[0]}x{padded.shape[1]}"])
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
fig.suptitle(f"Corruption pairs of pretraining ({label}, seed {seed})")
plt.tight_layout()
plt.show()
print("mean |A - B| per image:", np.round((corrupted - target).abs().mean(dim=(1, 2, 3)).numpy(), 4))

# %% [markdown]
# ### Explore the corruption
#
# How much damage is a noise standard deviation of 0.05, or a blur of 2 pixels?
# The grid below applies fixed settings to one patch (a real one when the real
# data is present): each row one blur sigma, each column one noise standard
# deviation (on the [0, 1] intensity scale), with the mean |A - B| the generator
# starts from; the bottom row toggles the flip and the rotation, which turn input
# and target alike. Pretraining draws noise from [0, 0.1] (for 80 % of the images)
# and blur from [0, 2] px (for half of them), so the last column lies beyond what
# it ever sees. `emlib.explorers.fixed_corruption` makes each setting with
# `Corruption` itself (ranges of zero width, probability 1) and one seed, so the
# noise pattern is the same in every panel.

# %%
# NBVAL_IGNORE_OUTPUT
# (the output depends on whether the real data files are present)
if real:
    val_cells = data.ImageFolder(cells_root, split="val", image_size=image_size, seed=seed)
    index = next((i for i, f in enumerate(val_cells.sources) if f.startswith("cremi/")), 0)  # a CREMI patch if val holds one
    patch, patch_label = val_cells[index], f"real data (cellular_em/{val_cells.sources[index]})"
else:
    patch, patch_label = splits["val"][0], "synthetic stand-in"
fig = explorers.corruption_grid(patch, patch_label, seed=seed)
plt.show()

# %% [markdown]
# With a running kernel (Jupyter, or Colab via the launch button), the explorer
# below sets the noise and the blur with sliders and toggles the flip and the
# rotation; it draws the corrupted input A beside the clean target B. In the
# built book it is frozen at its first setting: the grid above stands in for it.

# %% tags=["skip-execution"]
# NBVAL_SKIP
# An interactive widget: it needs a live kernel (Jupyter, Colab). Builds of the book and
# the notebook tests skip it (headless execution of widgets can deadlock); the grid above stands in.
explorers.corruption_explorer(patch, patch_label, seed=seed) if show_widgets else None

# %% [markdown]
# ## Au nanoparticles: HRTEM segmentation (the paper's segmentation sets)
#
# Sytwu et al. {cite:p}`sytwu2022receptive` recorded gold particles of 2.2, 5 and
# 10 nm (aberration-corrected TEAM 0.5, lattice fringes visible) and 20 nm (lower
# magnification, no fringes), and labelled every particle pixel. Each set is a
# pair of HDF5 files `<tag>_Images.h5` / `<tag>_Labels.h5`. The paper adds a
# fifth, older set of 5 nm particles from Groschner et al.
# {cite:p}`groschner2021pipeline` ("Au5nmV1"), stored as already-cut 512 x 512
# images with one-hot masks. The table `emlib.data.AU_DATASETS` maps the paper's
# names to these files. The images below are synthetic stand-ins in these formats.

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
# 2. **standardisation**: each image to mean 0, standard deviation 1 (`standardize`);
# 3. **tiles**: 512 x 512 pieces (`tile_image`), dropping those with 400 or fewer
#    particle pixels (`keep_tile`): almost pure background teaches little.
#
# Training then crops 448 x 448 at random and applies one of the 8 flips/rotations.

# %%
tag = data.AU_DATASETS["Au5nm"]["tag"]
masks = au_prep.read_masks(root / "au", "Au5nm")
_, raw = next(au_prep.read_images(root / "au", "Au5nm", [0]))
cleaned = au_prep.remove_xray_spikes(raw, data.AU_DATASETS["Au5nm"]["spike_threshold"])
tiles = au_prep.tile_image(au_prep.standardize(cleaned), masks[0])
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
fig.suptitle(f"Sytwu preprocessing of one Au5nm image ({label})")
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
fig.suptitle(f"The five Au datasets ({label}): standardised tile and mask")
plt.tight_layout()
plt.show()
print(f"tiles per split ({label}):", counts)
print("paper, Table 1:", {row["dataset"]: (row["train"], row["validation"], row["test"])
                          for row in paper.load_splits() if row["dataset"].startswith("Au")})

# %% [markdown]
# ## Real nanoparticles: images and masks
#
# The paper's Au sets are not reachable without internet; two real nanoparticle
# sets with manual labels take their place in the experiments on real pixels.
# `emlib.data.dataset_folder(name, data_root)` finds each set's folder and
# `SegmentationFolder` pairs every image with its mask (by file stem; msa's
# `image_N` goes with `label_N`). msa_segtrack is bright-field TEM: particles are
# dark on a noisy amorphous support. EMPS collects crops of published TEM and SEM
# figures, so contrast, scale and scale bars vary from image to image; its masks
# are instance maps (one id per particle, shown in colour), which segmentation
# reads as binary (id > 0). Images are standardised per image, as Sytwu's Au tiles.

# %%
# NBVAL_IGNORE_OUTPUT
# (the output depends on whether the real data files are present)
nano_sets = {}
for name, masks in (("msa_segtrack", "binary"), ("emps", "instances")):
    folder, nano_source = data.dataset_folder(name, real / "nanoparticles" if real else None, verbose=False)
    nano_sets[name] = (data.SegmentationFolder(folder, split="train", masks=masks, seed=seed),
                       f"real data ({name})" if nano_source == "real" else f"synthetic stand-in ({name} layout)")
n_pairs = 3
fig, axes = plt.subplots(len(nano_sets), 2 * n_pairs, figsize=(2.1 * 2 * n_pairs, 2.5 * len(nano_sets)), squeeze=False)
for ax_row, (name, (dataset, set_label)) in zip(axes, nano_sets.items()):
    for k, index in enumerate(np.linspace(0, len(dataset) - 1, n_pairs).astype(int)):
        image, mask = dataset[index]
        ax_image, ax_mask = ax_row[2 * k], ax_row[2 * k + 1]
        show_row([ax_image], [image[0]], [f"{set_label}\n{image.shape[1]}x{image.shape[2]}"])
        ax_image.contour(mask[0], levels=[0.5], colors="gold", linewidths=0.5)
        if dataset.masks == "instances":
            ids = read_raw(dataset.pairs[index][1])
            n_particles = len(np.unique(ids)) - 1
            show_row([ax_mask], [np.ma.masked_equal(ids, 0)], [f"instance map: {n_particles} particle{'s' * (n_particles != 1)}"],
                     cmap="tab20")
            ax_mask.set_facecolor("black")
            ax_mask.axis("on"), ax_mask.set_xticks([]), ax_mask.set_yticks([])
        else:
            show_row([ax_mask], [mask[0]], [f"binary mask: {mask.mean().item():.0%} particle"])
fig.suptitle("Nanoparticle images (particle outlines in gold) and their masks: "
             + ", ".join(set_label for _, set_label in nano_sets.values()))
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Intensities: real images and synthetic stand-ins
#
# All loaders map intensities to [0, 1] by one rule (`emlib.data.images`: uint8 /
# 255; wider types by the range an image uses). The histograms compare the real
# images with the synthetic stand-ins of the same kind, on that scale, before
# any standardisation: up to `histogram_images` images per set.

# %%
# NBVAL_IGNORE_OUTPUT
# (the output depends on whether the real data files are present)
bins = np.linspace(0, 1, 65)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
ax = axes[0]
synthetic_cells = data.ImageFolder(data.ensure_synthetic() / "cem500k", split="train", image_size=image_size, seed=seed)
ax.hist(np.concatenate([synthetic_cells[i].numpy().ravel() for i in range(min(histogram_images, len(synthetic_cells)))]),
        bins, density=True, histtype="step", color="k", ls=":", lw=1.5, label="synthetic stand-in (CEM500K format)")
if real:
    for name, indices in by_source.items():
        ax.hist(np.concatenate([cells["train"][i].numpy().ravel() for i in indices[:histogram_images]]), bins,
                density=True, histtype="step", label=f"real data (cellular_em/{name})")
ax.set_title("Cellular EM: " + ("real data (cellular_em) vs synthetic stand-in" if real else "synthetic stand-in"))
ax = axes[1]
for name, colour in zip(nano_sets, ("tab:blue", "tab:green")):
    for which in (("real", "synthetic") if real else ("synthetic",)):
        folder, _ = data.dataset_folder(name, real / "nanoparticles" if which == "real" else None, verbose=False)
        images = [image for image, _ in data.SegmentationFolder(folder, split="train", seed=seed).pairs[:histogram_images]]
        set_label = f"real data ({name})" if which == "real" else f"synthetic stand-in ({name} layout)"
        ax.hist(np.concatenate([read_unit(p).ravel() for p in images]), bins, density=True, histtype="step",
                color=colour, ls="-" if which == "real" else ":", lw=1.5, label=set_label)
ax.set_title("Nanoparticles: " + ("real data (msa_segtrack, emps) vs synthetic stand-ins" if real else "synthetic stand-ins"))
for ax in axes:
    ax.set_xlabel("intensity ([0, 1] scale of the loaders)")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown]
# The real sets are far more varied than their stand-ins. Each cellular source has
# its own intensity profile: the mussel SEM patches are bright with dark
# membranes, the CREMI tiles rarely go above 0.7 (their brightest pixel is about
# 180 of 255), ISBI spans almost the whole range. The synthetic CEM500K stand-in is
# one smooth bump in the middle. Among the nanoparticles, msa_segtrack is a grey
# support with a tail of dark particles, while EMPS, crops of figures from many
# microscopes and papers, covers the whole range, with white backgrounds, labels
# and scale bars at both ends. The synthetic nanoparticle stand-ins are narrow
# and bright. Segmentation standardises every image (mean 0, std 1), which
# removes offset and scale but not these shapes: one more reason why numbers
# measured on the stand-ins say nothing about real micrographs.

# %% [markdown]
# ## TEMImageNet: restoration of atomic-resolution images
#
# TEMImageNet {cite:p}`lin2021temimagenet` simulates annular dark-field STEM
# images of eight materials with scan and Poisson noise and a low-frequency
# background, and stores for each noisy input (`image/NNNNN.png`) several label
# images with the same ID. The paper's three restoration tasks read three of the
# label folders (`emlib.data.TEMIMAGENET_TASKS`; the super-resolution folder is
# our reading of the names). The figure shows synthetic stand-ins in this format and,
# below them, two real TEMImageNet inputs where the real data is present.

# %%
for task, (inputs, target) in data.TEMIMAGENET_TASKS.items():
    print(f"{task:25s} {inputs}/ -> {target}/")
sets = {task: data.TEMImageNet(root / "temimagenet", task, split="test", seed=seed) for task in data.TEMIMAGENET_TASKS}
print(f"{label} split sizes:", {s: len(data.TEMImageNet(root / "temimagenet", "denoising", s, seed)) for s in ("train", "val", "test")},
      "| paper, Table 1: 10377 / 1832 / 2155")

# %%
# NBVAL_IGNORE_OUTPUT
# (the output depends on whether the real data files are present)
n_rows = 2 + (1 if real else 0)
fig, axes = plt.subplots(n_rows, 4, figsize=(9, 2.4 * n_rows))
for row in range(2):
    inputs, _ = sets["denoising"][row]
    targets = [sets[task][row][1][0] for task in data.TEMIMAGENET_TASKS]
    show_row(axes[row], [inputs[0], *targets], [f"{label} input", *data.TEMIMAGENET_TASKS])
if real:
    pngs = sorted((real / "temimagenet_inputs").glob("*.png"))
    show_row(axes[2], [np.asarray(Image.open(p)) for p in pngs], [f"real data (temimagenet_inputs)\n{p.stem}" for p in pngs])
    for ax in axes[2, len(pngs):]:
        ax.axis("off")
fig.suptitle(f"ADF-STEM inputs and labels ({label})" + ("; bottom: real data (temimagenet_inputs)" if real else ""))
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Summary
#
# - `CEM500K`, `AuSegmentation` and `TEMImageNet` read the paper's on-disk formats;
#   `ensure_synthetic()` writes small look-alikes in the same formats, so every
#   chapter of this book runs on a laptop, and on the paper's data when given `data_root`.
# - `ImageFolder` and `SegmentationFolder` read real data as users have it: the
#   real cellular EM patches of four sources, and the msa_segtrack and EMPS
#   nanoparticle images with binary or instance masks, in their published splits.
# - All splits are seeded and reproducible and stored in manifests outside the
#   data folders.
# - `Corruption` defines the pretraining task: noise and blur on the input,
#   flips and rotations on input and target alike; `emlib.explorers` shows fixed
#   settings of it as a grid and as an interactive widget.
#
# The synthetic images only *look* like real ones: numbers computed on them say
# that the code works, not how well a model does on electron micrographs. The
# real sets are real micrographs, but small and not the paper's: results on them
# are real-data results at small scale, not a reproduction of the paper's numbers.
