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
# # Pretraining
#
# The paper's first step teaches a generator network what electron micrographs
# look like, without a single label. We take clean CEM500K patches, corrupt them
# (noise, blur), and train a network to undo the damage. A network that can
# restore a blurred membrane or a noisy mitochondrion has learned edges,
# textures and shapes of cellular EM: features that fine-tuning later reuses for
# nanoparticle segmentation and atomic-resolution restoration.
#
# The restoration is trained as a *conditional GAN*, the Pix2Pix recipe
# {cite}`isola2017pix2pix`. A plain L1 loss alone rewards the blurry average of
# all plausible answers; a second network, the discriminator, learns to tell
# real (corrupted, clean) pairs from (corrupted, restored) pairs and so pushes
# the generator towards sharp, realistic output.
#
# This chapter runs that recipe with `emlib.pretrain`: a tiny U-Net and a tiny
# HRNet, for a few dozen steps on a CPU. **Everything below is a toy run on
# synthetic data** (unless you pass a real `data_root`): it shows the mechanics
# and the diagnostics, not the paper's numbers.

# %%
import sys, subprocess
if "google.colab" in sys.modules:  # install emlib on Colab only
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "emlib[book] @ git+https://github.com/emlib-book/emlib"], check=True)
import torch
print("device:", "cuda" if torch.cuda.is_available() else "cpu")

# %% [markdown]
# The parameters are the fields of `emlib.pretrain.PretrainConfig`, so that
# `papermill 03_pretraining.ipynb out.ipynb -p model unet_4_424 -p data_root ... `
# runs exactly what `python -m emlib pretrain --model unet_4_424 --data-root ...`
# runs, into the same run folder. The values are CPU toy settings; the paper's are
# in the comments. The display switches below them add this chapter's comparisons.

# %% tags=["parameters"]
model = "unet_2_44"  # paper: the nine U-Nets and HRNet, e.g. "unet_4_424"
data_root = None  # None: synthetic data (emlib.data.ensure_synthetic); paper: the CEM500K TIFF folder; any folder of EM images
subset = None  # paper: 50000, 100000 or 200000 training images
image_size = 64  # paper: 224
batch_size = 8  # paper: 128
epochs = 6  # paper: 60
steps_per_epoch = 10  # paper: None (the whole subset each epoch)
max_steps = None
lr = 2e-3  # paper: 2e-4 (a larger step so that a few toy steps show learning)
betas = (0.5, 0.999)  # pix2pix
l1_weight = 100.0  # paper: 100
adv_weight = 1.0  # paper: 1 (0: the L1-only ablation)
noise_std = (0.0, 0.1)  # ours (the paper gives no ranges)
blur_sigma = (0.0, 2.0)
p_noise = 0.8
p_blur = 0.5
flip = True
rot90 = True
corrupt_on = "device"
centered = True
val_limit = 16  # paper: None (5000 validation images)
seed = 0
split_seed = 0
manifest_path = None
tiles_per_image = False
device = "auto"  # the GPU when there is one (Colab), else the CPU
amp = "cuda"  # mixed precision on a GPU only ("cuda"); the CPU runs stay fp32, the same numbers on every CPU; or True, False, "auto"
channels_last = "cuda"  # on a GPU only; or True, False, "auto"
compile = False
workers = 0  # paper-scale runs: 8 or more
deterministic = "cpu"  # exact, repeatable runs on the CPU ("cpu": there only; some CUDA kernels have no deterministic version)
output_dir = "runs/pretrain/unet_2_44"
checkpoint_every = 0
log_every = 1
# Display switches (not config fields):
compare_model = "hrnet_w18_small"  # a second generator trained the same way, beside output_dir; None: skip
real_results = "results/real_small"  # the committed real-data study whose generators are shown; None to skip
generator_path = None  # the explorer's generator.safetensors; None: a finished real-data run under results/real_small/ if present, else this chapter's toy run
explorer_images = 16  # held-out images in the explorer
resume = False  # continue an interrupted run from output_dir/checkpoint.pt (as the CLI's --resume)
show_widgets = True  # the ipywidgets explorer (False for batch runs: papermill, the sweep)

# %%
import dataclasses
from pathlib import Path

import matplotlib.pyplot as plt

from emlib import explorers, figures, models, pretrain, runs, session

amp, channels_last, deterministic = (session.on_device(v, device) for v in (amp, channels_last, deterministic))
config = pretrain.PretrainConfig(**{f.name: globals()[f.name] for f in dataclasses.fields(pretrain.PretrainConfig)})
configs = {model: config}
if compare_model:
    configs[compare_model] = dataclasses.replace(config, model=compare_model, output_dir=f"{output_dir}-{compare_model}")
generators = list(configs)
folder, source = pretrain.resolve_data_root(config)
run_label = f"toy run on {source} data" if source == "synthetic" or steps_per_epoch else f"run on {source} data"
print("data:", source, "| generators:", ", ".join(generators))

# %% [markdown]
# ## The pretext task: undo a corruption
#
# Each clean patch B is corrupted into the generator's input A by a random
# composition of additive Gaussian noise and Gaussian blur. Random flips and
# 90-degree rotations are applied to A and B alike: they are augmentations, not
# damage. The validation set is corrupted once, with a fixed seed, so that every
# epoch and every generator is scored on exactly the same pairs.

# %%
_, val_set, _ = pretrain.build_datasets(config, folder)
pairs = [val_set[i] for i in range(4)]
fig, axes = plt.subplots(2, 4, figsize=(8, 4.2))
for col, (corrupted, clean) in enumerate(pairs):
    axes[0, col].imshow(corrupted[0], cmap="gray", vmin=0, vmax=1)
    axes[1, col].imshow(clean[0], cmap="gray", vmin=0, vmax=1)
axes[0, 0].set_ylabel("input A (corrupted)")
axes[1, 0].set_ylabel("target B (clean)")
for ax in axes.flat:
    ax.set_xticks([]), ax.set_yticks([])
fig.suptitle(f"Fixed validation pairs ({source} data)")
plt.show()

# %% [markdown]
# ## Generator, discriminator and the least-squares loss
#
# The generator G maps A to an estimate of B. The discriminator D is the
# pix2pix *PatchGAN*: it sees the pair concat(A, B) and returns a grid of
# scores, one per 70 x 70 patch, instead of one score per image. Following the
# paper, the scores are trained with the least-squares GAN loss (LSGAN,
# {cite}`mao2017lsgan`), which penalises a confident wrong score quadratically
# and gives smoother gradients than the original log loss:
#
# $$L_D = \tfrac12\big[(D(A,B)-1)^2 + D(A,G(A))^2\big],\qquad
#   L_G = (D(A,G(A))-1)^2 + 100\,\lVert G(A)-B\rVert_1 .$$
#
# Each batch makes one D step, then one G step (Adam, lr 2e-4, betas 0.5,
# 0.999; weights drawn from N(0, 0.02)). As in pix2pix, G and D see intensities
# mapped to [-1, 1], so that a fresh G, whose output is close to 0, starts at
# mid-grey. The cost is worth a look: the PatchGAN
# needs about 2.4 GMACs per 224 x 224 image and runs three times per step
# (real pair, fake pair for D, fake pair for G), while the paper's U-Nets are
# far smaller. **For the U-Nets the discriminator, not the generator, dominates
# the cost of pretraining.**

# %%
rows = []
for name in [*generators, "unet_4_424", "patchgan"]:
    model = models.create(name)
    gmacs = models.flops(model, size=224) / 2 / 1e9  # FlopCounterMode counts 2 FLOPs per multiply-add
    rows.append((name, sum(p.numel() for p in model.parameters()), gmacs))
print(f"{'model':>16} {'parameters':>11} {'GMACs / 224x224':>16}")
for name, n_params, gmacs in rows:
    print(f"{name:>16} {n_params:11,d} {gmacs:16.3g}")

# %% [markdown]
# ## A toy run
#
# `pretrain.run(config)` runs the loop, writes `log.csv` (per step),
# `validation.csv` (per epoch), an atomic `checkpoint.pt` and, at the end, the
# generator as `generator.safetensors` with a `model_card.json`; fine-tuning
# loads those two files. The same call scales to the paper's setting by changing
# the config, e.g. from a shell:
# `python -m emlib pretrain --model unet_4_424 --data-root CEM500K/ --subset 100000`,
# or `torchrun --nproc-per-node 8 -m emlib pretrain ...` on several GPUs.

# %%
# NBVAL_IGNORE_OUTPUT
summaries = {g: pretrain.run(c, resume=resume and c is config) for g, c in configs.items()}

# %%
print(f"{'generator':>16} {'steps':>6} {'val L1 per epoch':>30}")
for g, summary in summaries.items():
    history = " ".join(f"{v:.3f}" for _, _, v in summary["val_l1"])
    print(f"{g:>16} {summary['steps']:6d} {history:>30}")

# %% [markdown]
# ## Reading the losses
#
# A GAN has no single loss that must go down. The L1 term shows how close G
# gets to the clean image; the adversarial terms show the balance of the game.
# With LSGAN a discriminator that is sure of itself pushes D(real) towards 1
# and D(fake) towards 0; if the two curves separate for good, D has won and G's
# adversarial gradient stops being informative; if they meet, G fools D.

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
for g, c in configs.items():
    log_path = Path(c.output_dir) / "log.csv"
    figures.plot_log(log_path, ["g_l1"], ax=axes[0], label_prefix=f"{g}: ")
    figures.plot_log(log_path, ["d_loss", "g_adv"], ax=axes[1], label_prefix=f"{g}: ", logy=True)
    figures.plot_log(log_path, ["d_real", "d_fake"], ax=axes[2], label_prefix=f"{g}: ")
axes[0].set_title(f"L1(G(A), B), {run_label}")
axes[1].set_title(f"LSGAN losses, {run_label}")
axes[2].set_title(f"mean D score on real / fake, {run_label}")
fig.tight_layout()
plt.show()

# %% [markdown]
# The paper judges pretraining by the L1 distance between G(A) and B on the
# held-out set, once per epoch (its Figs. 4 and 19 show these curves for 60
# epochs on 50k to 200k CEM500K images). Here is the same measurement for our
# few toy epochs.

# %%
fig, ax = plt.subplots(figsize=(5, 3.4))
for g, c in configs.items():
    figures.plot_log(Path(c.output_dir) / "validation.csv", ["val_l1"], x="epoch", ax=ax, label_prefix=f"{g}: ")
identity_l1 = torch.stack([(a - b).abs().mean() for a, b in pairs]).mean().item()
ax.axhline(identity_l1, ls="--", c="gray", label="G(A) = A, on the pairs shown below")
ax.legend(fontsize=8)
ax.set_ylabel("validation L1")
ax.set_title(f"Validation L1 per epoch\n({run_label}; cf. paper Figs. 4, 19)")
plt.show()

# %% [markdown]
# ## What the generators return
#
# The analog of the paper's Fig. 5: corrupted input, clean target, and the
# output of each pretrained generator, loaded back from the exported
# `generator.safetensors` (`emlib.models.load`: the file names its architecture)
# exactly as fine-tuning will load it. After a few toy
# steps the outputs are at best rough; a real run needs the paper's budget.

# %%
inputs = torch.stack([a for a, _ in pairs])
columns = {"input A": inputs, "target B": torch.stack([b for _, b in pairs])}
with torch.no_grad():
    for g, c in configs.items():
        G = models.load(Path(c.output_dir) / "generator.safetensors").eval()  # the export names its architecture
        columns[f"G = {g}"] = pretrain.restore_images(G, inputs, c.centered)
figures.plot_restorations(columns, f"Restorations on validation pairs ({run_label}; cf. paper Fig. 5)")
plt.show()

# %% [markdown]
# ## On real cellular EM
#
# Toy runs show the mechanics. Our small real-data study
# (`python -m emlib sweep experiments/real_small.yaml`, committed under
# `results/real_small/`) runs the paper's recipe (LSGAN + 100 x L1, Adam) on real
# pixels: cellular EM patches (serial-section SEM of mussel tissue, CREMI and ISBI
# 2012 ssTEM, and a few genuine CEM500K patches; a small fraction of the paper's
# CEM500K subsets), split by source image so that no
# validation patch comes from an image that gave training patches, for `unet_2_44`,
# `unet_4_200` and `hrnet_w18_small`, plus `unet_2_44` with L1 only (`adv_weight = 0`,
# the ablation). The table below reads each run's design (steps, crop, batch, lr,
# patches per split) from its own files. Below it: validation L1 on the held-out
# real patches against the identity G(A) = A on the same pairs (dotted), and whether
# each curve had flattened, said from the curve itself (its last quarter no better
# than the quarter before, beyond the curve's own scatter), not from a step count; then what
# each generator returns for held-out real patches (the paper's Fig. 5 on real data).
# These are *ours, real data, small scale (CPU)*.

# %%
# NBVAL_IGNORE_OUTPUT
# (the section shows the committed study when present)
from IPython.display import Markdown, display

from emlib import study

real_runs = study.pretraining_runs(real_results) if real_results else {}
if not real_runs:
    print(f"no finished real-data pretraining runs under {real_results}: not finished yet")
else:
    design = study.pretraining_design(real_results)
    display(Markdown(f"**Pretraining runs on real cellular EM ({figures.REAL_SMALL_LABEL})**\n\n" + figures.markdown_table(
        design, row_names=list(design), column_names=list(next(iter(design.values()))), fmt=figures.study_cell, corner="run")
        + f"\n\n({study.FLATTENED_RULE})"))
    figures.plot_pretraining_curves(real_runs)
    plt.show()
    for name, row in design.items():
        print(f"{name:>24}: final val L1 {row['final val L1']:.4f} vs identity {row['identity val L1']:.4f} "
              f"({row['vs identity']}) after {row['steps']} steps: "
              + {-1: "better than returning the input", 0: "no better than returning the input", 1: "worse than returning the input"}[
                  (row["final val L1"] > 1.01 * row["identity val L1"]) - (row["final val L1"] < 0.99 * row["identity val L1"])]
              + "; the validation curve " + ("had flattened" if row["flattened"] else "was still falling: longer pretraining would still help"))

# %%
# NBVAL_IGNORE_OUTPUT
if real_runs:
    first = explorers.load_pretraining_run(next(iter(real_runs.values())) / "generator.safetensors",
                                           base=Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd())
    _, real_val, _ = pretrain.build_datasets(first.config, Path(first.config.data_root))
    real_pairs = [real_val[i] for i in range(4)]
    inputs = torch.stack([a for a, _ in real_pairs])
    columns = {"input A": inputs, "target B": torch.stack([b for _, b in real_pairs])}
    with torch.no_grad():
        for name, folder in real_runs.items():
            G = models.load(folder / "generator.safetensors").eval()
            columns[name] = pretrain.restore_images(G, inputs, first.config.centered)
    figures.plot_restorations(columns, f"Held-out real cellular EM patches ({figures.REAL_SMALL_LABEL}; cf. paper Fig. 5)")
    plt.show()

# %% [markdown]
# ## Explore a pretrained generator
#
# The validation L1 is one number for one mix of corruptions. How does G fare as
# the damage grows, and does it beat doing nothing at all? The explorer corrupts
# held-out images (the run's own validation split, never trained on) at a chosen
# *strength* s: noise of standard deviation s x 0.1 and a blur of sigma s x 2 px,
# the largest corruption pretraining drew, times s. So s = 1 is the strongest
# corruption G has seen, and beyond 1 it extrapolates. Flips and rotations are left
# out: they turn input and target alike. For each image it reports the L1 to the
# clean target of G's restoration and of the corrupted input itself: the
# *identity*, the score of a generator that returns its input. A useful
# restoration lies below the identity.
#
# Which generator: by default one pretrained on real data, when the real-data sweep
# (`experiments/real_small.yaml`) has left a finished run under `results/real_small/`
# in the repository; otherwise this chapter's toy generator, labelled toy. The
# parameter `generator_path` points the explorer at any run's `generator.safetensors`.

# %%
# NBVAL_IGNORE_OUTPUT
# (which generator is explored depends on the files present)
repo = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
own_path = Path(config.output_dir) / "generator.safetensors"
run = None
if generator_path:
    run = explorers.load_pretraining_run(generator_path, base=repo)
else:
    finished = [p for p in sorted(repo.glob("results/real_small/pretrain-*/generator.safetensors"))
                if (p.parent / "summary.json").is_file() and not p.parent.name.endswith("-l1")]  # -l1: the ablation
    for path in finished[:1]:
        try:
            run = explorers.load_pretraining_run(path, base=repo)
        except FileNotFoundError as err:  # its real data is not here
            print(f"not exploring {path.parent.name}: {err}")
    run = run or explorers.load_pretraining_run(own_path)
own = run.folder.resolve() == own_path.parent.resolve()
held_out = "synthetic stand-in" if run.source == "synthetic" else f"real data ({Path(run.config.data_root).name})"
kind = "toy generator" if own and run_label.startswith("toy") else "generator"
explorer_label = f"{kind} {run.config.model}, {run.card['steps']} steps; held-out images: {held_out}"
where = "this chapter's run" if own else run.folder.relative_to(repo) if run.folder.is_relative_to(repo) else run.folder
print(f"explorer: {kind} {run.config.model} from {where} ({run.card['steps']} steps on {run.source} data)")
images = explorers.held_out_images(run, limit=explorer_images)
print(f"{len(images)} held-out images of {images.shape[-1]} px from the run's validation split")

# %% [markdown]
# First the summary over all held-out images: the mean L1 of G and of the identity
# at each strength. Where G's line lies below the identity's, restoring helps;
# where it lies above, G loses more (contrast, fine texture) than it removes. A
# generator that has learnt little crosses the identity late, at strong
# corruptions only.

# %%
# NBVAL_IGNORE_OUTPUT
# (the numbers depend on which generator is explored)
curve = explorers.restoration_curve(run, images, seed=seed)
fig = explorers.plot_restoration_curve(curve, explorer_label)
plt.show()
better = [s for s, g, i in zip(curve["strength"], curve["l1_g"], curve["l1_identity"]) if g < i]
at_one = curve["strength"].index(1.0)
print(f"mean L1 at strength 1: G {curve['l1_g'][at_one]:.4f}, identity {curve['l1_identity'][at_one]:.4f}; "
      + (f"G beats the identity from strength {min(better):g} on" if better else "G beats the identity at no strength shown"))

# %% [markdown]
# The static stand-in for the explorer (the built book has no kernel): three
# held-out images, each corrupted at three strengths and restored by G, with the
# L1 to the clean target under every panel.

# %%
fig = explorers.restoration_grid(run, images[:3], explorer_label, seed=seed)
plt.show()

# %% [markdown]
# With a running kernel, pick a held-out image and a strength with the sliders:

# %% tags=["skip-execution"]
# NBVAL_SKIP
# An interactive widget: it needs a live kernel (Jupyter, Colab). Builds of the book and
# the notebook tests skip it (headless execution of widgets can deadlock); the grid above stands in.
explorers.restoration_explorer(run, images, explorer_label, seed=seed) if show_widgets else None

# %% [markdown]
# ## What fine-tuning receives
#
# Each run folder holds the model card next to the weights: which generator,
# which data (and the hash of its train/val/test manifest), how long it trained
# and its final validation L1.

# %%
card = runs.read(config.output_dir).card
print({k: card[k] for k in ("model", "source", "subset", "steps", "epochs")}, "final val L1:", round(card["final_val_l1"], 3))
