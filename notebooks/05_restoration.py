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
# # Restoring atomic-resolution images
#
# The second family of downstream tasks works on atomic-resolution ADF-STEM
# images, where each bright spot is a column of atoms seen end-on. Real images
# suffer from Poisson (shot) noise, scan noise and a slowly varying background;
# TEMImageNet {cite:p}`lin2021temimagenet` simulates such images together with
# the clean versions, so a network can learn to undo each degradation. The
# paper fine-tunes on three of its tasks (section 4.3, Table 7):
#
# | task | input folder | target folder |
# |---|---|---|
# | denoising (DN) | `image/` | `noNoise/` |
# | noise & background removal (N&BGR) | `image/` | `noBackgroundnoNoise/` |
# | super-resolution (SR) | `image/` | `noNoiseNoBackgroundSuperresolution/` |
#
# The recipe: HRNet, 256 x 256 images, batch 64, 60 epochs, Adam with lr 2e-4,
# loss L1 + L2; the metric is the L1 distance (mean absolute error) on [0, 1]
# intensities. We add PSNR and SSIM, which users of restoration models expect.
# The paper augments with "noise variations, flipping, rotations, and random
# resizing" without ranges; `emlib.data.augment` applies ours (the same geometry
# to input and target, noise to the input only; see the table of choices in
# {doc}`../book/reproduction_status`).
# As in pretraining, the network works on intensities mapped to [-1, 1]
# (`emlib.finetune.CenteredIntensities`), for random and pretrained starts alike.
#
# **Unless you pass real data, everything below is a toy run on synthetic data,
# not a reproduction**: the smallest U-Net instead of HRNet (HRNet learns too
# slowly for a CPU minute; set `model = "hrnet_w18_small"` or wider on a GPU),
# 64 x 64 crops and a few dozen steps per task.

# %%
import sys, subprocess
if "google.colab" in sys.modules:  # install emlib on Colab only
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "emlib[book] @ git+https://github.com/emlib-book/emlib"], check=True)
import torch
print("device:", "cuda" if torch.cuda.is_available() else "cpu")

# %% [markdown]
# The parameters are the fields of `emlib.finetune.FinetuneConfig` for the run of
# `task`, so that papermill runs exactly what `python -m emlib finetune` runs, into
# the same run folder; the display switches add the chapter's comparisons.

# %% tags=["parameters"]
task = "denoising"  # paper: denoising, noise_background_removal, super_resolution
model = "unet_2_44"  # paper: HRNet (width not stated), e.g. "hrnet_w44"
init = "random"  # "random" or a pretrained generator.safetensors (or its run folder)
head = None  # output head of a pretrained init; None: the task default (segmentation: reinit, restoration: transfer)
dataset = "TEMImageNet"
data_root = None  # None: synthetic data (emlib.data.ensure_synthetic); real: the TEMImageNet release folder
images_dir = None  # dataset "folder": your folder of images, named outright (with masks_dir)
masks_dir = None  # dataset "folder": the folder of their masks
crop = 64  # paper: 256 (whole images)
eval_crop = 64  # paper: None (whole 256 x 256 images)
downsample = 1  # segmentation image folders only
batch_size = 8  # paper: 64
epochs = 4  # paper: 60
epoch_size = 160  # paper: "paper" (one pass over the 10377 training images, Table 1)
lr = 3e-3  # paper: 2e-4 (a larger step so that a few toy steps show learning)
optimizer = "adam"  # paper: Adam
weight_decay = 0.0
eval_every = 1  # paper: 5
eval_dense_epochs = 0  # also evaluate after each of the first n epochs
lr_drops = 0  # divide the lr by 10 this many times, each when the best validation score is patience epochs old
patience = 10
plateau_stop = None  # 0.33: stop once the last third of the epochs brought no better validation score
min_epochs = 0  # plateau_stop never stops before this epoch
label_fraction = 1.0
augment_dihedral = True  # paper: flipping, rotations
augment_resize = True  # paper: random resizing
augment_noise = True  # paper: noise variations
test = True
seed = 0
split_seed = 0
device = "auto"  # the GPU when there is one (Colab), else the CPU
amp = "cuda"  # mixed precision on a GPU only ("cuda"); the CPU runs stay fp32, the same numbers on every CPU; or True, False, "auto"
channels_last = "cuda"  # on a GPU only; or True, False, "auto"
compile = False
workers = 0  # paper-scale runs: 4-8
deterministic = "cpu"  # exact, repeatable runs on the CPU ("cpu": there only; some CUDA kernels have no deterministic version)
output_dir = "runs/05_restoration/denoising/random"
# Display switches (not config fields):
other_tasks = True  # also run the paper's other two restoration tasks with the same settings
compare_init = "toy"  # a second initialisation per task: "toy" (pretrain a tiny generator here), a path, or None
real_images = None  # folder of real (S)TEM PNGs; None: look for shared/data/real/experimental_stem above; "": skip
resume = False  # continue an interrupted run from output_dir/checkpoint.pt (as the CLI's --resume)

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display
from PIL import Image

import emlib
from emlib import finetune, paper, pretrain, results, runs, session
from emlib.figures import markdown_table
from emlib.metrics import l1_errors

amp, channels_last, deterministic = (session.on_device(v, device) for v in (amp, channels_last, deterministic))
if session.select_device(device).type == "cpu":
    torch.set_num_threads(1)  # the same numbers whatever the core count (toy-sized tensors gain little from threads)

import dataclasses

config = finetune.FinetuneConfig(**{f.name: globals()[f.name] for f in dataclasses.fields(finetune.FinetuneConfig)})
tasks = [config.task] + [t for t in finetune.RESTORATION_TASKS if t != config.task and other_tasks]
folder, source = finetune.resolve_data_root(config)
run_label = "toy run on synthetic data, not a reproduction" if source == "synthetic" else "run on real data"
test_sets = {t: finetune.build_datasets(dataclasses.replace(config, task=t), folder)["test"] for t in tasks}
print(f"data: {source} | {len(test_sets[tasks[0]])} test images per task")

# %% [markdown]
# ## One sample, three targets
#
# The same noisy input serves all three tasks; only the target differs.

# %%
from emlib.data import TEMImageNet

sample = {t: TEMImageNet(folder, t, split="test", seed=split_seed)[0] for t in tasks}
fig, axes = plt.subplots(1, 1 + len(tasks), figsize=(2.8 * (1 + len(tasks)), 3))
axes[0].imshow(sample[tasks[0]][0][0], cmap="gray", vmin=0, vmax=1)
axes[0].set_title("input (image/)", fontsize=9)
for ax, t in zip(axes[1:], tasks):
    ax.imshow(sample[t][1][0], cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"target: {t}", fontsize=9)
for ax in axes:
    ax.axis("off")
fig.suptitle(f"A TEMImageNet test sample ({source} data)", fontsize=10)
plt.show()

# %% [markdown]
# ## Fine-tuning from random and from pretrained weights
#
# The run of this notebook is `config` (task, init, output_dir). For the chapter
# each task is also trained from the other initialisation (`compare_init`; "toy"
# makes a pretrained generator here with a tiny Pix2Pix run on synthetic cellular
# EM, see the pretraining chapter), each in a folder beside `output_dir`.

# %%
# NBVAL_IGNORE_OUTPUT
base_dir = Path(output_dir)
pretrained = config.init if config.init != "random" else None
if compare_init is not None and pretrained is None:
    pretrained = pretrain.toy_generator(model, base_dir.parent / "pretrain", seed=seed) if compare_init == "toy" else compare_init
configs = {(config.task, "random" if config.init == "random" else "pretrained"): config}
for t in tasks:
    for name, start in (("random", "random"), ("pretrained", pretrained)):
        if (t, name) not in configs and start is not None and (t != config.task or compare_init is not None):
            configs[t, name] = dataclasses.replace(config, task=t, init=str(start),
                                                   output_dir=str(base_dir.parent.parent / t / name))
summaries = {key: finetune.run(c, resume=resume and c is config) for key, c in configs.items()}

# %% [markdown]
# The identity baseline, "return the input unchanged", is the bar every model
# has to clear; it is computed on the same test crops.

# %%
identity = {task: torch.cat([l1_errors(x, y) for x, y in test_sets[task]]).mean().item() for task in tasks}
print(f"{'task':>26} {'init':>10} {'best epoch':>10} {'test L1':>8} {'PSNR dB':>8} {'SSIM':>6}")
for task in tasks:
    print(f"{task:>26} {'identity':>10} {'':>10} {identity[task]:8.4f}")
    for (t, init), summary in summaries.items():
        if t == task:
            print(f"{'':>26} {summary['init']:>10} {summary['best_epoch']:10d} {summary['test_l1']:8.4f} "
                  f"{summary['test_psnr']:8.2f} {summary['test_ssim']:6.3f}")

# %% [markdown]
# ## Validation L1 per epoch
#
# The analog of the paper's Fig. 11. In the paper the pretrained starts have
# lower validation loss than the random ones and fluctuate less.

# %%
fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.3), squeeze=False)
for ax, task in zip(axes[0], tasks):
    for (t, _), config in configs.items():
        if t != task:
            continue
        rows = results.read_rows(Path(config.output_dir) / "validation.csv")
        ax.plot([int(r["epoch"]) for r in rows], [float(r["l1"]) for r in rows], marker="o", label=rows[0]["init"])
    ax.axhline(identity[task], color="0.5", linestyle=":", label="identity (test)")
    ax.set_title(paper.TASK_ABBREVIATIONS[task], fontsize=10)
    ax.set_xlabel("epoch")
axes[0, 0].set_ylabel("validation L1")
axes[0, 0].legend(fontsize=8)
fig.suptitle(f"Validation L1 ({run_label}; cf. paper Fig. 11)", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Predictions
#
# The analog of the paper's Figs. 12-14: input, ground truth, and the best
# random and pretrained models of each task on a test crop.

# %%
best = {key: runs.load_finetuned(config.output_dir)[0] for key, config in configs.items()}
fig, axes = plt.subplots(len(tasks), 4, figsize=(10, 2.6 * len(tasks)), squeeze=False)
for row, task in enumerate(tasks):
    inputs, target = test_sets[task][0]
    panels = {"input": inputs[0], "target": target[0]}
    for key, net in best.items():
        if key[0] == task:
            with torch.no_grad():
                output = net(inputs[None])[0]
            label = summaries[key]["init"]
            panels[f"{label}: L1 {l1_errors(output, target).item():.3f}"] = output[0]
    for col, (title, panel) in enumerate(panels.items()):
        axes[row, col].imshow(panel.clamp(0, 1), cmap="gray", vmin=0, vmax=1)
        axes[row, col].set_title(f"{paper.TASK_ABBREVIATIONS[task]} {title}", fontsize=8)
        axes[row, col].axis("off")
fig.suptitle(f"Test crops ({run_label}; cf. paper Figs. 12-14)", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Test L1 beside the paper's Table 7
#
# Our runs write the paper's rows to `results.csv`: the test L1 of the best
# model so far at every evaluation. Here is the last one of each run, then the
# paper's values after 60 epochs. The scales differ (a few toy steps on
# synthetic crops against 60 epochs of HRNet on the real release), so compare
# the *pattern*, random against pretrained, not the numbers.

# %%
ours = {}
for (task, _), config in configs.items():
    last = results.read_rows(Path(config.output_dir) / "results.csv")[-1]
    ours.setdefault(paper.TASK_ABBREVIATIONS[task], {})[last["init"]] = float(last["l1"])
display(Markdown(f"**Ours: test L1 after {epochs} epochs** ({run_label}, model {results.paper_model_name(model)})\n\n"
                 + markdown_table(ours, row_names=list(ours), column_names=["random", "pretrained"], fmt="{:.4f}",
                                  corner="task")))
theirs = {}
for row in paper.load_restoration():
    if row["epoch"] == 60 and row["task"] in tasks:
        theirs.setdefault(paper.TASK_ABBREVIATIONS[row["task"]], {})[row["init"]] = row["l1"]
display(Markdown("**Paper, Table 7: test L1 after 60 epochs** (HRNet, real TEMImageNet)\n\n"
                 + markdown_table(theirs, row_names=list(ours), column_names=list(paper.INITS), fmt="{:.4f}",
                                  corner="task")))

# %% [markdown]
# ## On real experimental images
#
# A model is only useful if it transfers to real micrographs. The project's
# sample folder holds two real atomic-resolution (S)TEM images of 512 x 512
# pixels, larger than the training crops and without ground truth.
# `emlib.predict` scales them to [0, 1] as the training data was, cuts them
# into overlapping tiles, runs the tiles in batches and blends them back, so
# the output has the input's size. The models are the toy denoisers from above:
# expect a rough result.

# %%
# NBVAL_IGNORE_OUTPUT
# (the output depends on whether the real sample files are present)
def find_real_images(path):
    if path is not None:
        return Path(path) if path else None
    for parent in [Path.cwd(), *Path.cwd().parents]:
        if (parent / "shared/data/real/experimental_stem").is_dir():
            return parent / "shared/data/real/experimental_stem"
    return None


real_folder = find_real_images(real_images)
denoisers = {summaries[key]["init"]: net for key, net in best.items() if key[0] == tasks[0]}
if real_folder is None or not real_folder.is_dir():
    print("no folder of real images found; skipping this section")
else:
    paths = sorted(real_folder.glob("*.png"))
    fig, axes = plt.subplots(len(paths), 1 + len(denoisers), figsize=(3.2 * (1 + len(denoisers)), 3.2 * len(paths)), squeeze=False)
    for row, path in enumerate(paths):
        image = np.asarray(Image.open(path).convert("L"))
        panels = {f"{path.name} {image.shape[0]}x{image.shape[1]}": image / 255.0}
        for name, net in denoisers.items():
            restored = emlib.predict(net, image, standardize="unit", amp=amp)
            assert restored.shape == image.shape
            panels[f"{paper.TASK_ABBREVIATIONS[tasks[0]]}, {name}"] = restored
        for col, (title, panel) in enumerate(panels.items()):
            axes[row, col].imshow(np.clip(panel, 0, 1), cmap="gray", vmin=0, vmax=1)
            axes[row, col].set_title(title, fontsize=8)
            axes[row, col].axis("off")
    fig.suptitle(f"Real experimental images (no ground truth); models from the {run_label}", fontsize=10)
    fig.tight_layout()
    plt.show()

# %% [markdown]
# To run the paper's setting, execute this notebook with the parameters set to
# the values in their comments, a real `data_root` and a pretrained HRNet
# export as `init`, or from a shell: `python -m emlib finetune --task denoising
# --model hrnet_w44 --init runs/pretrain/hrnet_P100k --data-root /data/TEM-ImageNet-v1.3`.
