"""Results files: one schema per downstream task, shared by the runs that write
them and the notebooks that read them.

The columns are those of the paper's tables (`emlib/paper_tables/*.csv`) plus what makes
a result traceable: the seed, the label fraction and the source of the data
(`synthetic` for toy runs on generated data, `real` for the real datasets).
"""
import csv
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from emlib.config import upgrade

PAPER_SEGMENTATION_COLUMNS = ["table", "dataset", "model", "blocks", "receptive_field", "init", "epoch", "dice_percent"]
SEGMENTATION_COLUMNS = PAPER_SEGMENTATION_COLUMNS + ["seed", "label_fraction", "source", "run_id"]

PAPER_RESTORATION_COLUMNS = ["table", "dataset", "task", "model", "init", "epoch", "l1"]
RESTORATION_COLUMNS = PAPER_RESTORATION_COLUMNS + ["psnr", "ssim", "seed", "source", "run_id"]


# Registry names -> the names printed in the paper's tables.
def paper_model_name(registry_name: str) -> str:
    """`unet_4_424` -> `U-Net_4_424`; every HRNet width -> `HRNet` (the paper has one)."""
    if registry_name.startswith("unet_"):
        _, blocks, rf = registry_name.split("_")
        return f"U-Net_{blocks}_{rf}"
    if registry_name.startswith("hrnet"):
        return "HRNet"
    return registry_name


def append_rows(path, rows, columns):
    """Append dict rows to a CSV file, writing the header when the file is new.

    Rows must have exactly `columns` as keys (missing or unknown keys raise a
    ValueError naming them), so that every results file keeps one schema.
    """
    path = Path(path)
    for row in rows:
        missing, unknown = set(columns) - set(row), set(row) - set(columns)
        if missing or unknown:
            raise ValueError(f"results row for {path}: missing columns {sorted(missing)}, unknown columns {sorted(unknown)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        if new:
            writer.writeheader()
        writer.writerows(rows)
        f.flush()
        os.fsync(f.fileno())


def read_rows(path):
    """All rows of a results CSV as a list of dicts (strings as written)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- runs and their configs
#
# A run folder holds config.json (written first), results.csv and, once finished,
# summary.json (the run contract of emlib.training). Runs are pooled over seeds only
# when everything else that defines them is the same: one rule, `group_runs`.

# Config fields that say how or where a run was executed, not what was run. Runs that
# differ only in these and in the seed are pooled; every other field of config.json
# separates them (dataset, task, model, init, label_fraction, epochs, steps_per_epoch,
# crop, eval_crop, batch_size, lr, augmentation switches, amp, split_seed, ... and any
# field added later). A field missing from an older config.json counts as different
# from any value, so old and new runs are never pooled by accident.
EXECUTION_FIELDS = {
    "output_dir": "where the run was written",
    "data_root": "where the data lies; which data it is stays in the key as the rows' `source` and `dataset` "
                 "(except for dataset='folder', see _experiment_part)",
    "device": "cpu or cuda: the same computation up to float rounding",
    "workers": "data-loader processes",
    "compile": "torch.compile: the same model, compiled",
    "channels_last": "a memory layout",
    "deterministic": "the choice of cuDNN algorithms for the same computation",
    "test": "whether test scores are recorded (a run without them has no results rows)",
    "manifest_path": "pretraining: where the subset manifest is cached",
    "checkpoint_every": "pretraining: checkpoint cadence",
    "log_every": "pretraining: log cadence",
}
SEED_FIELD = "seed"  # the replicate index: what a group pools over
TABLE_AXES = ("dataset", "task", "model", "init")  # the axes of the paper's tables; `settings` is the rest
METRICS = ("dice_percent", "l1", "psnr", "ssim")


def results_folders(results_dir) -> list:
    """The results folder, and for a relative one the same name in the two parent
    folders too: notebooks run from notebooks/ see both their own runs and the
    repository's runs/ (where `python -m emlib sweep` writes)."""
    results_dir = Path(results_dir)
    candidates = [results_dir] if results_dir.is_absolute() else [base / results_dir for base in [Path.cwd(), *Path.cwd().parents[:2]]]
    folders = []
    for folder in candidates:
        if folder.is_dir() and folder.resolve() not in folders:
            folders.append(folder.resolve())
    return folders


def _experiment_part(config: dict) -> dict:
    """The config without the seed and the execution fields. With `dataset="folder"` (a
    user's folder of images) the folder is the only name of the data: data_root stays."""
    part = {k: v for k, v in config.items() if k not in EXECUTION_FIELDS and k != SEED_FIELD}
    if config.get("dataset") == "folder":
        part["data_root"] = config.get("data_root")
    return part


def init_identity(init, run_dir) -> dict | str:
    """What a run's `init` names: "random", or the pretraining behind the weights.

    A pretrained generator is identified by its model card (the pretraining config
    without its execution fields, seed included, plus the data source), found
    beside the weights. A relative path is tried from the working directory and
    from each folder above the run. Without a model card, the path as written
    (trailing generator.safetensors dropped) is all there is.
    """
    if init in (None, "random"):
        return "random"
    path = Path(init)
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, *(parent / path for parent in Path(run_dir).resolve().parents)]
    for candidate in candidates:
        folder = candidate if candidate.is_dir() else candidate.parent
        card = folder / "model_card.json"
        if candidate.exists() and card.is_file():
            card = upgrade(json.loads(card.read_text()))  # renamed config fields under their new names
            return {"pretraining": _experiment_part(card.get("config", {})) | {SEED_FIELD: card.get("config", {}).get(SEED_FIELD)},
                    "source": card.get("source")}
    return {"weights": str(init[: -len("/generator.safetensors")] if str(init).endswith("/generator.safetensors") else init)}


@dataclass
class Run:
    """One run folder: its config.json, its results rows (numbers parsed) and whether it finished."""
    folder: Path
    config: dict
    rows: list
    finished: bool

    @property
    def seed(self):
        return self.config.get(SEED_FIELD)

    @property
    def source(self) -> str:
        sources = {row.get("source") for row in self.rows}
        if len(sources) != 1:
            raise ValueError(f"{self.folder / 'results.csv'}: expected one source, found {sorted(map(str, sources))}")
        return sources.pop()

    def experiment(self) -> dict:
        """Everything that defines the run but the seed: the key of its group."""
        return {**_experiment_part(self.config), "init": init_identity(self.config.get("init"), self.folder),
                "source": self.source}


def load_runs(folders) -> list:
    """Every run under `folders` (a folder or a list): each `results.csv` with a
    `config.json` beside it, read once even when two folders reach it. A results
    file without a config.json cannot be grouped: it is left out with a warning;
    the sweep's aggregates (results_segmentation.csv, ...) are derived files, not runs."""
    from emlib.paper import parse_row  # emlib.paper imports this module

    folders = [folders] if isinstance(folders, (str, Path)) else folders
    paths = sorted({p.resolve() for folder in folders for p in Path(folder).glob("**/results.csv")})
    runs = []
    for path in paths:
        config_path = path.parent / "config.json"
        if not config_path.is_file():
            warnings.warn(f"{path}: no config.json beside it, so it cannot be grouped with other runs; left out")
            continue
        rows = [parse_row(row) for row in read_rows(path)]
        if rows:
            runs.append(Run(path.parent, json.loads(config_path.read_text()), rows, (path.parent / "summary.json").is_file()))
    return runs


# ---------------------------------------------------------------- groups of runs


def mean_ci95(values) -> tuple:
    """Mean and half-width of the 95% Student t confidence interval (0 for one value)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_ci95: values is empty")
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, t_quantile_975(n - 1) * std / math.sqrt(n)


# t(0.975, df) for df = 1..30 (4 decimals); beyond, the Cornish-Fisher expansion (error < 2e-6)
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788,
         2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639,
         2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


@dataclass
class Group:
    """Runs with one experiment config (`group_runs`): the replicates of one setting over seeds."""
    experiment: dict
    runs: list = field(default_factory=list)

    @property
    def seeds(self) -> list:
        return sorted({run.seed for run in self.runs})

    @property
    def n(self) -> int:
        """The number of distinct seeds: duplicates of a seed count once."""
        return len(self.seeds)

    @property
    def duplicates(self) -> int:
        """Runs beyond one per seed (reruns or copies of a run)."""
        return len(self.runs) - self.n

    @property
    def source(self) -> str:
        return self.experiment["source"]

    @property
    def init_tag(self) -> str:
        """The `init` column of the group's results rows (random, P50k, pretrained, pretrained-L1, ...)."""
        return self.runs[0].rows[0]["init"]

    @property
    def metric(self) -> str:
        """The main metric: dice_percent (segmentation) or l1 (restoration)."""
        return "dice_percent" if "dice_percent" in self.runs[0].rows[0] else "l1"

    def rows(self) -> list:
        """One results row per seed and epoch: the rows of the seed's first run, with each
        metric averaged over the seed's duplicates (equal for deterministic reruns)."""
        merged = {}
        for run in sorted(self.runs, key=lambda r: str(r.folder)):
            for row in run.rows:
                merged.setdefault((run.seed, row["epoch"]), []).append(row)
        out = []
        for _, rows in sorted(merged.items(), key=lambda item: item[0]):
            row = dict(rows[0])
            for metric in METRICS:
                if row.get(metric) is not None:
                    row[metric] = sum(r[metric] for r in rows) / len(rows)
            out.append(row)
        return out

    def curve(self, metric=None) -> dict:
        """{epoch: (mean, ci95 half-width, number of seeds)} over the seeds."""
        metric = metric or self.metric
        by_epoch = {}
        for row in self.rows():
            if row.get(metric) is not None:
                by_epoch.setdefault(row["epoch"], []).append(row[metric])
        return {epoch: (*mean_ci95(values), len(values)) for epoch, values in sorted(by_epoch.items())}

    def final(self, metric=None) -> tuple:
        """(mean, ci95, n) at the last evaluated epoch."""
        curve = self.curve(metric)
        return curve[max(curve)]


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def group_runs(runs, finished_only=True) -> list:
    """Pool runs whose experiment configs (`Run.experiment`) are identical: the one rule by
    which results are grouped. n of a group is its number of distinct seeds.

    finished_only: leave out runs without summary.json (their results stop early).
    Groups come sorted by their config.
    """
    groups = {}
    for run in runs:
        if finished_only and not run.finished:
            continue
        experiment = run.experiment()
        groups.setdefault(_canonical(experiment), Group(experiment)).runs.append(run)
    return [groups[key] for key in sorted(groups)]


def _flatten(experiment: dict) -> dict:
    """Nested config fields (the init's pretraining) as dotted names."""
    flat = {}
    for key, value in experiment.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in _flatten(value).items()})
        else:
            flat[key] = value
    return flat


def _fields_of(group) -> dict:
    """A group's config as flat fields for display: the init as its results tag (random,
    P50k, pretrained, ...), a pretrained init's pretraining fields under init.*."""
    flat = _flatten(group.experiment)
    if "init" in group.experiment:
        flat["init"] = "random" if group.experiment["init"] == "random" else group.init_tag
    return flat


def varying_fields(groups) -> list:
    """The (dotted) config fields whose values differ between groups: what tells them apart.
    A pretraining's fields (init.*) are compared among the pretrained groups only."""
    flats = [_fields_of(g) for g in groups]
    pretrained = [f for f in flats if f.get("init") != "random"]

    def varies(key):
        pool = pretrained if key.startswith("init.") else flats
        return len({_canonical(f.get(key, "<missing>")) for f in pool}) > 1

    return [key for key in sorted({k for f in flats for k in f}) if varies(key)]


def settings(groups) -> dict:
    """Split groups into settings that can share one paper-style table: groups that differ
    only along TABLE_AXES (dataset, task, model, init). Within a setting each cell
    (dataset, task, model, init tag) holds one group: two pretrainings with the same tag
    go to separate settings ("variant 2", ...). Returns {description: [groups]}, the
    description naming the fields in which the settings differ (all settings of one
    call are described relative to each other)."""
    def setting_of(group):
        return _canonical({k: v for k, v in group.experiment.items() if k not in TABLE_AXES})

    buckets = {}
    for group in groups:
        cell = (setting_of(group), group.experiment.get("dataset"), group.experiment.get("task"),
                group.experiment.get("model"), group.init_tag)
        buckets.setdefault(cell, []).append(group)
    split = {}
    for (setting, *_), members in buckets.items():
        for variant, group in enumerate(members):
            split.setdefault((setting, variant), []).append(group)
    fields = varying_fields([Group(json.loads(setting)) for setting, _ in split]) if len(split) > 1 else []
    described = {}
    for (setting, variant), members in sorted(split.items()):
        flat = _flatten(json.loads(setting))
        text = ", ".join(f"{k}={flat.get(k, '<missing>')}" for k in fields) or "all runs"
        described[text + (f" (variant {variant + 1} of a pretrained init)" if variant else "")] = members
    return described


def summary_table(groups, markdown=False) -> str:
    """One line per group: the fields that tell the groups apart, then runs, distinct
    seeds (n), the seeds, and the main metric at the last epoch as mean ± 95% CI."""
    fields = varying_fields(groups)
    header = fields + ["runs", "n", "seeds", "last epoch", "metric", "mean ± 95% CI"]
    lines = []
    for group in groups:
        flat = _fields_of(group)
        mean, ci, n = group.final()
        epoch = max(group.curve())
        lines.append([str(flat.get(k, "<missing>")) for k in fields]
                     + [str(len(group.runs)), str(group.n), " ".join(map(str, group.seeds)), str(epoch), group.metric,
                        f"{mean:.4g}" + (f" ± {ci:.2g}" if n > 1 else " (one seed)")])
    if markdown:
        return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                         + ["| " + " | ".join(line) + " |" for line in lines])
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in [header] + lines)
