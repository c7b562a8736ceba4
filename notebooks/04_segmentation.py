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
# # Segmenting Au nanoparticles
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
# compares them with the same networks trained from random weights. The recipe
# (section 4.2 of the paper):
#
# - data: 512 x 512 tiles of five Au datasets, split 60/20/20; training crops of
#   448 x 448 with random flips and rotations;
# - loss: binary cross-entropy on the logits; optimiser Adam, lr 2e-4; 60 epochs;
# - every 5 epochs the model is scored on the validation split and the best one is
#   kept; the tables report the *test* Dice of that best model at each 5-epoch mark;
# - metric: the Dice score per image on the hard mask (logit > 0), with +1
#   smoothing, averaged over the test images, in percent:
#
# $$\mathrm{Dice} = \frac{2\,|P \cap G| + 1}{|P| + |G| + 1}.$$
#
# `emlib.finetune` implements exactly this loop. Below we run it twice, from
# random weights and from a pretrained generator, on a CPU budget. **Unless you
# pass real data, everything here is a toy run on synthetic data, not a
# reproduction**: a few hundred crops, a few epochs, evaluation every epoch.

# %%
import sys, subprocess
if "google.colab" in sys.modules:  # install emlib on Colab only
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "emlib[book] @ git+https://github.com/emlib-book/emlib"], check=True)
import torch
print("device:", "cuda" if torch.cuda.is_available() else "cpu")

# %% tags=["parameters"]
data_root = None  # None = synthetic data (emlib.data.ensure_synthetic); real: the folder with the Au HDF5 files
pretrained = None  # a generator.safetensors (or its folder) from emlib.pretrain; None = run a tiny pretraining here
model = "unet_2_44"  # paper: the nine U-Nets and HRNet, e.g. "unet_4_424", "hrnet_w44"
dataset = "Au5nmV1"  # paper: Au5nmV1, Au2.2nm, Au5nm, Au10nm, Au20nm (Tables 2-6)
crop = 96  # paper: 448 (random crops of the 512 x 512 tiles)
batch_size = 4  # paper: not stated (FinetuneConfig default 16)
epochs = 8  # paper: 60
steps_per_epoch = 6  # paper: None (one pass over the training tiles)
lr = 3e-3  # paper: 2e-4 (a larger step so that a few toy steps show learning)
eval_every = 1  # paper: 5
label_fraction = 1.0  # paper: 1.0
seed = 0
split_seed = 0
device = "cpu"  # paper-scale runs: "auto" or "cuda"
amp = False  # paper-scale runs: True (bf16/fp16 autocast on CUDA)
channels_last = False  # paper-scale runs: True on CUDA
workers = 0  # paper-scale runs: 4-8
output_dir = "runs/04_segmentation"

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

import emlib
from emlib import finetune, paper, pretrain, results
from emlib.figures import markdown_table
from emlib.metrics import dice_scores

if device == "cpu":
    torch.set_num_threads(1)  # the same numbers whatever the core count (toy-sized tensors gain little from threads)

fields = dict(task="segmentation", model=model, dataset=dataset, data_root=data_root, crop=crop, batch_size=batch_size,
              epochs=epochs, steps_per_epoch=steps_per_epoch, lr=lr, eval_every=eval_every,
              label_fraction=label_fraction, seed=seed, split_seed=split_seed, device=device, amp=amp,
              channels_last=channels_last, workers=workers, deterministic=True)
base = finetune.FinetuneConfig.toy(**fields, output_dir=f"{output_dir}/random")
folder, source = finetune.resolve_data_root(base)
run_label = "toy run on synthetic data, not a reproduction" if source == "synthetic" else "run on real data"
splits = finetune.build_datasets(base, folder)
print(f"data: {source} | {dataset}: {len(splits['train'])} train, {len(splits['val'])} val, {len(splits['test'])} test tiles")

# %% [markdown]
# ## The data
#
# Each item is a standardised 512 x 512 tile (mean 0, standard deviation 1) and
# its binary mask. Training draws a random `crop` from a tile and a random one of
# the 8 flips/rotations; validation and test use whole tiles, unchanged.

# %%
fig, axes = plt.subplots(1, 4, figsize=(11, 3))
for i in range(2):
    image, mask = splits["val"][i]
    axes[2 * i].imshow(image[0], cmap="gray")
    axes[2 * i + 1].imshow(mask[0], cmap="gray", vmin=0, vmax=1)
    axes[2 * i].set_title(f"val tile {i}"), axes[2 * i + 1].set_title(f"mask {i}")
for ax in axes:
    ax.axis("off")
fig.suptitle(f"{dataset} validation tiles ({source} data)")
plt.show()

# %% [markdown]
# ## Two initialisations
#
# The pretrained start is a generator exported by `emlib.pretrain`
# (`generator.safetensors` + `model_card.json`, see the pretraining chapter).
# When no `pretrained` path is given, we make one here with the toy
# pretraining preset: a few dozen Pix2Pix steps on synthetic cellular EM.
# Fine-tuning loads every tensor whose name and shape match
# (`emlib.models.transfer_weights`); a file of another architecture is refused.

# %%
# NBVAL_IGNORE_OUTPUT
if pretrained is None:
    pretrained = pretrain.toy_generator(model, f"{output_dir}/pretrain", seed=seed)
configs = {
    "random": base,
    "pretrained": finetune.FinetuneConfig.toy(**fields, init=str(pretrained), output_dir=f"{output_dir}/pretrained"),
}
summaries = {name: finetune.run(config) for name, config in configs.items()}

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
for name, config in configs.items():
    rows = results.read_rows(Path(config.output_dir) / "validation.csv")
    ax.plot([int(r["epoch"]) for r in rows], [float(r["dice_percent"]) for r in rows], marker="o", label=name)
ax.set_xlabel("epoch"), ax.set_ylabel("validation Dice (%)")
ax.set_title(f"{results.paper_model_name(model)} on {dataset}\n({run_label}; cf. paper Figs. 6-9)", fontsize=10)
ax.legend()
plt.show()

# %% [markdown]
# ## Example predictions
#
# The analog of the paper's Figs. 10 and 15-18: image, ground truth and the
# predictions of the best model of each run, on test tiles. `emlib.predict`
# runs a model on an image of any size by overlapping tiles (here the tiles are
# the training tile size, so it is one pass); the output is the logit map,
# thresholded at 0.

# %%
best = {name: finetune.load_finetuned(config.output_dir)[0] for name, config in configs.items()}
n_show = min(2, len(splits["test"]))
fig, axes = plt.subplots(n_show, 2 + len(best), figsize=(2.6 * (2 + len(best)), 2.6 * n_show), squeeze=False)
for row in range(n_show):
    image, mask = splits["test"][row]
    panels = {"image": image[0], "ground truth": mask[0]}
    for name, net in best.items():
        logits = torch.from_numpy(emlib.predict(net, image[0], tile=512, overlap=0, standardize=None))
        panels[f"{name}: Dice {100 * dice_scores(logits, mask[0]).item():.1f}%"] = (logits > 0).float()
    for col, (title, panel) in enumerate(panels.items()):
        axes[row, col].imshow(panel, cmap="gray")
        axes[row, col].set_title(title, fontsize=9)
        axes[row, col].axis("off")
fig.suptitle(f"Test tiles, best models ({run_label}; cf. paper Figs. 10, 15-18)", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Test Dice in the paper's layout
#
# The paper's Tables 2-6 give, for every model and initialisation, the test
# Dice of the best model so far at epochs 5, 10, ..., 60. Our runs write the
# same rows to `results.csv` (the schema of `emlib.results`, with `source`
# saying where the numbers come from), so they can be set beside the paper's.
# First our toy runs (one column per evaluation), then the paper's row for
# the same model and dataset.

# %%
ours = {}
for name, config in configs.items():
    for row in results.read_rows(Path(config.output_dir) / "results.csv"):
        ours.setdefault(f"{row['model']} {row['init']}", {})[row["epoch"]] = float(row["dice_percent"])
epochs_ours = sorted({e for r in ours.values() for e in r}, key=int)
display(Markdown(f"**Ours: test Dice (%) of the best model so far** ({dataset}, {run_label})\n\n"
                 + markdown_table(ours, row_names=list(ours), column_names=epochs_ours, fmt="{:.1f}", corner="epoch")))

table_number = finetune.PAPER_TABLES[dataset]
theirs = {}
for row in paper.load_segmentation():
    if row["dataset"] == dataset and row["model"] == results.paper_model_name(model):
        theirs.setdefault(f"{row['model']} {row['init']}", {})[str(row["epoch"])] = row["dice_percent"]
epochs_paper = sorted({e for r in theirs.values() for e in r}, key=int)
display(Markdown(f"**Paper, Table {table_number}: test Dice (%)** ({dataset}, 60 epochs on the real data)\n\n"
                 + markdown_table(theirs, row_names=list(theirs), column_names=epochs_paper, fmt="{:.1f}", corner="epoch")))

# %% [markdown]
# To run the paper's setting, execute this notebook (e.g. with papermill) with
# the parameters set to the values in their comments, a real `data_root` and a
# `pretrained` export, or from a shell (the defaults of `FinetuneConfig` are the
# paper's): `python -m emlib finetune --task segmentation --dataset Au5nmV1
# --model unet_4_424 --init runs/pretrain/P100k --data-root /data/au`.
