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
# # Segmenting nanoparticles
#
# The first downstream task of the paper is semantic segmentation: in a
# high-resolution TEM image of gold nanoparticles on amorphous carbon, mark
# every pixel that belongs to a particle. Inside a particle the atoms sit on a
# lattice and show up as fringes; the carbon around it is a structureless
# speckle. A network has to learn that difference in *texture*, not in
# brightness, which is why Sytwu et al. {cite:p}`sytwu2022receptive` studied how
# much context (receptive field) a U-Net needs for it.
#
# The paper fine-tunes the generators of its GAN pretraining on this task and
# compares them with the same networks trained from random weights. Its recipe
# (section 4.2) and the values it leaves open, which are ours (see the table of
# choices in {doc}`../book/reproduction_status`):
#
# - data: 512 x 512 tiles of five Au datasets, split 60/20/20. We split the
#   *micrographs* before tiling, as Sytwu et al. did, so that no micrograph has
#   tiles on both sides of a split;
# - augmentation: "various types of noise, flips, rotations, resizing, and random
#   cropping to 448". The paper gives no ranges; ours are in `emlib.data.augment`:
#   a random rescaling by 0.75-1.33 (masks nearest-neighbour), the crop, one of
#   the 8 flips/rotations, and Gaussian or Poisson-like noise on the image;
# - loss: binary cross-entropy on the logits; optimiser Adam, lr 2e-4; 60 epochs;
# - an **epoch** is the paper's Table 1 train count of images. For four of the
#   five Au sets that is about 8x the number of tiles Sytwu's filtering keeps,
#   because Sytwu's preprocessing saved the 8 flips/rotations of each tile as
#   separate images; so `epoch_size="paper"` draws that many augmented crops per
#   epoch (about 8 passes over the tiles), and the paper's "epoch 5" means the
#   same number of gradient steps in our runs;
# - every 5 epochs the model is scored on the validation split and the best one is
#   kept; the tables report the *test* Dice of that best model at each 5-epoch mark;
# - metric: the Dice score per image on the hard mask (logit > 0), with +1
#   smoothing, averaged over the test images, in percent (Sytwu's
#   `compute_hard_dice`):
#
# $$\mathrm{Dice} = \frac{2\,|P \cap G| + 1}{|P| + |G| + 1}.$$
#
# `emlib.finetune` runs this loop. The same loop reads the real nanoparticle
# sets of this project (`msa_segtrack`, `emps`, see {doc}`01_data`) and any folder
# of images and masks (`dataset="folder"`). Below we run it on a CPU budget;
# **unless you pass real data, everything in the first part is a toy run on
# synthetic data, not a reproduction**. The last part shows our small real-data
# study.

# %%
import sys, subprocess
if "google.colab" in sys.modules:  # install emlib on Colab only
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "emlib[book] @ git+https://github.com/emlib-book/emlib"], check=True)
import torch
print("device:", "cuda" if torch.cuda.is_available() else "cpu")

# %% [markdown]
# The next cell holds the run's parameters. Its names are the fields of
# `emlib.finetune.FinetuneConfig`, so `papermill 04_segmentation.ipynb out.ipynb
# -p dataset emps -p init results/real_small/pretrain-unet_2_44-preal -p epochs 60 ...`
# runs exactly the run that `python -m emlib finetune --dataset emps --init ...
# --epochs 60` makes, into the same run folder; the executed notebook is that
# run's report. The values here are CPU toy settings; the paper's are in the comments.

# %% tags=["parameters"]
task = "segmentation"
model = "unet_2_44"  # paper: the nine U-Nets and HRNet, e.g. "unet_4_424", "hrnet_w44"
init = "random"  # "random" or a pretrained generator.safetensors (or its run folder)
head = None  # output head of a pretrained init; None: the task default (segmentation: reinit, restoration: transfer)
dataset = "Au5nmV1"  # paper: Au5nmV1, Au2.2nm, Au5nm, Au10nm, Au20nm; real: msa_segtrack, emps; or "folder"
data_root = None  # None: synthetic data; e.g. "../shared/data/real/nanoparticles" or the folder of the Au HDF5 files
images_dir = None  # dataset "folder": your folder of images, named outright (with masks_dir)
masks_dir = None  # dataset "folder": the folder of their masks
crop = 96  # paper: 448
eval_crop = None  # None: score whole images (paper)
downsample = 1  # 2: read images and masks at half their size per side (real_small.yaml does)
batch_size = 4  # paper: not stated (FinetuneConfig default 16)
epochs = 8  # paper: 60
epoch_size = 24  # paper: "paper" (Table 1's train count)
lr = 3e-3  # paper: 2e-4 (a larger step so that a few toy steps show learning)
optimizer = "adam"  # paper: Adam
weight_decay = 0.0
eval_every = 1  # paper: 5
eval_dense_epochs = 0  # also evaluate after each of the first n epochs
lr_drops = 0  # divide the lr by 10 this many times, each when the best validation score is patience epochs old
patience = 10
plateau_stop = None  # 0.33: stop once the last third of the epochs brought no better validation score
min_epochs = 0  # plateau_stop never stops before this epoch
label_fraction = 1.0  # paper: 1.0
augment_dihedral = True  # paper: flips, rotations
augment_resize = True  # paper: resizing
augment_noise = True  # paper: "various types of noise"
test = True
seed = 0
split_seed = 0
device = "auto"  # the GPU when there is one (Colab), else the CPU
amp = "cuda"  # mixed precision on a GPU only ("cuda"); the CPU runs stay fp32, the same numbers on every CPU; or True, False, "auto"
channels_last = "cuda"  # on a GPU only; or True, False, "auto"
compile = False
workers = 0  # paper-scale runs: 4-8
deterministic = "cpu"  # exact, repeatable runs on the CPU ("cpu": there only; some CUDA kernels have no deterministic version)
output_dir = "runs/04_segmentation"
# Display switches (not config fields):
compare_init = "toy"  # a second run from this init for comparison: "toy" (pretrain a tiny generator here), a path, or None
real_results = "results/real_small"  # the committed real-data study to show at the end; None to skip
resume = False  # continue an interrupted run from output_dir/checkpoint.pt (as the CLI's --resume)

# %%
import dataclasses
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import Markdown, display

import emlib
from emlib import finetune, paper, pretrain, results, runs, session
from emlib.figures import markdown_table
from emlib.metrics import dice_scores

amp, channels_last, deterministic = (session.on_device(v, device) for v in (amp, channels_last, deterministic))
if session.select_device(device).type == "cpu":
    torch.set_num_threads(1)  # the same numbers whatever the core count (toy-sized tensors gain little from threads)

config = finetune.FinetuneConfig(**{f.name: globals()[f.name] for f in dataclasses.fields(finetune.FinetuneConfig)})
folder, source = finetune.resolve_data_root(config)
run_label = "toy run on synthetic data, not a reproduction" if source == "synthetic" else "run on real data"
splits = finetune.build_datasets(config, folder)
print(f"data: {source} | {dataset}: {len(splits['train'])} train, {len(splits['val'])} val, {len(splits['test'])} test images"
      f" | an epoch: {finetune.epoch_items(config, len(splits['train']))} augmented crops")

# %% [markdown]
# ## The data
#
# Each validation and test item is a whole standardised image (mean 0, standard
# deviation 1) and its binary mask; the Au sets' images are 512 x 512 tiles.

# %%
fig, axes = plt.subplots(1, 4, figsize=(11, 3))
for i in range(2):
    image, mask = splits["val"][i % len(splits["val"])]
    axes[2 * i].imshow(image[0], cmap="gray")
    axes[2 * i + 1].imshow(mask[0], cmap="gray", vmin=0, vmax=1)
    axes[2 * i].set_title(f"val image {i}"), axes[2 * i + 1].set_title(f"mask {i}")
for ax in axes:
    ax.axis("off")
fig.suptitle(f"{dataset} validation images ({source} data)")
plt.show()

# %% [markdown]
# ## One augmented batch
#
# Training items are drawn through `emlib.data.PairAugment` (torchvision
# `transforms.v2`): the same random rescaling, crop, flip and rotation for the
# image and its mask (the mask resized nearest-neighbour, so it stays binary), then
# noise on the image only. Each item's randomness is seeded by (seed, epoch,
# index), so a batch is reproducible and a resumed run sees the same crops.

# %%
batch = finetune.augmented_batch(splits["train"], seed, size=8)  # 8 items, cycling over the train images
fig, axes = plt.subplots(2, 8, figsize=(13, 3.5))
for i, (image, mask) in enumerate(batch):
    axes[0, i].imshow(image[0], cmap="gray")
    axes[1, i].imshow(mask[0], cmap="gray", vmin=0, vmax=1)
for ax in axes.flat:
    ax.axis("off")
fig.suptitle(f"8 augmented training crops of {dataset} and their masks ({source} data, {crop} px)")
plt.show()

# %% [markdown]
# ## Two initialisations
#
# The run of this notebook starts from `init`; for comparison we run the same
# config from a second initialisation (`compare_init`). A pretrained start is a
# generator exported by `emlib.pretrain` (`generator.safetensors` +
# `model_card.json`, see {doc}`03_pretraining`); `"toy"` makes one here with the toy
# pretraining preset, a few dozen Pix2Pix steps on synthetic cellular EM.
# Fine-tuning loads every tensor whose name and shape match
# (`emlib.models.transfer_weights`); a file of another architecture is refused.

# %%
# NBVAL_IGNORE_OUTPUT
configs = {init if init == "random" else "pretrained": config}
if compare_init is not None:
    other = pretrain.toy_generator(model, f"{output_dir}-pretrain", seed=seed) if compare_init == "toy" else compare_init
    configs["pretrained" if init == "random" else "random"] = dataclasses.replace(
        config, init=str(other) if init == "random" else "random", output_dir=f"{output_dir}-compare")
summaries = {name: finetune.run(c, resume=resume and c is config) for name, c in configs.items()}

# %%
for name, summary in summaries.items():
    print(f"{name:>10}: init tag {summary['init']!r}, {summary['transferred_tensors']} tensors transferred, "
          f"best epoch {summary['best_epoch']}, val Dice {summary['best_val_dice_percent']:.1f}%, "
          f"test Dice {summary['test_dice_percent']:.1f}%")

# %% [markdown]
# ## Validation Dice per epoch
#
# The analog of the paper's Figs. 6-9, which compare validation curves of
# pretrained and random starts over 60 epochs. In the paper the pretrained
# models are ahead early on and oscillate less; a toy run on synthetic data
# can show the mechanics, not confirm or refute that.

# %%
fig, ax = plt.subplots(figsize=(5.5, 3.4))
for name, c in configs.items():
    rows = results.read_rows(Path(c.output_dir) / "validation.csv")
    ax.plot([int(r["epoch"]) for r in rows], [float(r["dice_percent"]) for r in rows], marker="o", label=name)
ax.set_xlabel("epoch"), ax.set_ylabel("validation Dice (%)")
ax.set_title(f"{results.paper_model_name(model)} on {dataset}\n({run_label}; cf. paper Figs. 6-9)", fontsize=10)
ax.legend()
plt.show()

# %% [markdown]
# ## Example predictions
#
# The analog of the paper's Figs. 10 and 15-18: image, ground truth and the
# predictions of the best model of each run, on test images. `emlib.predict`
# runs a model on an image of any size by overlapping tiles; the overlap comes
# from the model's receptive field, so the result equals one whole-image pass.
# The output is the logit map, thresholded at 0.

# %%
best = {name: runs.load_finetuned(c.output_dir)[0] for name, c in configs.items()}
n_show = min(2, len(splits["test"]))
fig, axes = plt.subplots(n_show, 2 + len(best), figsize=(2.6 * (2 + len(best)), 2.6 * n_show), squeeze=False)
for row in range(n_show):
    image, mask = splits["test"][row]
    panels = {"image": image[0], "ground truth": mask[0]}
    for name, net in best.items():
        logits = torch.from_numpy(emlib.predict(net, image[0], standardize=None, amp=amp))
        panels[f"{name}: Dice {100 * dice_scores(logits, mask[0]).item():.1f}%"] = (logits > 0).float()
    for col, (title, panel) in enumerate(panels.items()):
        axes[row, col].imshow(panel, cmap="gray")
        axes[row, col].set_title(title, fontsize=9)
        axes[row, col].axis("off")
fig.suptitle(f"Test images, best models ({run_label}; cf. paper Figs. 10, 15-18)", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Test Dice in the paper's layout
#
# The paper's Tables 2-6 give, for every model and initialisation, the test
# Dice of the best model so far at epochs 5, 10, ..., 60. Our runs write the
# same rows to `results.csv` (the schema of `emlib.results`, with `source`
# saying where the numbers come from), so they can be set beside the paper's.
# First our runs (one column per evaluation), then the paper's rows for the
# same model and dataset when it is one of the paper's.

# %%
ours = {}
for name, c in configs.items():
    for row in results.read_rows(Path(c.output_dir) / "results.csv"):
        ours.setdefault(f"{row['model']} {row['init']}", {})[row["epoch"]] = float(row["dice_percent"])
epochs_ours = sorted({e for r in ours.values() for e in r}, key=int)
display(Markdown(f"**Ours: test Dice (%) of the best model so far** ({dataset}, {run_label})\n\n"
                 + markdown_table(ours, row_names=list(ours), column_names=epochs_ours, fmt="{:.1f}", corner="epoch")))

if dataset in paper.table_numbers():
    theirs = {}
    for row in paper.load_segmentation():
        if row["dataset"] == dataset and row["model"] == results.paper_model_name(model):
            theirs.setdefault(f"{row['model']} {row['init']}", {})[str(row["epoch"])] = row["dice_percent"]
    epochs_paper = sorted({e for r in theirs.values() for e in r}, key=int)
    display(Markdown(f"**Paper, Table {paper.table_numbers()[dataset]}: test Dice (%)** ({dataset}, 60 epochs on the real data)\n\n"
                     + markdown_table(theirs, row_names=list(theirs), column_names=epochs_paper, fmt="{:.1f}", corner="epoch")))

# %% [markdown]
# ## Use the model outside emlib: a BioImage.IO package
#
# Microscopists run models in deepImageJ, ilastik, napari and the BioImage Model
# Zoo, which read the community's [BioImage.IO](https://bioimage.io) model format.
# `emlib.bioimageio.export` (or `python -m emlib export bioimageio RUN_DIR --out
# FILE.zip`) turns a finished run folder into such a package: TorchScript and
# state-dict weights, the preprocessing emlib applies (per-image standardisation)
# and the postprocessing (sigmoid, threshold 0.5) declared in the description, a
# test image with emlib's output for it, a cover and a README that says what the
# model is, down to its scale (a model trained here on synthetic data is labelled a
# toy, not for use). The real-data study's best models and generators are exported
# the same way into `results/real_small/bioimageio/`.
#
# To open one: in Fiji, *DeepImageJ Install Model* and choose the zip; in ilastik,
# the *Neural Network Classification* workflow; in napari, the bioimageio plugin.
# Below, the package is loaded back with `bioimageio.core` (the community's own
# library) and run on an image, beside `emlib.predict` on the same image. The
# package shown is the real-data study's best EMPS model, chosen on validation
# (never on test) by `emlib.sweep.best_runs`, when the study is there; otherwise
# the toy model trained above.

# %%
# NBVAL_IGNORE_OUTPUT
from emlib import bioimageio as emlib_bioimageio
from emlib import scoring, study, sweep
from emlib.data.images import read_raw

study_folders = results.results_folders(real_results) if real_results else []
best = sweep.best_runs(study_folders[0]).get("emps") if study_folders else None
if best is not None:  # the study's best EMPS model, on a real test image of its dataset
    run_folder, package = best, best.parent / "bioimageio" / f"{best.name}.zip"
    if not package.is_file():  # the sweep packages its best models when it ends; until then, package it here
        package = emlib_bioimageio.export(best, Path(f"{output_dir}-{best.name}-bioimageio.zip"))
else:  # the model trained above
    package = emlib_bioimageio.export(config.output_dir, Path(f"{output_dir}-bioimageio.zip"))
    run_folder = Path(config.output_dir)
net, run_config = runs.load_finetuned(run_folder)
# A run's data_root is relative to where it ran (the repository root); find it from here.
found = results.results_folders(run_config.data_root) if run_config.data_root else []
run_config = dataclasses.replace(run_config, data_root=str(found[0]) if found else run_config.data_root)
try:
    test_set = finetune.build_datasets(run_config, finetune.resolve_data_root(run_config)[0])["test"]
except FileNotFoundError:  # the run's data is not on this machine (a pip install, Colab): the package's test image
    test_set = None
image_path = getattr(test_set, "pairs", None)
print(f"package: {package.name} ({package.stat().st_size / 1e6:.2f} MB), from the run {run_folder.name}")

# %%
# NBVAL_IGNORE_OUTPUT
# (bioimageio.core's warnings name files of the local installation)
import io
import warnings
import zipfile

import bioimageio.core
import numpy as np

if image_path:  # a file of the test split, as a user has it (8-bit pixels)
    raw = read_raw(image_path[0][0]).astype("float32")
elif test_set is not None:  # an Au tile from HDF5: the standardised tile is the input (standardisation is scale-free)
    raw = test_set[0][0][0].numpy()
else:  # the test image stored in the package
    with zipfile.ZipFile(package) as archive:
        raw = np.load(io.BytesIO(archive.read("test_input.npy")))[0, 0]
multiple = finetune.registry_model(net).size_multiple
raw = raw[: raw.shape[0] // multiple * multiple, : raw.shape[1] // multiple * multiple]
from bioimageio.spec.model.v0_5 import AxisId, TensorId

# The whole image as one block: blockwise prediction would standardise each block on its own statistics.
whole = {TensorId("input"): {AxisId("y"): raw.shape[0], AxisId("x"): raw.shape[1]}}
with warnings.catch_warnings():  # bioimageio.core 0.11 pre-fills its output (Sample.from_blocks) with a value
    warnings.filterwarnings("ignore", "invalid value encountered in cast", RuntimeWarning)  # the blocks overwrite
    sample = bioimageio.core.predict(model=str(package), inputs=raw[None, None], input_block_shape=whole)
theirs = next(iter(sample.members.values())).data.to_numpy()[0, 0] > 0.5
ours = emlib.predict(net, raw, standardize="per_image", amp=False) > 0  # fp32, as the package runs
fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
for ax, panel, title in zip(axes, (raw, ours, theirs), ("input", "emlib.predict", "bioimageio.core.predict")):
    ax.imshow(panel, cmap="gray")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
source_label = "real data" if run_config.data_root else "synthetic data, toy model"
fig.suptitle(f"The package {package.name} run by bioimageio.core and by emlib ({source_label})", fontsize=10)
plt.show()
halo = emlib_bioimageio.output_halo(finetune.registry_model(net), min(raw.shape))
inner = (slice(halo, -halo), slice(halo, -halo))
print(f"pixels where the two masks differ: {(ours[inner] != theirs[inner]).mean():.4%} more than {halo} px "
      f"(the package's halo) from the border, {(ours != theirs).mean():.4%} in all: near the border bioimageio.core "
      "pads the input symmetrically, while emlib's whole-image pass sees the network's own zero padding")

# %% [markdown]
# Is the model worth packaging? Its test Dice (the best-by-validation model of
# its run) beside the training-free baseline on the same test split: a per-image
# Otsu threshold, its polarity (dark or bright particles) chosen on the train split
# (`emlib.scoring`), and when its run set its best validation score (in the last fifth
# of training, the run was still learning when it stopped, and a longer run would
# likely have scored higher). Then one test image a reader can judge: the image, its ground
# truth, Otsu's mask and the model's mask, side by side (the image of median model
# Dice among the first few of the test split, so neither the best nor the worst;
# without the study's data on the machine, as after a pip install, the package's own
# test image, which has no ground truth).

# %%
# NBVAL_IGNORE_OUTPUT
baseline_file = next((Path(f) / "baselines.csv" for f in study_folders if (Path(f) / "baselines.csv").is_file()), None)
otsu_rows = [r for r in (results.read_rows(baseline_file) if baseline_file else [])
             if r["dataset"] == run_config.dataset and r["baseline"] == "otsu"]
if not otsu_rows:  # no study beside the model: compute the baseline here, on the model's own data
    otsu_rows = [r for r in scoring.baselines(run_config.dataset, finetune.resolve_data_root(run_config)[0])
                 if r["baseline"] == "otsu"]
polarity, otsu_dice = otsu_rows[0]["polarity"], float(otsu_rows[0]["dice_percent"])
summary = runs.read(run_folder).summary
print(f"{run_folder.name}: test Dice {summary.get('test_dice_percent', float('nan')):.1f} % on {run_config.dataset}'s "
      f"test split; Otsu ({polarity} particles, no training): {otsu_dice:.1f} %")
print(f"its best validation score came at epoch {summary['best_epoch']} of {summary['epochs']}"
      + (": it was still learning when it stopped" if study.still_learning(summary) else ""))


def masks_of(index):
    """(image, truth, Otsu's mask, the model's mask) of one test image, as (H, W) arrays."""
    image, truth = test_set[index]
    image = image[0].numpy()
    return image, truth[0].numpy() > 0.5, scoring.otsu_mask(image, polarity), emlib.predict(net, image, standardize=None, amp=amp) > 0


def dice_of(predicted, truth):
    return 100 * dice_scores(torch.from_numpy(predicted).float() * 2 - 1, torch.from_numpy(truth).float()).item()


if test_set is not None:
    shown = [masks_of(i) for i in range(min(5, len(test_set)))]
    image, truth, otsu, ours = sorted(shown, key=lambda m: dice_of(m[3], m[1]))[len(shown) // 2]
    panels = ((image, "test image"), (truth, "ground truth"), (otsu, f"Otsu: Dice {dice_of(otsu, truth):.1f} %"),
              (ours, f"model: Dice {dice_of(ours, truth):.1f} %"))
else:  # the study's data is not on this machine (a pip install): the package's test image, which has no ground truth
    otsu = scoring.otsu_mask(raw, polarity)  # beside `ours`, the model's mask of the same image from the cell above
    panels = ((raw, "the package's test image"), (otsu, "Otsu's mask"), (ours, "the model's mask"))
fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.4))
for ax, (panel, title) in zip(axes, panels):
    ax.imshow(panel, cmap="gray")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
fig.suptitle(f"{run_folder.name} on {run_config.dataset}'s test split ({source_label})", fontsize=10)
plt.show()
