"""Figures and tables that set our runs beside the paper's numbers.

Every plot marks the source of each line: the paper (solid), our runs on real
data (dashed) and our toy runs on synthetic data (dotted); titles say so too.
Inputs are rows as returned by `emlib.paper.load_*` and `emlib.results.load_our_results`;
`plot_log` draws a run's own log (loss curves of log.csv, validation.csv, ...).
"""
import json
from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from emlib.claims import curves
from emlib.inits import is_pretrained
from emlib.paper import INITS, MODELS, RESTORATION_TASKS, SEGMENTATION_DATASETS, TASK_ABBREVIATIONS
from emlib.run_folder import read_log, run_file

INIT_COLORS = {"random": "0.35", "P50k": "tab:blue", "P100k": "tab:orange", "P200k": "tab:green", "pretrained": "tab:purple"}
SOURCE_STYLES = {"paper": dict(linestyle="-"), "real": dict(linestyle="--", marker="o", markersize=3),
                 "synthetic": dict(linestyle=":", marker="x", markersize=3)}
SOURCE_LABELS = {"paper": "paper", "real": "ours, real data", "synthetic": "ours, synthetic toy run"}


def markdown_table(table: dict, row_names=MODELS, column_names=INITS, fmt="{:.2f}", corner="model") -> str:
    """A {row: {column: value}} table as Markdown; missing cells show as a dash.

    `fmt` is a format string or a function of the cell value. Rows and columns
    that are entirely missing are left out.
    """
    render = fmt if callable(fmt) else fmt.format
    rows = [r for r in row_names if r in table] + sorted(r for r in table if r not in row_names)
    present = {c for r in rows for c in table[r]}
    columns = [c for c in column_names if c in present] + sorted(present - set(column_names))
    lines = ["| " + " | ".join([corner] + columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for r in rows:
        cells = [render(table[r][c]) if c in table[r] else "-" for c in columns]
        lines.append("| " + " | ".join([r] + cells) + " |")
    return "\n".join(lines)


def mean_ci_cell(cell, digits=2) -> str:
    """(mean, ci95, n) as `mean ± ci (n=3)`, or just the mean for one seed."""
    mean, ci, n = cell
    return f"{mean:.{digits}f}" if n == 1 else f"{mean:.{digits}f} ± {ci:.{digits}f} (n={n})"


def study_cell(value) -> str:
    """One cell of the real study's tables: (mean, ci95, n) as `mean ± ci (n=3)`, a float rounded (3 significant
    digits below 1, else one decimal), a bool as yes / no, None as a dash."""
    if isinstance(value, tuple):
        return mean_ci_cell(value, 1) + ("" if value[2] > 1 else " (n=1)")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"
    return "-" if value is None else str(value)


def _plot_curve(ax, curve, init, source, label=None):
    epochs = sorted(curve)
    means = [curve[e][0] for e in epochs]
    ax.plot(epochs, means, color=INIT_COLORS.get(init, "k"), label=label, linewidth=1, **SOURCE_STYLES[source])
    if any(curve[e][2] > 1 for e in epochs):  # several seeds: 95% interval
        low = [curve[e][0] - curve[e][1] for e in epochs]
        high = [curve[e][0] + curve[e][1] for e in epochs]
        ax.fill_between(epochs, low, high, color=INIT_COLORS.get(init, "k"), alpha=0.2, linewidth=0)


def _legend_handles(sources):
    handles = [plt.Line2D([], [], color=INIT_COLORS[i], label=i) for i in INITS]
    if any(source != "paper" for source in sources):
        handles.append(plt.Line2D([], [], color=INIT_COLORS["pretrained"], label="pretrained (other subset)"))
    handles += [plt.Line2D([], [], color="k", label=SOURCE_LABELS[s], **SOURCE_STYLES[s]) for s in sources]
    return handles


def _sources(curve_map):
    return sorted({key[3] for key in curve_map}, key=list(SOURCE_STYLES).index)


def plot_dice_grid(paper_rows, our_rows=(), dataset=SEGMENTATION_DATASETS[0], models=MODELS, columns=5):
    """Dice (%) versus epoch on one dataset: one panel per model (`columns` a row, so that the panels
    stay readable at a book's width), one line per init and source."""
    curve_map = curves(list(paper_rows) + list(our_rows), "dice_percent", "dataset")
    rows = -(-len(models) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.1 * columns, 2.0 * rows + 0.9), sharex=True, sharey=True,
                             squeeze=False)
    panels = dict(zip(models, axes.flat))
    for (name, model, init, source), curve in curve_map.items():
        if name == dataset and model in panels:
            _plot_curve(panels[model], curve, init, source)
    for ax in axes.flat[len(models):]:
        ax.set_visible(False)
    for index, (model, ax) in enumerate(panels.items()):
        ax.set_title(model, fontsize=8)
        ax.tick_params(labelsize=7)
        if index % columns == 0:
            ax.set_ylabel("Dice %", fontsize=8)
        if index >= len(models) - columns:
            ax.set_xlabel("epoch", fontsize=8)
    sources = sorted({key[3] for key in curve_map if key[0] == dataset}, key=list(SOURCE_STYLES).index)
    fig.legend(handles=_legend_handles(sources), loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle(f"{dataset}: test Dice of the best checkpoint so far; " + _source_note(curve_map, "Tables 2-6"), fontsize=9)
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    return fig


def plot_restoration_curves(paper_rows, our_rows=(), tasks=RESTORATION_TASKS):
    """Test L1 versus epoch for the TEMImageNet tasks (HRNet), one panel per task."""
    curve_map = curves(list(paper_rows) + list(our_rows), "l1", "task")
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.2), squeeze=False)
    for (task, _, init, source), curve in curve_map.items():
        if task in tasks:
            _plot_curve(axes[0][tasks.index(task)], curve, init, source)
    for ax, task in zip(axes[0], tasks):
        ax.set_title(f"{task.replace('_', ' ')} ({TASK_ABBREVIATIONS[task]})", fontsize=10)
        ax.set_xlabel("epoch")
    axes[0][0].set_ylabel("test L1 (lower is better)")
    fig.legend(handles=_legend_handles(_sources(curve_map)), loc="lower center", ncol=8, fontsize=8, frameon=False)
    fig.suptitle("TEMImageNet restoration with HRNet; " + _source_note(curve_map, "Table 7"), fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    return fig


def pretraining_gain(rows, epoch_pick="last") -> dict:
    """Dice gain of pretraining: mean over pretrained inits minus random, per (source, dataset, model).

    `epoch_pick` is `first` or `last` (the first or last evaluated epoch).
    """
    if epoch_pick not in ("first", "last"):
        raise ValueError(f"epoch_pick must be 'first' or 'last', got {epoch_pick!r}")
    pick = min if epoch_pick == "first" else max
    by_pair = defaultdict(dict)
    for (dataset, model, init, source), curve in curves(rows, "dice_percent", "dataset").items():
        by_pair[(source, dataset, model)][init] = curve[pick(curve)][0]
    gains = {}
    for key, values in by_pair.items():
        pretrained = [v for i, v in values.items() if is_pretrained(i)]
        if "random" in values and pretrained:
            gains[key] = sum(pretrained) / len(pretrained) - values["random"]
    return gains


def plot_pretraining_gain(paper_rows, our_rows=(), models=MODELS):
    """Pretraining gain per model (bars: mean over datasets; dots: each dataset),
    at the first and at the last evaluated epoch, and versus the U-Nets' receptive field."""
    rows = list(paper_rows) + list(our_rows)
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    for ax, epoch_pick in zip(axes[:2], ("first", "last")):
        gains = pretraining_gain(rows, epoch_pick)
        sources = sorted({k[0] for k in gains}, key=list(SOURCE_STYLES).index)
        width = 0.8 / max(len(sources), 1)
        for s, source in enumerate(sources):
            for m, model in enumerate(models):
                values = [g for (src, _, mod), g in gains.items() if src == source and mod == model]
                if not values:
                    continue
                x = m + (s - (len(sources) - 1) / 2) * width
                labelled = SOURCE_LABELS[source] in ax.get_legend_handles_labels()[1]
                ax.bar(x, sum(values) / len(values), width, color="tab:blue" if source == "paper" else "tab:red",
                       alpha=0.5, label=None if labelled else SOURCE_LABELS[source])
                ax.plot([x] * len(values), values, "k.", markersize=3)
        ax.axhline(0, color="k", linewidth=0.8)
        ax.set_xticks(range(len(models)), models, rotation=60, fontsize=7)
        ax.set_ylabel("Dice gain (points)")
        ax.set_title(f"{epoch_pick} evaluation", fontsize=10)
        ax.legend(fontsize=7)
    gains = pretraining_gain([r for r in rows if r.get("receptive_field")], "first")
    markers = {2: "o", 3: "s", 4: "^"}
    for (source, dataset, model), gain in gains.items():
        blocks, rf = int(model.split("_")[1]), int(model.split("_")[2])
        axes[2].scatter(rf, gain, marker=markers.get(blocks, "o"), s=14,
                        color="tab:blue" if source == "paper" else "tab:red", alpha=0.6)
    axes[2].axhline(0, color="k", linewidth=0.8)
    axes[2].set_xlabel("receptive field (px)")
    axes[2].set_ylabel("Dice gain at first evaluation")
    axes[2].set_title("U-Nets: gain vs receptive field (o 2, s 3, ^ 4 blocks)", fontsize=10)
    fig.suptitle("Gain of pretraining (mean of the pretrained inits minus random); " + _source_note_rows(rows, "Tables 2-6"), fontsize=10)
    fig.tight_layout()
    return fig


def _describe(sources, paper_ref):
    return "sources: " + ", ".join(f"paper, {paper_ref}" if s == "paper" else SOURCE_LABELS[s] for s in sources)


def _source_note(curve_map, paper_ref):
    return _describe(_sources(curve_map), paper_ref)


def _source_note_rows(rows, paper_ref):
    return _describe(sorted({r.get("source") or "paper" for r in rows}, key=list(SOURCE_STYLES).index), paper_ref)


def plot_log(csv_path, columns=None, x: str = "step", ax=None, title: str | None = None, logy: bool = False, label_prefix: str = ""):
    """Plot columns of a run's log CSV against `x` (all numeric columns but `x` when None)."""
    log = read_log(csv_path)
    if x not in log:
        raise ValueError(f"{csv_path}: no column {x!r} to plot against; columns are {list(log)}")
    columns = columns or [c for c in log if c != x and not np.all(np.isnan(log[c]))]
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    for column in columns:
        if column not in log:
            raise ValueError(f"{csv_path}: no column {column!r}; columns are {list(log)}")
        ax.plot(log[x], log[column], label=label_prefix + column)
    ax.set_xlabel(x)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


# ---------------------------------------------------------------- our real-data study (results/real_small)

STUDY_INIT_COLORS = {"random": "0.35", "GAN": "tab:blue", "L1-only": "tab:red"}
REAL_SMALL_LABEL = "ours, real data, small scale (CPU)"


def plot_pretraining_curves(run_folders: dict, ax=None, title: str | None = None):
    """Validation L1 against step for pretraining runs {label: run folder}, with each run's identity baseline.

    The identity, G(A) = A, is the L1 between the corrupted and the clean validation
    images (`identity_val_l1` of the run's summary): a generator that does not beat
    it has learned nothing about restoring EM.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.4))
    for (label, folder), color in zip(run_folders.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        log = read_log(run_file(folder, "validation.csv"))
        ax.plot(log["step"], log["val_l1"], marker="o", markersize=3, color=color, label=label)
        summary = Path(folder) / "summary.json"
        if summary.is_file() and "identity_val_l1" in json.loads(summary.read_text()):
            ax.axhline(json.loads(summary.read_text())["identity_val_l1"], color=color, linestyle=":", linewidth=1)
    ax.plot([], [], color="0.4", linestyle=":", label="identity G(A) = A")
    ax.set_xlabel("step")
    ax.set_ylabel("validation L1 ([0, 1] intensities)")
    ax.set_title(title or f"GAN pretraining on real cellular EM ({REAL_SMALL_LABEL})", fontsize=10)
    ax.legend(fontsize=8)
    return ax


def plot_group_curves(groups, ax, label=lambda group: group.init_kind, colors=STUDY_INIT_COLORS, metric=None,
                      baselines=None):
    """Mean over seeds of each group's curve (test metric of the best-by-validation model per epoch), with its
    95% band clipped to [0, 100] for Dice; the legend says how many seeds. `baselines` {name: score} are drawn as
    horizontal lines (the training-free Otsu and all-foreground scores of the dataset)."""
    for group in groups:
        curve = group.curve(metric)
        epochs = sorted(curve)
        name = label(group)
        color = colors.get(name, None)
        means = np.array([curve[e][0] for e in epochs])
        half = np.array([curve[e][1] for e in epochs])
        ax.plot(epochs, means, marker="o", markersize=3, color=color, label=f"{name} (n={group.n} seeds)")
        if group.n > 1:
            low, high = means - half, means + half
            if (metric or group.metric) == "dice_percent":
                low, high = np.clip(low, 0, 100), np.clip(high, 0, 100)
            ax.fill_between(epochs, low, high, color=color, alpha=0.2, linewidth=0)
    draw_baselines(ax, baselines)
    ax.set_xlabel("epoch")
    return ax


BASELINE_STYLES = {"otsu": ("Otsu", "--"), "all_foreground": ("all-foreground", ":")}


def draw_baselines(ax, baselines):
    """The training-free baselines {name: score} of a dataset (`emlib.study.load_baselines`) as horizontal lines."""
    for name, score in (baselines or {}).items():
        label, style = BASELINE_STYLES.get(name, (name, "-."))
        ax.axhline(score, color="k", linestyle=style, linewidth=1, label=f"{label} (no training)")


def plot_restorations(columns: dict, title: str):
    """A grid of image batches {column title: (N, 1, H, W) tensor in [0, 1]}: one row per image (as the paper's Fig. 5)."""
    rows = len(next(iter(columns.values())))
    fig, axes = plt.subplots(rows, len(columns), figsize=(2.1 * len(columns), 2.1 * rows), squeeze=False)
    for col, (name, images) in enumerate(columns.items()):
        axes[0, col].set_title(name, fontsize=8)
        for row in range(rows):
            axes[row, col].imshow(images[row, 0].clamp(0, 1), cmap="gray", vmin=0, vmax=1)
            axes[row, col].axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def label_efficiency_axes(ax, ticks, tick_labels, xlabel: str, title: str):
    """The axes of a label-efficiency plot: log x at the label counts or fractions, test Dice up, legend, grid."""
    ax.set_xscale("log")
    ax.set_xticks(ticks, tick_labels)
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test Dice (%), best-by-validation model")
    ax.set_title(title, fontsize=10)
    ax.legend(title="initialisation")
    ax.grid(alpha=0.3)
    ax.figure.tight_layout()
    return ax
