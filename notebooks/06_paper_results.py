# %% [markdown]
# # Paper results and ours
#
# The previous chapters built the pipeline and ran it at toy scale. This chapter
# looks at the *results*: the numbers Kazimi, Ruzaeva and Sandfeld report
# {cite:p}`kazimi2024selfsupervised`, and whatever runs of ours exist beside them.
#
# The paper's Tables 1-7 ship with `emlib` as data (`emlib/paper_tables/*.csv`, read by
# `emlib.paper`); a test checks every cell against the paper's text. From these
# tables we redraw the paper's comparisons and check its four claims by
# computing them, not by quoting them. Our own runs, wherever `emlib` wrote a
# `results.csv` under `runs/` (by hand or through `python -m emlib sweep`), are
# read and set beside the paper's numbers, labelled by their source:
#
# - **paper**: the authors' numbers (Tables 2-7);
# - **ours, real data**: our runs on the real datasets;
# - **ours, synthetic toy run**: our CPU runs on synthetic stand-in data. They
#   show that the pipeline works, and nothing about the paper's claims.
#
# On a fresh clone there are no runs of ours, and this chapter shows the
# paper's numbers only. Which results exist on real data is tracked in
# {doc}`../book/reproduction_status`.

# %%
import sys, subprocess
if "google.colab" in sys.modules:  # install emlib on Colab only
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "emlib[book] @ git+https://github.com/emlib-book/emlib"], check=True)
import torch
print("device:", "cuda" if torch.cuda.is_available() else "cpu")

# %% tags=["parameters"]
results_dir = "runs"  # where our runs wrote results.csv (the sweep's runs_dir); same on GPU
real_results = "results/real_small"  # the committed real-data study (python -m emlib sweep experiments/real_small.yaml)
data_root = None  # unused here: this chapter trains nothing and reads no images
figure_dpi = 80  # resolution of the inline figures

# %%
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from emlib import claims, figures, paper, pooling, results

plt.rcParams["figure.dpi"] = figure_dpi
segmentation, restoration = paper.load_segmentation(), paper.load_restoration()
print(f"paper: {len(segmentation)} Dice values (Tables 2-6), {len(restoration)} L1 values (Table 7)")

# %% [markdown]
# ## The datasets (paper, Table 1)
#
# Pretraining uses 50k, 100k or 200k unlabelled CEM500K images; the labelled
# downstream datasets are small, from 144 training images (Au5nmV1) to about
# 10k (TEMImageNet). This is the regime where pretraining should help most.
#
# These counts also say what the paper's *epoch* is. For Au2.2nm, Au5nm, Au10nm
# and Au20nm they are about 8x the number of 512 px tiles that Sytwu's filtering
# keeps from the micrographs, because Sytwu's preprocessing saved the 8
# flips/rotations of every tile as separate training images (Au5nmV1, from
# Groschner, was not pre-augmented). One of the paper's epochs is therefore about
# 8 passes over the tiles, and `FinetuneConfig(epoch_size="paper")`, our default
# for these datasets, draws that many augmented crops per epoch, so that "epoch 5"
# here and in the paper means the same number of gradient steps.

# %%
splits = {row["dataset"]: {"train": "/".join(f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n) for n in row["train"]),
                           "validation": row["validation"], "test": row["test"]} for row in paper.load_splits()}
display(Markdown("**Images per split (paper, Table 1)**\n\n" + figures.markdown_table(
    splits, row_names=list(splits), column_names=("train", "validation", "test"), fmt="{}", corner="dataset")))

# %% [markdown]
# ## Segmentation: Tables 2-6 at the last epoch
#
# The paper evaluates every 5 epochs and keeps the best model so far (selected
# on validation); Tables 2-6 give that model's test Dice (%) at each of the 12
# evaluations. Here is the last column (epoch 60) of each table, rearranged with
# one row per model and one column per initialisation: random weights, or
# pretrained on 50k, 100k or 200k CEM500K images.

# %%
final = claims.final_table(segmentation, "dice_percent")
for table_number, dataset in enumerate(paper.SEGMENTATION_DATASETS, start=2):
    display(Markdown(f"**{dataset}: test Dice (%) at epoch 60 (paper, Table {table_number})**\n\n"
                     + figures.markdown_table(final[dataset])))

# %% [markdown]
# ## Dice versus epoch
#
# The final column hides what the paper stresses most: how fast each model gets
# there. Each figure below is one dataset, each panel one model, each
# line one initialisation. Pretrained models (coloured) typically start far
# higher than random ones (grey), several of which score 0 Dice at epoch 5;
# by epoch 60 the lines mostly meet. Where runs of ours exist they are drawn in
# the same panels, dashed (real data) or dotted (synthetic toy runs).

# %% [markdown]
# Our runs are read one run folder at a time: each `results.csv` with the
# `config.json` beside it. Runs are pooled only when their configs are
# identical apart from the seed (`emlib.pooling.group_runs`; what does not count
# is listed in `emlib.pooling.EXECUTION_FIELDS`: output folder, device, workers and
# the like), so that a mean over seeds is never a mean over label fractions,
# epochs or pretrainings. A figure can draw one *setting* per source and task
# (runs that differ only in dataset, model and initialisation): the one with
# the most runs; all settings are listed at the end of the chapter.

# %%
# NBVAL_IGNORE_OUTPUT
our_groups = pooling.group_runs(pooling.load_runs(results.results_folders(results_dir)))
drawn = {}  # (source, metric) -> (setting, groups) drawn in the figures
for source in sorted({g.source for g in our_groups}):
    for metric in ("dice_percent", "l1"):
        split = pooling.settings([g for g in our_groups if g.source == source and g.metric == metric])
        if split:
            drawn[source, metric] = max(split.items(), key=lambda item: sum(len(g.runs) for g in item[1]))
for (source, metric), (setting, members) in drawn.items():
    print(f"drawn ({figures.SOURCE_LABELS.get(source, source)}, {metric}): setting {setting}, "
          f"{len(members)} configurations, n = {sorted({g.n for g in members})} seeds")
our_segmentation = [row for (_, metric), (_, members) in drawn.items() if metric == "dice_percent"
                    for g in members for row in g.rows()]
our_restoration = [row for (_, metric), (_, members) in drawn.items() if metric == "l1"
                   for g in members for row in g.rows()]
for dataset in figures.SEGMENTATION_DATASETS:
    figures.plot_dice_grid(segmentation, our_segmentation, dataset=dataset)
    plt.show()

# %% [markdown]
# ## The gain of pretraining, per model and receptive field
#
# The gain is the mean Dice over the three pretrained initialisations minus the
# Dice of random initialisation, for each dataset (dots) and on average over
# the datasets (bars). At the first evaluation the gain is large for almost
# every model; at the last it is within a few points of zero, and negative for
# some. The right panel shows the early gain of the U-Nets against their
# receptive field.

# %%
figures.plot_pretraining_gain(segmentation, our_segmentation)
plt.show()

# %% [markdown]
# ## Restoration on TEMImageNet (Table 7)
#
# The paper fine-tunes HRNet only, on three tasks: denoising (DN), noise and
# background removal (N&BGR), and super-resolution (SR). Lower L1 is better.

# %%
final_l1 = {task: models["HRNet"] for task, models in claims.final_table(restoration, "l1", group="task").items()}
display(Markdown("**TEMImageNet: test L1 of HRNet at epoch 60 (paper, Table 7)**\n\n" + figures.markdown_table(
    final_l1, row_names=paper.RESTORATION_TASKS, fmt="{:.5f}", corner="task")))
figures.plot_restoration_curves(restoration, our_restoration)
plt.show()

# %% [markdown]
# ## The paper's claims, checked against its own numbers
#
# The paper makes four claims. For each, we count in the paper's own tables how
# often it holds, with the definitions written out in `emlib.paper`:
# "first" and "last" are the first (epoch 5) and last (epoch 60) evaluations;
# the stability of a curve is measured by its total *setback*, the sum of all
# moves in the wrong direction between evaluations (the paper's own statement
# is about validation curves, which it shows only as figures).

# %%
paper_claims = claims.check_claims(segmentation, restoration)
for number, claim in enumerate(paper_claims, start=1):
    print(f"{number}. {claim['claim']}\n   paper's numbers: {claim['evidence']}\n")

# %% [markdown]
# Read this way, the paper's numbers support "pretraining speeds up
# convergence" far better than "pretraining gives a better final model": at the
# first evaluation the pretrained initialisations are ahead in most pairs, at
# the last in fewer than half. The same holds on TEMImageNet, where the
# pretrained models are ahead early and on average but not at epoch 60.
#
# The second claim, "small pretrained U-Nets match or beat larger randomly
# initialised ones", names no comparison, and its verdict depends on the one
# chosen. Four readings, each counted in the paper's own tables (a small model
# "matches" when within 1 Dice point):

# %%
variants = {v["variant"]: {"first evaluation (epoch 5)": f"{v['first']}/{v['datasets']}",
                           "last evaluation (epoch 60)": f"{v['last']}/{v['datasets']}"}
            for v in claims.small_vs_large_variants(segmentation)}
display(Markdown("**Datasets where the small pretrained U-Nets match the large random ones (paper's numbers)**\n\n"
                 + figures.markdown_table(variants, row_names=list(variants), fmt="{}", corner="comparison",
                                          column_names=("first evaluation (epoch 5)", "last evaluation (epoch 60)"))))

# %% [markdown]
# The sentence holds at epoch 5 when the small model is compared with the
# *worst* random 4-block U-Net, or when "small" includes the 3-block models;
# against the *best* random 4-block U-Net, the natural reading of "larger
# randomly initialised ones", it holds in 1 of 5 datasets at epoch 5 and in
# none at epoch 60. The paper's sentence is supported only by the lenient
# readings, and only early in training.
#
# ## Our runs beside the paper's
#
# The cell below lists every group of our runs that it found under
# `results_dir`, by source and setting. A group is one configuration: `runs`
# counts its run folders (a copy or a rerun of a run with the same seed counts
# once), `n` its distinct seeds. With several seeds the tables give the mean and
# the half-width of a 95% Student t interval over the seeds. Each setting's runs
# are checked against the paper's claims wherever they hold the models and
# initialisations a claim compares. (The output of this cell depends on which
# runs exist on the machine that built the book, so the notebook tests do not
# compare it.)

# %%
# NBVAL_IGNORE_OUTPUT
if not our_groups:
    print(f"No finished runs of ours under {Path(results_dir).resolve()}: the figures above show the paper's numbers only.")
for source in sorted({g.source for g in our_groups}):
    label = figures.SOURCE_LABELS.get(source, source)
    for metric in ("dice_percent", "l1"):
        for setting, members in pooling.settings([g for g in our_groups if g.source == source and g.metric == metric]).items():
            display(Markdown(f"**{label}, setting {setting}**: {len(members)} configurations, "
                             f"{sum(len(g.runs) for g in members)} runs\n\n" + pooling.summary_table(members, markdown=True)))
            rows = [row for g in members for row in g.rows()]
            seg, res = (rows, []) if metric == "dice_percent" else ([], rows)
            for dataset, table in claims.final_table(seg, "dice_percent", with_ci=True).items():
                display(Markdown(f"**{dataset}: test Dice (%) at the last epoch ({label}, {setting})**\n\n"
                                 + figures.markdown_table(table, fmt=figures.mean_ci_cell)))
            for task, table in claims.final_table(res, "l1", group="task", with_ci=True).items():
                display(Markdown(f"**{task}: test L1 at the last epoch ({label}, {setting})**\n\n"
                                 + figures.markdown_table(table, fmt=lambda cell: figures.mean_ci_cell(cell, 4))))
            for claim, mine in zip(paper_claims, claims.check_claims(seg, res)):
                if mine["evidence"] != claims.NOT_MEASURED:
                    print(f"- {claim['claim']}\n    paper: {claim['evidence']}\n    {label}, {setting}: {mine['evidence']}")

# %% [markdown]
# ## Our small real-data study
#
# Everything above is the paper's numbers or toy runs. This section is the one
# place in the book with results of ours **on real data**: a small study run on a
# 2-core CPU (`python -m emlib sweep experiments/real_small.yaml`, committed under
# `results/real_small/`; see {doc}`../book/reproduction_status` for the runs,
# hardware and commit). Pretraining uses the paper's recipe on real cellular EM
# patches, a small fraction of the paper's CEM500K subsets; fine-tuning uses two
# real nanoparticle TEM sets, msa_segtrack and EMPS. None of this is the paper's
# data or scale: it is *ours, real data, small scale (CPU)*, and it tests the
# direction of the paper's claims, not its numbers. Every number below is read
# from the run folders (their `config.json` and `summary.json`) and from the scores
# the sweep writes beside them (`baselines.csv`, `cross_dataset.csv`); a setting
# whose runs have not finished yet is listed as such.
#
# The design, as the finished runs record it: the pretraining runs (steps, crop,
# the final validation L1 against the identity G(A) = A, and whether the
# validation curve had flattened: its last quarter no better than the quarter
# before, beyond the curve's own scatter), then the fine-tuning schedules.

# %%
# NBVAL_IGNORE_OUTPUT
from emlib import grid, study
from emlib.paths import REPO_ROOT


real_groups = [g for g in study.load_groups(real_results) if g.metric == "dice_percent"] if real_results else []
full_labels = [g for g in real_groups if study.describe(g)["label_fraction"] == 1.0]
baselines = study.load_baselines(real_results) if real_results else {}
spec_path = REPO_ROOT / "experiments" / "real_small.yaml"
planned = study.planned_settings(grid.expand_grid(grid.load_spec(spec_path))) if spec_path.is_file() else {}
print(f"{len(real_groups)} settings of finished real-data fine-tuning runs under {real_results}, "
      f"of {len(planned)} the sweep plans" + ("" if real_groups else ": none finished yet"))
if real_results and (made := study.provenance_summary(real_results))["runs"]["pretraining"] + made["runs"]["fine-tuning"]:
    print(f"runs: {made['runs']['pretraining']} pretraining ({made['wall_hours']['pretraining']:.1f} h), "
          f"{made['runs']['fine-tuning']} fine-tuning ({made['wall_hours']['fine-tuning']:.1f} h) of wall time per run, summed")
    print(f"hardware: {'; '.join(made['machines'])}, torch threads per run: {made['threads']}")
    print(f"precision (amp 'auto': bf16 autocast where the processor has it natively): {made['precision']}")
    print(f"code: commit(s) {', '.join(c[:12] for c in made['commits'])}")

pretraining = study.pretraining_design(real_results) if real_results else {}
if pretraining:
    columns = list(next(iter(pretraining.values())))
    display(Markdown("**Pretraining runs (real cellular EM)**\n\n" + figures.markdown_table(
        pretraining, row_names=list(pretraining), column_names=columns, fmt=figures.study_cell, corner="run")
        + f"\n\n({study.FLATTENED_RULE})"))
else:
    print("pretraining: not finished yet")
schedules = study.finetuning_design(real_groups)
if schedules:
    columns = list(next(iter(schedules.values())))
    display(Markdown("**Fine-tuning settings (finished runs)**\n\n" + figures.markdown_table(
        schedules, row_names=[s for s in planned if s in schedules] + sorted(set(schedules) - set(planned)),
        column_names=columns, fmt=figures.study_cell, corner="setting")))
waiting = [s for s in planned if s not in schedules]
if waiting:
    print("not finished yet:", "; ".join(waiting))

# %% [markdown]
# Test Dice of the best-by-validation model at each evaluation (the protocol of the
# paper's tables), mean over seeds with its 95% interval (clipped to 0-100; the
# legend gives the seeds), for random, GAN-pretrained and L1-only-pretrained starts,
# beside the two training-free baselines of the same test split: a per-image Otsu
# threshold (its polarity chosen on the train split) and calling every pixel
# particle ("all-foreground"). The last column shows the paper's curves for the same
# architecture (mean over its five Au datasets; pretrained = mean of P50k, P100k,
# P200k). The paper's epochs are longer: read the shapes, not the x positions.

# %%
# NBVAL_IGNORE_OUTPUT
main_groups = [g for g in full_labels if study.describe(g)["head"] != "transfer"]  # the head ablation comes later
if not main_groups:
    print("fine-tuning at full labels: not finished yet")
else:
    datasets = sorted({study.describe(g)["dataset"] for g in main_groups})
    models = sorted({study.describe(g)["model"] for g in main_groups})
    fig, axes = plt.subplots(len(models), len(datasets) + 1, figsize=(4 * (len(datasets) + 1), 3.1 * len(models)),
                             squeeze=False)
    for row, model_name in enumerate(models):
        for col, dataset_name in enumerate(datasets):
            ax = axes[row, col]
            members = [g for g in main_groups if study.describe(g)["dataset"] == dataset_name
                       and study.describe(g)["model"] == model_name]
            figures.plot_group_curves(sorted(members, key=lambda group: group.init_kind), ax,
                                      baselines=baselines.get(dataset_name))
            ax.set_title(f"{dataset_name}, {model_name}\n({figures.REAL_SMALL_LABEL})", fontsize=9)
            ax.set_ylabel("test Dice (%)")
            if not members:
                ax.text(0.5, 0.5, "not finished yet", ha="center", va="center", transform=ax.transAxes)
            ax.legend(fontsize=7)
        ax = axes[row, -1]
        paper_model = results.paper_model_name(model_name)
        for kind, inits in (("random", ("random",)), ("GAN", paper.PRETRAINED_INITS)):
            by_epoch = {}
            for r in segmentation:
                if r["model"] == paper_model and r["init"] in inits:
                    by_epoch.setdefault(r["epoch"], []).append(r["dice_percent"])
            if by_epoch:
                ax.plot(sorted(by_epoch), [sum(by_epoch[e]) / len(by_epoch[e]) for e in sorted(by_epoch)], marker="o",
                        markersize=3, color=figures.STUDY_INIT_COLORS[kind], label=kind)
        ax.set_title(f"paper, {paper_model}, mean of 5 Au sets", fontsize=9)
        ax.set_xlabel("epoch")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    plt.show()

# %% [markdown]
# Every full-label setting at its last evaluation: the mean test Dice over seeds
# with its 95 % interval, beside the training-free baselines of its dataset. A
# setting "beats Otsu" when its whole interval lies above Otsu's score, "does not
# beat Otsu" when it lies below, and "ties with Otsu" otherwise. Then the
# *plateau count*: how many fine-tuning runs set their best validation score before
# the last fifth of their training, and how much the last fifth still added for the
# others (a gain within the validation score's scatter is noise; more is learning).

# %%
# NBVAL_IGNORE_OUTPUT
against = study.baseline_table(full_labels, baselines)
full_planned = [s for s in planned if "labels" not in s]
for setting in full_planned:
    against.setdefault(setting, {"test Dice, last evaluation": "not finished yet"})
if against:
    columns = ("test Dice, last evaluation", "Otsu", "all-foreground", "against Otsu", "seeds still learning")
    display(Markdown("**Test Dice (%) at the last evaluation, full labels, beside the training-free baselines "
                     f"({figures.REAL_SMALL_LABEL})**\n\n" + figures.markdown_table(
                         against, row_names=full_planned + sorted(set(against) - set(full_planned)),
                         column_names=columns, fmt=figures.study_cell, corner="setting")))
if not baselines:
    print(f"no baselines.csv under {real_results} yet (the sweep's scores: step writes it)")
print("plateau:", study.plateau_text(study.plateau_count(real_results) if real_results else {"runs": 0}))

# %% [markdown]
# ### Beyond the paper: scored on the other dataset
#
# Each full-label model is also scored on the test split of the dataset it was
# *not* trained on (EMPS -> msa_segtrack and back), with no further training:
# what a user who never labelled their own images would get. Beside it, the
# same models' Dice on their own test split, and Otsu's on the target split.

# %%
# NBVAL_IGNORE_OUTPUT
transfer = study.cross_dataset_table(real_results, baselines) if real_results else {}
if transfer:
    display(Markdown(f"**Cross-dataset test Dice (%) ({figures.REAL_SMALL_LABEL})**\n\n" + figures.markdown_table(
        transfer, row_names=list(transfer), fmt=figures.study_cell, corner="trained on -> scored on, model, init",
        column_names=("Dice on the other dataset", "Dice on its own dataset", "Otsu on the other dataset",
                      "against Otsu there"))))
else:
    print("cross-dataset scores: not finished yet (the sweep's scores: step writes cross_dataset.csv)")

# %% [markdown]
# ### The output head: carried over or re-initialised
#
# A generator has one output channel, like the segmentation network, so its
# image-reconstruction head could be copied into segmentation; the study
# re-initialises it (see {doc}`../book/choices`) and keeps one ablation that carries
# it over (GAN-pretrained `unet_2_44`, both datasets, the same seeds).

# %%
# NBVAL_IGNORE_OUTPUT
ablation = [g for g in full_labels if study.describe(g)["head"] == "transfer"]
if not ablation:
    print("head ablation: not finished yet")
else:
    datasets = sorted({study.describe(g)["dataset"] for g in ablation})
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.2), squeeze=False)
    for ax, dataset_name in zip(axes[0], datasets):
        carried = [g for g in ablation if study.describe(g)["dataset"] == dataset_name]
        model_name = study.describe(carried[0])["model"]
        fresh = study.find(full_labels, dataset=dataset_name, model=model_name, init="GAN")
        head_of = lambda group: "GAN, carried head" if study.describe(group)["head"] == "transfer" else "GAN, fresh head"
        figures.plot_group_curves([g for g in (fresh, *carried) if g], ax, label=head_of,
                                  colors={"GAN, fresh head": "tab:blue", "GAN, carried head": "tab:orange"},
                                  baselines=baselines.get(dataset_name))
        ax.set_title(f"{dataset_name}, {model_name}: the output head\n({figures.REAL_SMALL_LABEL})", fontsize=9)
        ax.set_ylabel("test Dice (%)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## The paper's claims: its numbers and our evidence on real data
#
# For each claim, the paper's own numbers (counted above) and what our real runs
# say. Our comparisons pair the seeds (the same seed gives the same data order
# and crops whatever the initialisation) and give the mean difference with its
# 95% Student t interval, and the smallest difference these seeds could have
# detected (80 % power, from the spread of the paired differences): "cannot tell"
# then reads as "no difference larger than that". A verdict is *supports* when the
# whole interval lies on the claimed side, *contradicts* when it lies on the other,
# *cannot tell* otherwise, and *mixed* when comparisons disagree (the lines below
# each verdict say which). Where runs *end* (their last evaluation, their mean over
# training, their setbacks) is compared only when both sides plateaued: with a run
# still learning when it stopped (its best validation score in its last fifth), the
# line says *not compared: still learning* and names its seeds, and the verdict
# rests on the comparisons that were made. The first evaluation, a fixed point
# early in training (a head start), is compared as it is. Two rows are ours, not
# the paper's: the L1-only ablation and the output head.

# %%
# NBVAL_IGNORE_OUTPUT
if not full_labels:
    print("the claims on real data: not finished yet")
else:
    evidence = study.claims_evidence(real_groups)
    paper_side = {c["claim"]: c["evidence"] for c in paper_claims}
    table = {f"{i}. {e['claim']}": {"paper's numbers": paper_side.get(e["claim"], "not in the paper"),
                                    "our evidence on real data (small scale)": e["verdict"]}
             for i, e in enumerate(evidence, start=1)}
    display(Markdown(figures.markdown_table(table, row_names=list(table), fmt="{}", corner="claim",
                                            column_names=("paper's numbers", "our evidence on real data (small scale)"))))
    for i, e in enumerate(evidence, start=1):
        print(f"{i}. {e['verdict']}:")
        for line in e["details"]:
            print("     " + line)

# %% [markdown]
# ### When a pretrained start trails the random one
#
# A pretrained network that ends below its random twin is a surprise, and the
# first place to look for its cause is the generator it started from. The table
# sets, for each setting with both starts, what its GAN generator had learnt by the
# end of pretraining (its validation L1 against the identity G(A) = A's: a positive
# change means it restores *worse* than returning its input) beside the paired
# test-Dice difference GAN - random at the first evaluation (the head start) and at
# the last. A generator that never beat the identity hands fine-tuning weights of
# unknown worth, so a setting started from one cannot test the claim that
# pretraining helps: the curves of chapter 3 show which generators those are. The
# last column names the seeds still learning when they stopped, whose end points the
# verdicts above do not compare.

# %%
# NBVAL_IGNORE_OUTPUT
against_random = study.pretrained_against_random(real_results, real_groups) if real_groups else {}
if against_random:
    columns = list(next(iter(against_random.values())))
    display(Markdown(f"**GAN-pretrained against random starts ({figures.REAL_SMALL_LABEL})**\n\n" + figures.markdown_table(
        against_random, row_names=list(against_random), column_names=columns, fmt="{}", corner="setting")))
else:
    print("pretrained against random starts: not finished yet")
