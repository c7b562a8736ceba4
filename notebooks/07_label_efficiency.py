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
# # Beyond the paper: how many labels does pretraining save?
#
# The paper motivates GAN pretraining on unlabelled cellular EM by the cost of
# labelling: pixel masks of nanoparticles are slow to draw, so a network that
# needs fewer of them is worth having. Yet every fine-tuning run in the paper
# uses *all* the labelled training tiles of each Au dataset (Tables 2-6). The
# question the motivation raises, how test Dice falls as labels are taken away
# and whether a pretrained start falls more slowly, is never measured.
#
# This chapter sets up that measurement. It is a **toy run on synthetic data,
# not a result about real EM**: a handful of synthetic tiles, a few epochs on a
# CPU, one seed. It shows how the experiment is built and what its output looks
# like; it cannot say whether pretraining saves labels on real micrographs.
#
# The design:
#
# - **the label subsets**: `FinetuneConfig.label_fraction` keeps a seeded
#   fraction of the *training* images (micrographs for the Au sets, at least one;
#   all tiles of a kept micrograph). The subset is drawn from one
#   permutation seeded by `split_seed`, so the subsets are nested: the tiles of
#   a smaller fraction are among those of every larger one, and both
#   initialisations see the same tiles at each fraction;
# - **the same evaluation for all**: the train/validation/test split depends on
#   `split_seed` only, never on the fraction, so every run is scored on the same
#   validation and test tiles;
# - **the same training budget**: with `epoch_size` set, every run takes the
#   same number of gradient steps on augmented crops of its images, so fewer labels
#   means fewer distinct images, not less training;
# - **the score**: as in the paper, the model kept is the best one on the
#   validation split, and we report its test Dice.

# %%
import sys, subprocess
if "google.colab" in sys.modules:  # install emlib on Colab only
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "emlib[book] @ git+https://github.com/emlib-book/emlib"], check=True)
import torch
print("device:", "cuda" if torch.cuda.is_available() else "cpu")

# %% [markdown]
# The parameters are the fields of `emlib.finetune.FinetuneConfig` (the run at
# `label_fraction`, as `python -m emlib finetune` would make it), plus display
# switches: the other fractions and the pretrained start that this chapter runs
# beside it.

# %% tags=["parameters"]
task = "segmentation"
model = "unet_2_44"  # paper: the nine U-Nets and HRNet, e.g. "unet_4_424", "hrnet_w44"
init = "random"
head = None  # output head of a pretrained init; None: the task default (segmentation: reinit, restoration: transfer)
dataset = "Au5nmV1"  # paper: Au5nmV1, Au2.2nm, Au5nm, Au10nm, Au20nm (Tables 2-6); real: emps, msa_segtrack
data_root = None  # None: synthetic data (emlib.data.ensure_synthetic); real: the folder with the Au HDF5 files
images_dir = None  # dataset "folder": your folder of images, named outright (with masks_dir)
masks_dir = None  # dataset "folder": the folder of their masks
crop = 96  # paper: 448 (random crops of the 512 x 512 tiles)
eval_crop = None
downsample = 1
batch_size = 4  # paper: not stated (FinetuneConfig default 16)
epochs = 8  # paper: 60
epoch_size = 24  # training crops per epoch, fixed so that every fraction trains equally long
lr = 3e-3  # paper: 2e-4 (a larger step so that a few toy steps show learning)
optimizer = "adam"
weight_decay = 0.0
eval_every = 1  # paper: 5
eval_dense_epochs = 0  # also evaluate after each of the first n epochs
lr_drops = 0  # divide the lr by 10 this many times, each when the best validation score is patience epochs old
patience = 10
plateau_stop = None  # 0.33: stop once the last third of the epochs brought no better validation score
min_epochs = 0  # plateau_stop never stops before this epoch
label_fraction = 1.0
augment_dihedral = True
augment_resize = True
augment_noise = True
test = True
seed = 0  # real study: several seeds, e.g. 0, 1, 2
split_seed = 0  # fixes the train/val/test split and the label subsets
device = "auto"  # the GPU when there is one (Colab), else the CPU
amp = "cuda"  # mixed precision on a GPU only ("cuda"); the CPU runs stay fp32, the same numbers on every CPU; or True, False, "auto"
channels_last = "cuda"  # on a GPU only; or True, False, "auto"
compile = False
workers = 0  # paper-scale runs: 4-8
deterministic = "cpu"  # exact, repeatable runs on the CPU ("cpu": there only; some CUDA kernels have no deterministic version)
output_dir = "runs/label_efficiency/random-lf1"
# Display switches (not config fields):
label_fractions = (0.1, 0.25, 0.5, 1.0)  # the fractions run beside label_fraction; real study: (0.1, 0.25, 0.5, 1.0) x 3 seeds
compare_init = "toy"  # the pretrained start: "toy" (pretrain a tiny generator here), a generator export or name
real_results = "results/real_small"  # the committed real-data study (EMPS label efficiency); None to skip

# %%
import dataclasses
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from emlib import figures, finetune, pooling, pretrain, results, session
from emlib.figures import INIT_COLORS, markdown_table

amp, channels_last, deterministic = (session.on_device(v, device) for v in (amp, channels_last, deterministic))
if session.select_device(device).type == "cpu":
    torch.set_num_threads(1)  # the same numbers whatever the core count (toy-sized tensors gain little from threads)

base = finetune.FinetuneConfig(**{f.name: globals()[f.name] for f in dataclasses.fields(finetune.FinetuneConfig)})
fractions = sorted({float(f) for f in label_fractions} | {float(label_fraction)})
folder, source = finetune.resolve_data_root(base)
run_label = ("toy run on synthetic data, not a result about real EM" if source == "synthetic"
             else f"run on real data, one seed ({seed})")
print(f"data: {source} | {dataset}")

# %% [markdown]
# ## The label subsets
#
# Before training anything, we build the datasets at every fraction and check
# the two properties the design relies on: the subsets are nested, and the
# validation and test tiles are the same whatever the fraction.

# %%
split_sets = {f: finetune.build_datasets(dataclasses.replace(base, label_fraction=f), folder) for f in fractions}
n_tiles = {f: len(s["train"].dataset) for f, s in split_sets.items()}  # .dataset: the images under the augmentation
train_sources = {f: set(s["train"].dataset.sources) for f, s in split_sets.items()}
nested = all(train_sources[a] <= train_sources[b] for a, b in zip(fractions, fractions[1:]))
same_eval = all(s[split].sources == split_sets[fractions[-1]][split].sources
                for s in split_sets.values() for split in ("val", "test"))
n_val, n_test = len(split_sets[fractions[-1]]["val"]), len(split_sets[fractions[-1]]["test"])
for f in fractions:
    print(f"label_fraction {f:g}: {n_tiles[f]} labelled training tiles")
print(f"validation tiles: {n_val}, test tiles: {n_test} (the same for every fraction: {same_eval})")
print(f"subsets nested: {nested}")

# %% [markdown]
# ## The runs
#
# One pretrained start for all fractions: a generator exported by
# `emlib.pretrain` (`compare_init`), or, with `compare_init = "toy"`, the toy pretraining
# preset (a few dozen Pix2Pix steps on synthetic cellular EM, as in the
# segmentation chapter). Then one fine-tuning run per fraction and
# initialisation, each in its own folder under `output_dir`.

# %%
# NBVAL_IGNORE_OUTPUT
runs_root = Path(output_dir).parent
pretrained = pretrain.toy_generator(model, runs_root / "pretrain", seed=seed) if compare_init == "toy" else compare_init
inits = {"random": "random", "pretrained": str(pretrained)}
summaries = {}


def fine_tune(name, fraction):
    """One fine-tuning run from initialisation `name` on `fraction` of the training labels."""
    folder_name = Path(output_dir) if (inits[name], fraction) == (base.init, base.label_fraction) else runs_root / f"{name}-lf{fraction:g}"
    config = dataclasses.replace(base, init=inits[name], label_fraction=fraction, output_dir=str(folder_name))
    summaries[name, fraction] = finetune.run(config)


# %% [markdown]
# From random weights, at every fraction:

# %%
# NBVAL_IGNORE_OUTPUT
for f in fractions:
    fine_tune("random", f)

# %% [markdown]
# From the pretrained generator, at every fraction:

# %%
# NBVAL_IGNORE_OUTPUT
for f in fractions:
    fine_tune("pretrained", f)

# %% [markdown]
# The runs' results are read back from their folders and grouped by
# `emlib.pooling.group_runs`, the rule every results table of the book uses:
# runs are pooled only when their configs agree apart from the seed, so each
# (initialisation, fraction) below is its own group, and `n` counts its distinct
# seeds (one here).

# %%
groups = pooling.group_runs(pooling.load_runs([s["output_dir"] for s in summaries.values()]))
group_of = {("random" if g.experiment["init"] == "random" else "pretrained", g.experiment["label_fraction"]): g
            for g in groups}
assert sorted(group_of) == sorted(summaries), "one group per initialisation and label fraction"
test_dice = {key: g.final()[0] for key, g in group_of.items()}
display(Markdown(pooling.summary_table(groups, markdown=True)))
for (name, f), s in summaries.items():
    print(f"{name:>10}, {s['train_images']} tiles: best epoch {s['best_epoch']}, "
          f"val Dice {s['best_val_dice_percent']:.3g}%, test Dice {test_dice[name, f]:.3g}% (n={group_of[name, f].n})")

# %% [markdown]
# ## Test Dice against the number of labelled tiles
#
# One point per run: the test Dice of the best-by-validation model, against the
# number of labelled training tiles it was fine-tuned on (log scale). If
# pretraining saved labels, the pretrained curve would reach a given Dice with
# fewer tiles, i.e. lie to the left of the random one.

# %%
x = [n_tiles[f] for f in fractions]
fig, ax = plt.subplots(figsize=(5.8, 3.6))
for name in inits:
    ax.plot(x, [test_dice[name, f] for f in fractions], marker="o", color=INIT_COLORS[name], label=name)
figures.label_efficiency_axes(ax, x, [str(n) for n in x], "labelled training tiles (log scale)",
                              f"{results.paper_model_name(model)} on {dataset}, seed {seed}\n({run_label})")
plt.show()

# %%
table = {name: {f"{n_tiles[f]} ({f:g})": test_dice[name, f] for f in fractions} for name in inits}
table["pretrained - random"] = {f"{n_tiles[f]} ({f:g})": test_dice["pretrained", f] - test_dice["random", f]
                                for f in fractions}
display(Markdown(f"**Test Dice (%) by number of labelled tiles (fraction)** ({dataset}, {run_label})\n\n"
                 + markdown_table(table, row_names=list(table), column_names=list(table["random"]),
                                  fmt="{:.3g}", corner="tiles (fraction)")))

# %% [markdown]
# ## What these numbers can and cannot say
#
# With one seed there is no error bar, so we use the data itself as a yardstick
# for noise. The subsets are nested, so adding labels should not hurt in
# expectation; any *drop* in test Dice when tiles are added to the same
# initialisation is run-to-run variation (a different crop stream, a different
# best epoch). A gap between the initialisations no larger than those drops is
# not evidence of anything.

# %%
gaps = [test_dice["pretrained", f] - test_dice["random", f] for f in fractions]
drops = [test_dice[name, a] - test_dice[name, b] for name in inits for a, b in zip(fractions, fractions[1:])]
noise = max([0.0] + drops)
ahead = sum(g > 0 for g in gaps)
print(f"pretrained ahead of random at {ahead} of {len(fractions)} label fractions")
print(f"gap pretrained - random: from {min(gaps):.3g} to {max(gaps):.3g} Dice points")
print(f"largest drop in test Dice when labels were added (same init): {noise:.3g} Dice points")
print(f"each test Dice is a mean over {n_test} test tiles; the training seed is not varied")
clear = [n_tiles[f] for f, g in zip(fractions, gaps) if abs(g) > noise]
if clear:
    print(f"gaps larger than that drop at {clear} labelled tiles: suggestive at most, with one seed")
else:
    print("no gap is larger than that drop: at this scale the two inits cannot be told apart")
epochs_best = {name: [summaries[name, f]["best_epoch"] for f in fractions] for name in inits}
for name, best in epochs_best.items():
    print(f"{name:>10}: best epoch per fraction {best} of {epochs}")

# %% [markdown]
# The printout above is the whole finding of this toy run; it is computed from
# the runs, so rerunning with other parameters updates it. Whatever it says, it
# says it about a small U-Net, synthetic tiles and one seed. The best epochs are
# worth a look too: a run whose best model comes from the last epoch was still
# improving when it stopped, so its Dice says as much about the training budget
# as about the labels.
#
# ## On real data: EMPS
#
# Our small real-data study (`python -m emlib sweep experiments/real_small.yaml`,
# committed under `results/real_small/`) runs this design on real pixels: EMPS
# {cite:p}`yildirim2021emps`, nanoparticles from published TEM/SEM figures with the
# official test split, at a few fractions of the training images, from random
# weights and from a `unet_2_44` GAN-pretrained on real cellular EM patches, several
# seeds each, the same number of steps for every fraction (the study's design and
# seeds are in {doc}`../book/reproduction_status`). Each point is the mean test Dice
# of the best-by-validation model at the last evaluation, with its 95% interval over
# the seeds; the horizontal lines are the training-free baselines of the same test
# split (a per-image Otsu threshold and calling every pixel particle), which need
# no labels at all. It is *ours, real data, small scale (CPU)*.

# %%
# NBVAL_IGNORE_OUTPUT
from emlib import study

real = [g for g in study.load_groups(real_results) if study.describe(g)["dataset"] == "emps"
        and study.describe(g)["model"] == "unet_2_44" and study.describe(g)["init"] in ("random", "GAN")
        and study.describe(g)["head"] != "transfer"] if real_results else []
if not real:
    print(f"no finished EMPS runs under {real_results}: not finished yet")
else:
    baselines = study.load_baselines(real_results).get("emps", {})
    full = [run for g in real if study.describe(g)["label_fraction"] == 1.0 for run in g.runs]
    train_images = (full[0].summary or {}).get("train_images") if full else None
    fig, ax = plt.subplots(figsize=(5.8, 3.6))
    for kind in ("random", "GAN"):
        members = sorted((g for g in real if study.describe(g)["init"] == kind), key=lambda g: study.describe(g)["label_fraction"])
        if not members:
            continue
        fractions_real = [study.describe(g)["label_fraction"] for g in members]
        finals = [g.final() for g in members]
        means, halves = np.array([f[0] for f in finals]), np.array([f[1] for f in finals])
        ax.errorbar(fractions_real, means, yerr=halves, marker="o", capsize=3, color=figures.STUDY_INIT_COLORS[kind],
                    label=f"{kind} (n={min(g.n for g in members)} seeds)")
    figures.draw_baselines(ax, baselines)
    fractions_all = sorted({study.describe(g)["label_fraction"] for g in real})
    figures.label_efficiency_axes(ax, fractions_all, [f"{f:.0%}" for f in fractions_all],
                                  f"fraction of the {f'{train_images} ' if train_images else ''}EMPS training images (log scale)",
                                  f"unet_2_44 on EMPS: label efficiency\n({figures.REAL_SMALL_LABEL})")
    plt.show()
    if not baselines:
        print(f"no baselines.csv under {real_results} yet (the sweep's scores: step writes it)")
    for fraction in fractions_all:
        pair = [study.find(real, init=k, label_fraction=fraction) for k in ("GAN", "random")]
        if all(pair):
            c = study.compare(*pair, "last")
            print(f"{fraction:>5.0%} of the labels: GAN - random = {c['difference']:+.1f} ± {c['ci95']:.1f} Dice points "
                  f"(n={c['n']} seeds; detectable >= {c['detectable']:.1f}) -> {c['verdict']}")
        else:
            print(f"{fraction:>5.0%} of the labels: not finished yet")

# %% [markdown]
# Read the curve against its own design: every fraction trains for the same number
# of steps, so a small fraction sees each of its images many more times. If fewer
# labels score *higher*, the training loss each group ended with is a first hint of
# whether the full-label runs were simply not fitted within that budget (a higher
# final loss on their own training images) rather than hurt by the extra labels. A
# hint, not a proof: a smaller set is easier to fit whatever the budget, and only
# full-label runs given more steps would settle it.

# %%
# NBVAL_IGNORE_OUTPUT
for kind in ("random", "GAN") if real else ():
    members = sorted((g for g in real if study.describe(g)["init"] == kind), key=lambda g: study.describe(g)["label_fraction"])
    full_group = next((g for g in members if study.describe(g)["label_fraction"] == 1.0), None)
    if full_group is None:
        continue
    if len(members) == 1:
        print(f"{kind}: only the runs with all the labels have finished; no smaller fraction to compare yet")
        continue
    higher = [g for g in members if g.final()[0] > full_group.final()[0] and g is not full_group]
    losses = ", ".join(f"{study.describe(g)['label_fraction']:.0%}: {study.final_train_loss(g):.3f}" for g in members)
    print(f"{kind}: " + (f"{len(higher)} smaller fraction(s) scored higher than all the labels; " if higher
                         else "no smaller fraction scored higher than all the labels; ")
          + f"final training loss per fraction ({losses})"
          + (" -- the full-label runs ended least fitted on their own images, as runs underfit within the step budget"
             " would; a smaller set is also easier to fit, so this alone does not show the cause: full-label runs"
             " with more steps would"
             if higher and study.final_train_loss(full_group) >= max(study.final_train_loss(g) for g in higher) else ""))

# %% [markdown]
# Two more things bound what the curve can say. The seeds vary the training (the
# fresh output head or random weights, the crops, their order), not the labelled
# images: each fraction is one draw of images (`split_seed`), shared by both
# initialisations and nested across fractions, so the intervals cover training
# noise only and the curve's shape carries the luck of three draws of images. And
# the model is chosen on the validation split (images from EMPS's training
# papers, held out by source figure) but scored on EMPS's official test split,
# whose images come from other papers: where the two splits disagree, the best
# validation score is a weaker guide to the test score. Below, both, per fraction.

# %%
# NBVAL_IGNORE_OUTPUT
for kind in ("random", "GAN") if real else ():
    members = sorted((g for g in real if study.describe(g)["init"] == kind), key=lambda g: study.describe(g)["label_fraction"])
    cells = [f"{study.describe(g)['label_fraction']:.0%}: validation {study.mean_summary(g, 'best_val_dice_percent'):.1f}, "
             f"test {study.mean_summary(g, 'test_dice_percent'):.1f}" for g in members]
    print(f"{kind}, mean over the seeds of the chosen model's Dice (%): " + "; ".join(cells))

# %% [markdown]
# The verdicts printed above are computed from the committed runs (see
# `emlib.study` for the rule: seed-paired differences and their 95% intervals). A
# fraction whose runs were still learning when they stopped (best validation score
# in their last fifth) is *not compared*: where such runs end says more about the
# step budget than about the labels or the initialisation.
# What a study at the paper's scale would add: the paper's generators
# (P50k-P200k, a hundred times more pretraining data and steps), the Au datasets,
# 60 full epochs, and more seeds and split seeds, since which images are labelled
# matters most when there are few.

