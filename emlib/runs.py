"""A run folder, read: the one reader of what `pretrain.run` and `finetune.run` write.

    run = runs.read("runs/finetune/Au5nmV1")   # the folder, or a file in it (generator.safetensors, ...)

    run.kind       "pretrain" or "finetune" (from config.json: a fine-tuning config has a `task`)
    run.task       "pretraining", "segmentation" or a restoration task
    run.fields     config.json as written, renamed fields under their new names (`config.upgrade`)
    run.config     the typed config (PretrainConfig / FinetuneConfig) of those fields, its relative
                   paths resolved and output_dir set to this folder
    run.summary    summary.json (None while the run is unfinished)
    run.card       the pretraining model card: the run's own, or its fine-tuning init's (`inits.card`)
    run.init       what the network started from: the fine-tuning `init`, "random" for pretraining
    run.weights    generator.safetensors (pretraining) or best_model.safetensors (fine-tuning)
    run.network    the registry network of the weights, built on first use (eval mode, CPU)
    run.model      the network as the task runs it (restoration: [0, 1] in and out, `finetune.for_task`)
    run.rows       the parsed rows of results.csv ([] when there are none)
    run.images(split)  a pretraining run's clean images of its own split (the folder's manifest.json)

Relative paths in config.json (data_root, manifest_path, init) were written relative to
the folder the run started in. One rule finds them: as written (from the working folder),
else under `base`, else under each folder above the run; a path found nowhere stays as
written (a finished run loads on a machine without its data).
"""
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from emlib import data, finetune, inits, models, pretrain
from emlib.config import upgrade
from emlib.results import parse_row, read_rows

KINDS = {"pretrain": "generator.safetensors", "finetune": "best_model.safetensors"}  # kind -> its weights file
RUN_FILES = ("config.json", "summary.json", "model_card.json", "results.csv", *KINDS.values())
PATH_FIELDS = ("data_root", "manifest_path", "init")


@dataclass
class Run:
    """One run folder (see the module docstring); build it with `read`."""

    folder: Path
    fields: dict
    summary: dict | None
    base: Path | None = None

    @property
    def kind(self) -> str:
        return "finetune" if "task" in self.fields else "pretrain"

    @property
    def task(self) -> str:
        return self.fields["task"] if self.kind == "finetune" else "pretraining"

    @property
    def finished(self) -> bool:
        """summary.json is there (a run writes it last) and names no other status than finished."""
        return self.summary is not None and self.summary.get("status", "finished") == "finished"

    @property
    def seed(self):
        return self.fields.get("seed")

    @property
    def source(self) -> str | None:
        """"synthetic" or "real": the data the run used (summary.json; None while unfinished)."""
        return (self.summary or {}).get("source")

    @property
    def init(self) -> str:
        return self.fields.get("init", inits.RANDOM) if self.kind == "finetune" else inits.RANDOM

    @property
    def weights(self) -> Path:
        return self.folder / KINDS[self.kind]

    @cached_property
    def config(self):
        """The typed config; ValueError naming the folder when config.json does not fit this emlib's config."""
        cls = finetune.FinetuneConfig if self.kind == "finetune" else pretrain.PretrainConfig
        fields = dict(self.fields, output_dir=str(self.folder))
        for name in PATH_FIELDS:
            if name in fields:
                fields[name] = resolve_path(fields[name], self.folder, self.base)
        try:
            return cls.from_dict(fields)
        except (ValueError, TypeError, FileNotFoundError) as err:
            raise ValueError(f"{self.folder}/config.json does not fit this emlib's {cls.__name__} (an older or "
                             f"unknown run format): {err}") from None

    @cached_property
    def card(self) -> dict | None:
        if self.kind == "finetune":
            return inits.card(resolve_path(self.init, self.folder, self.base))
        path = self.folder / "model_card.json"
        return upgrade(json.loads(path.read_text())) if path.is_file() else None

    @cached_property
    def network(self) -> torch.nn.Module:
        """The registry network of the run's weights (eval mode, CPU); ValueError when the file names another architecture."""
        if not self.weights.is_file():
            raise FileNotFoundError(f"{self.folder}: {self.weights.name} is missing (an unfinished run, or one from an "
                                    "older emlib format?)")
        try:
            return models.load(self.weights, expected_name=self.fields.get("model")).eval()
        except models.WeightsFileError:
            raise  # it names the file and what is wrong with it
        except (ValueError, RuntimeError) as err:
            raise ValueError(f"{self.folder}: config.json and {self.weights.name} do not fit this emlib (an older or "
                             f"unknown run format): {err}") from None

    @property
    def model(self) -> torch.nn.Module:
        """The network as the task runs it: as is, or for restoration [0, 1] in and out (`finetune.for_task`)."""
        return self.network if self.kind == "pretrain" else finetune.for_task(self.network, self.task).eval()

    @cached_property
    def rows(self) -> list:
        path = self.folder / "results.csv"
        return [parse_row(row) for row in read_rows(path)] if path.is_file() else []

    def images(self, split: str = "test"):
        """A pretraining run's clean images (1, S, S) of `split` (train, val, test) as pretraining split
        them: its folder's manifest.json; when that is gone, the same seeded split drawn anew in the user cache."""
        if self.kind != "pretrain":
            raise ValueError(f"{self.folder} is a fine-tuning run: its splits are its dataset's (finetune.build_datasets)")
        config = self.config
        folder, _ = data.pretraining_folder(config.data_root, verbose=False)
        manifest = pretrain.manifest_path(config)
        return data.ImageFolder(folder, split=split, image_size=config.image_size, seed=config.split_seed,
                                manifest_path=manifest if manifest.is_file() else None,
                                tiles_per_image=config.tiles_per_image)


def resolve_path(value, folder: Path, base=None):
    """A relative path of a run's config as it is found (see the module docstring); other values as given."""
    if value in (None, inits.RANDOM) or str(value) in inits.PRETRAINED or Path(value).is_absolute() or Path(value).exists():
        return value
    candidates = ([Path(base) / value] if base is not None else []) + [p / value for p in folder.resolve().parents]
    return next((str(c) for c in candidates if c.exists()), value)


def find_folder(path) -> Path:
    """The run folder of `path`: the folder itself, or the folder of a run file in it."""
    path = Path(path)
    return path.parent if path.is_file() and path.name in RUN_FILES else path


def read(path, base=None, finished: bool = True) -> Run:
    """The run folder at `path` (the folder or a file in it). finished: refuse an unfinished or
    failed run. Errors name the folder and what is missing."""
    folder = find_folder(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"run folder not found: {folder}")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not an emlib run folder: config.json is missing")
    fields = upgrade(json.loads((folder / "config.json").read_text()))
    if "task" not in fields and "model" not in fields:
        raise ValueError(f"{folder}/config.json is neither a fine-tuning config (no 'task') nor a pretraining "
                         "config (no 'model'): an older or unknown run format")
    summary_path = folder / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    run = Run(folder, fields, summary, Path(base) if base is not None else None)
    if finished:
        if summary is None:
            raise FileNotFoundError(f"{folder} is an unfinished run: summary.json is missing (a run writes it last, "
                                    "when training completes; finish it with --resume)")
        if not run.finished:
            raise ValueError(f"{folder} is not a finished run: summary.json has status {summary.get('status')!r}")
    return run


def finished_runs(folder, kind: str | None = None) -> list:
    """The finished runs in the sub-folders of `folder` (of one kind, when given), sorted by name."""
    out = []
    for path in sorted(Path(folder).glob("*/summary.json")):
        try:
            run = read(path.parent)
        except (FileNotFoundError, ValueError):
            continue
        if kind is None or run.kind == kind:
            out.append(run)
    return out


def load_finetuned(path):
    """(model as the task runs it, FinetuneConfig) of a fine-tuning run folder with its best_model.safetensors,
    finished or stopped: `read(path, finished=False)`, for code that wants the pair."""
    run = read(path, finished=False)
    if run.kind != "finetune":
        raise ValueError(f"{run.folder} is a pretraining run, not a fine-tuning run")
    return run.model, run.config
