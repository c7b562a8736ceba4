"""Runs pooled over seeds: the one rule by which results are grouped (`group_runs`), and the
statistics of a group (mean and 95% Student t interval per epoch).
"""
import json
import math
import warnings
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from emlib import finetune, inits, pretrain, runs

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


def _experiment_part(config: dict) -> dict:
    """The config without the seed and the execution fields. With `dataset="folder"` (a
    user's folder of images) the folder is the only name of the data: data_root stays."""
    part = {k: v for k, v in config.items() if k not in EXECUTION_FIELDS and k != SEED_FIELD}
    if config.get("dataset") == "folder":
        part["data_root"] = config.get("data_root")
    return part


def init_identity(run) -> dict | str:
    """What a run's `init` names: "random", or the pretraining behind the weights.

    A pretrained generator is identified by its model card (`Run.card`: the pretraining
    config without its execution fields, seed included, plus the data source). Without
    a model card, the path as written (trailing generator.safetensors dropped) is all there is.
    """
    if run.init in (None, inits.RANDOM):
        return inits.RANDOM
    card = run.card
    if card is not None:
        config = card.get("config", {})
        return {"pretraining": _experiment_part(config) | {SEED_FIELD: config.get(SEED_FIELD)}, "source": card.get("source")}
    return {"weights": str(run.init).removesuffix("/generator.safetensors")}


def source_of(run) -> str:
    """The data source of a run's results rows (synthetic or real); ValueError when they mix sources."""
    sources = {row.get("source") for row in run.rows}
    if len(sources) != 1:
        raise ValueError(f"{run.folder / 'results.csv'}: expected one source, found {sorted(map(str, sources))}")
    return sources.pop()


def experiment_of(run) -> dict:
    """Everything that defines a run but the seed: the key of its group. Fields a run's config.json
    lacks (added to emlib after it ran) count with their default, as loading the config gives them,
    so that a study continued by newer code still pools its seeds."""
    return {**_experiment_part(complete_fields(run)), "init": init_identity(run), "source": source_of(run)}


def complete_fields(run) -> dict:
    """The run's config fields as written, plus the defaults of fields it lacks, as loading its known
    fields gives them (the task's defaults resolved), or the config class's plain defaults where
    this emlib cannot load them."""
    cls = finetune.FinetuneConfig if run.kind == "finetune" else pretrain.PretrainConfig
    known = {f.name for f in dataclasses.fields(cls)}
    try:  # a field this emlib does not know (from a newer or older one) is kept as written, below
        defaults = cls.from_dict({k: v for k, v in run.fields.items() if k in known}).to_dict()
    except (ValueError, TypeError, FileNotFoundError):
        defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    return {**{k: v for k, v in defaults.items() if k not in run.fields}, **run.fields}


def load_runs(folders) -> list:
    """Every run (`emlib.runs.Run`, finished or not) under `folders` (a folder or a list) that wrote
    results rows: each `results.csv` with a `config.json` beside it, read once even when two folders
    reach it. A results file without a config.json cannot be grouped: it is left out with a warning;
    the sweep's aggregates (results_segmentation.csv, ...) are derived files, not runs."""
    folders = [folders] if isinstance(folders, (str, Path)) else folders
    paths = sorted({p.resolve() for folder in folders for p in Path(folder).glob("**/results.csv")})
    out = []
    for path in paths:
        if not (path.parent / "config.json").is_file():
            warnings.warn(f"{path}: no config.json beside it, so it cannot be grouped with other runs; left out")
            continue
        run = runs.read(path.parent, finished=False)
        if run.rows:
            out.append(run)
    return out


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
    def init_kind(self) -> str:
        """random, GAN or L1-only (`emlib.inits.kind`)."""
        return inits.kind(self.init_tag)

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

    def last_rows(self, metric=None) -> list:
        """Each seed's row at its own last evaluation of the metric: runs that stop at their plateau end at
        different epochs, and the group's last epoch would hold only the seeds that ran longest."""
        metric = metric or self.metric
        last = {}
        for row in self.rows():  # by seed, then epoch
            if row.get(metric) is not None:
                last[row["seed"]] = row
        return list(last.values())

    def final(self, metric=None) -> tuple:
        """(mean, ci95, n) over the seeds, each at its own last evaluation."""
        metric = metric or self.metric
        values = [row[metric] for row in self.last_rows(metric)]
        return (*mean_ci95(values), len(values))


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def group_runs(runs, finished_only=True) -> list:
    """Pool runs whose experiment configs (`experiment_of`) are identical: the one rule by
    which results are grouped. n of a group is its number of distinct seeds.

    finished_only: leave out runs without summary.json (their results stop early).
    Groups come sorted by their config.
    """
    groups = {}
    for run in runs:
        if finished_only and not run.finished:
            continue
        experiment = experiment_of(run)
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
    seeds (n), the seeds, and the main metric at each seed's last evaluation (their epochs) as mean ± 95% CI."""
    fields = varying_fields(groups)
    header = fields + ["runs", "n", "seeds", "last epoch", "metric", "mean ± 95% CI"]
    lines = []
    for group in groups:
        flat = _fields_of(group)
        mean, ci, n = group.final()
        last = sorted({row["epoch"] for row in group.last_rows()})
        epoch = f"{last[0]}-{last[-1]}" if len(last) > 1 else last[0]
        lines.append([str(flat.get(k, "<missing>")) for k in fields]
                     + [str(len(group.runs)), str(group.n), " ".join(map(str, group.seeds)), str(epoch), group.metric,
                        f"{mean:.4g}" + (f" ± {ci:.2g}" if n > 1 else " (one seed)")])
    if markdown:
        return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                         + ["| " + " | ".join(line) + " |" for line in lines])
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in [header] + lines)
