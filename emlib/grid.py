"""The experiment grid of a sweep spec (a YAML file) and its time estimates.

`expand_grid` turns a spec into its runs (`GridRun`: id, kind, config fields, the
pretraining run it depends on, estimated hours), pretraining first; `check_configs`
builds each run's full config as its run will, so that a bad spec stops before
anything runs; `format_listing` is the dry run's table. Running them is
`emlib.sweep`'s part.
"""
import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from emlib import data, finetune, paper, pretrain, run_folder
from emlib.run_folder import run_status

# Estimated seconds per 224x224 training image (forward + backward, AMP) on one
# A100-class GPU, including data loading. These are rough extrapolations from
# model size and FLOPs, NOT measurements: use them to size a reservation. A
# YAML `estimates:` mapping overrides them. Keys are registry-name prefixes.
SECONDS_PER_IMAGE = {"unet_2": 2e-4, "unet_3": 2.5e-4, "unet_4": 3e-4,
                     "hrnet_w18_small": 4e-4, "hrnet_w18": 8e-4, "hrnet_w44": 1.5e-3}
GAN_COST_FACTOR = 1.5  # pretraining also trains the PatchGAN discriminator
IMAGE_SIDE = {"pretrain": 224, "segmentation": 448, "restoration": 256}


@dataclass
class GridRun:
    """One run of the grid: its id, what it runs and the config fields it gets."""
    run_id: str
    kind: str                       # "pretrain" or "finetune"
    task: str                       # "pretrain", "segmentation" or "restoration"
    config: dict
    depends_on: str | None = None   # the pretraining run whose generator it loads
    gpus: int = 1
    est_gpu_hours: float | None = None  # hours on the spec's `hardware` (a GPU unless it says otherwise)
    init_name: str | None = None    # pretraining runs: the name fine-tuning sections give as `init`


def load_spec(path) -> dict:
    """Read a sweep YAML file (see experiments/paper.yaml)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep spec not found: {path}")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise ValueError(f"sweep spec {path} is not a UTF-8 text file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ValueError(f"sweep spec {path}: invalid YAML{where}: {getattr(err, 'problem', None) or err}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"sweep spec {path}: expected a mapping of sections (runs_dir, pretrain, ...), "
                         f"got a {type(spec).__name__}")
    unknown = set(spec) - {"runs_dir", "seeds", "label_fractions", "pretrain", "segmentation", "restoration", "toy",
                           "estimates", "hardware", "jobs", "bioimageio", "scores"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)}")
    if "pretrain" not in spec:
        raise ValueError(f"{path}: the spec needs a 'pretrain' section")
    return spec


def toy_spec(spec: dict) -> dict:
    """The spec with its `toy:` section applied: each key of `toy` (and of its
    sections) replaces the same key of the full grid. A section's `config` is
    replaced, not merged (empty unless the toy section gives one), so that no
    GPU-sized setting leaks into a toy run; sections the toy leaves out are dropped."""
    if "toy" not in spec:
        raise ValueError("the sweep spec has no 'toy' section, so --toy cannot shrink it")
    toy = {key: copy.deepcopy(value) for key, value in spec.items() if key not in ("toy", "segmentation", "restoration")}
    for key, value in spec["toy"].items():
        if key in ("pretrain", "segmentation", "restoration"):
            base = spec.get(key) if isinstance(spec.get(key), dict) and isinstance(value, dict) else {}
            toy[key] = {**base, "config": {}, **value} if isinstance(value, dict) else value
        else:
            toy[key] = value
    return toy


def _fields(section: dict, grid_values: dict) -> dict:
    """Section config plus the grid coordinates, which are config fields by name."""
    if "fields" in section:
        raise ValueError("a sweep section's `fields:` renaming is gone: the grid's coordinates are the configs' field "
                         "names (model, subset, seed; task, dataset, init, label_fraction); delete `fields:`")
    return {**copy.deepcopy(section.get("config") or {}), **grid_values}


def _seconds_per_image(model: str, estimates: dict, task: str) -> float:
    """Seconds per 224 x 224 image for `model`: the spec's `estimates` (flat, or split into
    `pretrain:` / `finetune:` tables) over SECONDS_PER_IMAGE, by longest name prefix."""
    estimates = dict(estimates or {})
    kind = "pretrain" if task == "pretrain" else "finetune"
    nested = {k: estimates.pop(k) for k in ("pretrain", "finetune", "gan_cost_factor") if k in estimates}
    table = {**SECONDS_PER_IMAGE, **estimates, **nested.get(kind, {})}
    prefix = max((p for p in table if model.startswith(p)), key=len, default=None)
    if prefix is None:
        raise ValueError(f"no time estimate for model {model!r}; add it under 'estimates:' in the spec")
    return table[prefix]


def estimate_gpu_hours(task: str, model: str, images_per_epoch: int, epochs: int, estimates=None, side=None,
                       gan=True) -> float:
    """Estimated hours of one run on the spec's hardware (see SECONDS_PER_IMAGE and `estimates:`;
    `estimates: {gan_cost_factor: x}` replaces GAN_COST_FACTOR, the extra cost of the discriminator)."""
    pixels = ((side or IMAGE_SIDE[task]) / 224) ** 2
    gan_factor = (estimates or {}).get("gan_cost_factor", GAN_COST_FACTOR)
    factor = gan_factor if task == "pretrain" and gan else 1.0
    return epochs * images_per_epoch * pixels * factor * _seconds_per_image(model, estimates, task) / 3600


def _pretrain_id(model, subset, variant=""):
    return f"pretrain-{model}-{subset.lower()}" + (f"-{variant.lower()}" if variant else "")


def _init_name(subset, variant=""):
    """The name fine-tuning sections use for a pretraining run: the subset, plus `-variant`."""
    return f"{subset}-{variant}" if variant else subset


def _finetune_run(section, task, group, model, init, seed, fraction, runs_dir, estimates, pretrain_ids) -> GridRun:
    """One fine-tuning run: `group` is the dataset (segmentation) or the TEMImageNet task."""
    depends = None if init == "random" else pretrain_ids[(model, init)]
    axes = {"task": "segmentation" if task == "segmentation" else group,
            "dataset": group if task == "segmentation" else "TEMImageNet",
            "model": model, "seed": seed,
            "init": "random" if depends is None else str(Path(runs_dir) / depends / "generator.safetensors")}
    if task == "segmentation":
        axes["label_fraction"] = fraction
    config = _fields(section, axes)
    run_id = f"{'seg' if task == 'segmentation' else 'restore'}-{group}-{model}-{init.lower()}-s{seed}"
    if fraction != 1.0:
        run_id += f"-lf{fraction:g}"
    if section.get("tag"):  # a section that changes a setting (an ablation) names it in its run ids
        run_id += f"-{section['tag']}"
    images = config.get("epoch_size") if isinstance(config.get("epoch_size"), int) else (paper.train_images(axes["dataset"]) or 1000) * fraction
    hours = estimate_gpu_hours(task, model, int(images), config.get("epochs", 60), estimates, side=config.get("crop"))
    return GridRun(run_id, "finetune", task, config, depends_on=depends, gpus=section.get("gpus", 1), est_gpu_hours=hours)


def _pretrain_runs(pre: dict, toy: bool, estimates) -> list:
    """Generators x subsets, plus each variant (config overrides, e.g. the L1-only ablation) for its models."""
    runs = []
    variants = {"": {}, **(pre.get("variants") or {})}
    for variant, overrides in variants.items():
        overrides = dict(overrides)
        models = overrides.pop("models", pre["models"])
        for model in models:
            for subset, n_images in pre["subsets"].items():
                axes = {"model": model, "seed": pre.get("seed", 0)}
                if not toy:  # the toy preset picks its own tiny subset; None = every train image
                    axes["subset"] = n_images
                config = {**_fields(pre, axes), **overrides}
                steps = config.get("max_steps") or 0
                images = steps * config.get("batch_size", 128) if steps else (n_images or 1000) * config.get("epochs", 60)
                run = GridRun(_pretrain_id(model, subset, variant), "pretrain", "pretrain", config, gpus=pre.get("gpus", 1),
                          est_gpu_hours=estimate_gpu_hours("pretrain", model, images, 1, estimates,
                                                           side=config.get("image_size", 224),
                                                           gan=config.get("adv_weight", 1.0) > 0))
                run.init_name = _init_name(subset, variant)
                runs.append(run)
    return runs


def _section_models(section: dict) -> dict:
    """{model: [inits]}: `models` as a list (every model gets `inits`) or as a mapping model -> inits."""
    models = section["models"]
    if isinstance(models, dict):
        return {model: list(inits) for model, inits in models.items()}
    return {model: list(section["inits"]) for model in models}


def expand_grid(spec: dict, toy: bool = False, runs_dir=None) -> list:
    """All runs of the spec, pretraining first. With `toy`, the `toy:` section applies.

    Fine-tuning with init `P50k` (etc.) loads `<runs_dir>/<pretraining id>/generator.safetensors`.
    A fine-tuning section may be a list of sections; each may set its own `seeds`
    and `label_fractions`. Runs with the same id and config (e.g. the 100 % label
    fraction of a label-efficiency section) are listed once.
    """
    spec = toy_spec(spec) if toy else spec
    runs_dir = Path(runs_dir or spec.get("runs_dir", "runs"))
    estimates = spec.get("estimates")
    runs = _pretrain_runs(spec["pretrain"], toy, estimates)
    pretrain_ids = {(run.config["model"], run.init_name): run.run_id for run in runs}
    known_inits = {run.init_name for run in runs}
    for task, groups_key in (("segmentation", "datasets"), ("restoration", "tasks")):
        sections = spec.get(task) or []
        for section in sections if isinstance(sections, list) else [sections]:
            seeds = section.get("seeds", spec.get("seeds", [0]))
            fractions = section.get("label_fractions", spec.get("label_fractions", [1.0])) if task == "segmentation" else [1.0]
            for group in section[groups_key]:
                for model, inits in _section_models(section).items():
                    for init in inits:
                        if init != "random" and init not in known_inits:
                            raise ValueError(f"init {init!r} of the {task} grid has no pretraining run; known: {sorted(known_inits)}")
                        if init != "random" and (model, init) not in pretrain_ids:
                            raise ValueError(f"model {model!r} of the {task} grid is not pretrained as {init!r}; add it to pretrain.models")
                        for seed in seeds:
                            for fraction in fractions:
                                runs.append(_finetune_run(section, task, group, model, init, seed, fraction, runs_dir,
                                                          estimates, pretrain_ids))
    unique = {}
    for run in runs:
        if run.run_id in unique and unique[run.run_id].config != run.config:
            raise ValueError(f"the sweep spec gives several different runs the same id: {run.run_id}")
        unique.setdefault(run.run_id, run)
    return list(unique.values())


def select(runs: list, pattern: str | None, runs_dir) -> list:
    """Runs whose id matches `pattern` (re.search), plus the unfinished pretraining
    runs they depend on (so that --only seg-Au5nm still works on a fresh folder)."""
    if not pattern:
        return list(runs)
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise ValueError(f"--only: invalid regular expression {pattern!r}: {err}") from None
    chosen = {run.run_id for run in runs if regex.search(run.run_id)}
    by_id = {run.run_id: run for run in runs}
    for run_id in list(chosen):
        dep = by_id[run_id].depends_on
        if dep and run_status(Path(runs_dir) / dep) != "finished":
            chosen.add(dep)
    return [run for run in runs if run.run_id in chosen]


def full_config(run: GridRun, run_dir: Path, toy: bool = False) -> dict:
    """Every field of the run's config, as the CLI runner's run builds it: the loop's
    `make_config` of the spec's fields, with run_dir as output_dir."""
    return _loop(run).make_config({**run.config, "output_dir": str(run_dir)}, toy).to_dict()


# Fields a resume may change (RESUME_IGNORED) that a spec still asks of a finished run: its lr, and the
# numeric mode it asks for (a finished run's own is in its summary's fast_path).
ASKED_OF_A_RUN = {"lr", "amp", "channels_last"}


def config_changes(run: GridRun, run_dir: Path, toy: bool = False) -> dict:
    """{field: (the run's value, the spec's)} where a finished run's config.json differs from the config
    the spec gives it now; fields that only say where and how it ran (its loop's RESUME_IGNORED but for
    ASKED_OF_A_RUN: a finished run moved to another machine is still the same run) are not compared, and fields newer
    than the run count at their defaults. {} when the run is not finished or agrees."""
    path = Path(run_dir) / "config.json"
    if run_status(run_dir) != "finished" or not path.is_file():
        return {}
    loop = _loop(run)
    config_class = loop.PretrainConfig if run.kind == "pretrain" else loop.FinetuneConfig
    ran = config_class.from_dict(json.loads(path.read_text())).to_dict()
    wanted, place = full_config(run, run_dir, toy), set(loop.RESUME_IGNORED) - ASKED_OF_A_RUN
    fast_path = json.loads((Path(run_dir) / "summary.json").read_text()).get("fast_path")
    return {name: (ran.get(name), value) for name, value in wanted.items()
            if name not in place and ran.get(name) != value and not _ran_in_mode(name, value, fast_path)}


def _ran_in_mode(name: str, wanted, fast_path: dict | None) -> bool:
    """Whether a run whose config spelt amp / channels_last otherwise (e.g. "auto") ran in the mode the spec now
    names outright (True / False), as its summary's fast_path records it."""
    if not fast_path or wanted not in (True, False):
        return False
    if name == "amp":
        return (fast_path.get("amp") is not None) == wanted
    if name == "channels_last":
        layouts = list((fast_path.get("channels_last") or {}).values())
        return bool(layouts) and all(layout == wanted for layout in layouts)
    return False


def run_change(run: GridRun, run_dir: Path, toy: bool = False) -> str:
    """How a run folder stands against the spec: "same" (agrees, or is not finished), "extend" or "changed".

    A finished run whose spec only lets it train longer (its loop's RESUME_MAY_GROW fields grew: a higher
    epoch cap, more steps) is "extend" when its checkpoint.pt is kept: the sweep resumes it, and it goes on
    exactly as a run started under the longer schedule would have. One that stopped at its own plateau
    (summary `stopped_at_plateau`) would have stopped there under any higher cap: "same". Any other
    difference, or a run to extend without its checkpoint, is "changed"."""
    return _change(run, run_dir, toy)[0]


def _change(run: GridRun, run_dir: Path, toy: bool) -> tuple:
    """(`run_change`'s answer, the `config_changes` it rests on)."""
    changes = config_changes(run, run_dir, toy)
    if not changes:
        return "same", changes
    grown_only = all(name in _loop(run).RESUME_MAY_GROW and run_folder.grows(old, new) for name, (old, new) in changes.items())
    if not grown_only:
        return "changed", changes
    if json.loads((Path(run_dir) / "summary.json").read_text()).get("stopped_at_plateau"):
        return "same", changes
    return ("extend" if (Path(run_dir) / "checkpoint.pt").is_file() else "changed"), changes


def changed_fields(run: GridRun, run_dir: Path, toy: bool = False) -> list:
    """["field: its value -> the spec's"] of a finished run the spec changed (`run_change`), else []."""
    state, changes = _change(run, run_dir, toy)
    return [f"{name}: {old!r} -> {new!r}" for name, (old, new) in changes.items()] if state == "changed" else []


def changed_runs(runs, runs_dir, toy: bool = False) -> dict:
    """{run id: its changed_fields} of the finished runs whose config differs from the spec's (`run_change`)."""
    return {run.run_id: fields for run in runs if (fields := changed_fields(run, Path(runs_dir) / run.run_id, toy))}


def extended_runs(runs, runs_dir, toy: bool = False) -> set:
    """The ids of the finished runs the sweep resumes to train longer (`run_change`: "extend")."""
    return {run.run_id for run in runs if run_change(run, Path(runs_dir) / run.run_id, toy) == "extend"}


def resume_fields(run: GridRun, run_dir: Path, toy: bool = False) -> dict:
    """{field: the spec's value} that a resumed run is given on its command line: its numeric mode (amp,
    channels_last: a config.json that says "auto" would resolve otherwise on another processor, and the
    checkpoint's mode is what counts), and for an extended run the fields it grows (its new cap)."""
    wanted = full_config(run, run_dir, toy)
    grown = {name: new for name, (_, new) in config_changes(run, run_dir, toy).items()}
    return {"amp": wanted["amp"], "channels_last": wanted["channels_last"], **grown}


def _loop(run: GridRun):
    return pretrain if run.kind == "pretrain" else finetune


def check_configs(runs, toy: bool = False) -> tuple:
    """(errors, missing): what would make the runs fail at their start, found before any
    of them runs. Each run's full config is built as its run builds it (`full_config`),
    so an unknown or bad field, an unknown dataset or task is an error ("run id: message");
    a data_root that is not here is listed in `missing` ({data_root: [run ids]})."""
    errors, missing = [], {}
    for run in runs:
        try:
            config = full_config(run, Path("runs") / run.run_id, toy)
            if run.kind == "pretrain":
                data.check_data_root(config["data_root"])
            elif config["data_root"] is not None or config["dataset"] == data.USER_FOLDER:
                data.dataset_folder(config["dataset"], config["data_root"], verbose=False)
        except FileNotFoundError:
            missing.setdefault(str(run.config.get("data_root")), []).append(run.run_id)
        except ValueError as err:
            errors.append(f"{run.run_id}: {err}")
    return errors, missing


def segmentation_data(spec: dict, toy: bool = False) -> dict:
    """{dataset: (data_root, downsample)} of the spec's segmentation sections (the toy grid: synthetic
    data, None). Sections that read one dataset at two sizes raise ValueError: its baselines need one."""
    spec = toy_spec(spec) if toy else spec
    sections = spec.get("segmentation") or []
    out = {}
    for section in sections if isinstance(sections, list) else [sections]:
        config = section.get("config") or {}
        for dataset in section["datasets"]:
            read = (config.get("data_root"), config.get("downsample", 1))
            if out.setdefault(dataset, read)[1] != read[1]:
                raise ValueError(f"the spec's segmentation sections read {dataset} with downsample {out[dataset][1]} "
                                 f"and {read[1]}: one size per dataset, so that its baselines score what its runs see")
    return out


def missing_data(run: GridRun) -> bool:
    """Whether the run names a data folder that is not there (None is the synthetic data, written on first use)."""
    data_root = run.config.get("data_root")
    return data_root is not None and not Path(data_root).is_dir()


def format_listing(runs, runs_dir, changed=(), toy=False, hardware="GPU", jobs=1, extended=()) -> str:
    """The dry-run table: id, status (`run_folder.run_status`, or "changed" / "extend" for the ids in `changed` /
    `extended`: see `run_change`), dependency and estimated hours on `hardware` (the spec's, default GPU)."""
    unit = "GPU h" if hardware == "GPU" else "CPU h"
    lines = [f"{'run':<52} {'status':<10} {unit:>7}  depends on"]
    total = 0.0
    for run in runs:
        hours = "toy" if toy else f"{run.est_gpu_hours * run.gpus:7.2f}"
        total += run.est_gpu_hours * run.gpus
        missing = f"  NO DATA: {run.config['data_root']} is missing" if missing_data(run) else ""
        state = ("changed" if run.run_id in changed else "extend" if run.run_id in extended
                 else run_status(Path(runs_dir) / run.run_id))
        lines.append(f"{run.run_id:<52} {state:<10} {hours:>7}  {run.depends_on or ''}{missing}")
    n_pre = sum(r.kind == "pretrain" for r in runs)
    summary = f"{len(runs)} runs ({n_pre} pretraining, {len(runs) - n_pre} fine-tuning)"
    without_data = sorted({str(r.config["data_root"]) for r in runs if missing_data(r)})
    if without_data:
        summary = (f"{sum(map(missing_data, runs))} runs have no data folder ({', '.join(without_data)}): "
                   "download it first (python -m emlib data download --help)\n" + summary)
    if toy:
        summary += ", CPU-sized toy grid"
    elif hardware == "GPU":
        summary += f", about {total:.0f} GPU hours in all (estimates, not measurements)"
    else:
        summary += (f", about {total:.1f} hours on {hardware} in all, {total / jobs:.1f} h of wall time with {jobs} "
                    f"run(s) at a time (estimates from measured step times, see the spec)")
    return "\n".join(lines + [summary])
