"""Fine-tuning on the downstream tasks (paper section 4.2-4.3, Tables 2-7).

One loop serves both kinds of task:

- segmentation of nanoparticles: the paper's Au sets (Au2.2nm, Au5nm, Au10nm,
  Au20nm, Au5nmV1), the real nanoparticle sets (msa_segtrack, emps) or a user's
  folder of images and masks (`dataset="folder"`): BCE-with-logits, Dice (`emlib.metrics.dice_scores`) as the metric, higher is better;
- restoration of TEMImageNet images (denoising, noise & background removal,
  super-resolution): L1 + L2 loss, L1 (plus PSNR, SSIM) as the metric, lower is better.

The model starts from random weights (`init="random"`) or from a pretrained
generator export (`generator.safetensors` or its folder). Adam, lr 2e-4 (the
paper's value for both kinds of task). Train items are augmented as the paper
says (noise, flips, rotations, resizing, random crops; `emlib.data.augment`
holds the ranges, which are ours); val and test images are scored whole.

An epoch (`epoch_size`): the paper's Table 1 counts for its datasets
(`epoch_size="paper"`, the default). For four of the five Au sets that is about
8x the number of 512 px tiles Sytwu's filtering keeps, because Sytwu's
preprocessing saved the 8 flips/rotations of every tile as separate images;
so one of the paper's epochs is about 8 passes over the tiles, and we draw that
many augmented crops. Other datasets: one pass over the train images, or n items. Every `eval_every` epochs (and after the
last) the model is evaluated on the validation split; the best one so far is
kept and, as in the paper's tables ("model performance on the test datasets
using the best models at the 5 epoch intervals"), its test score is recorded.

Files in `output_dir` (the run contract of `emlib.run_folder`):
    config.json          the config, at start
    checkpoint.pt        atomic, resumable (model, optimiser, best model, RNG, position)
    log.csv              one row per epoch: train loss, validation metric, lr, speed
    results.csv          per evaluated epoch, the TEST score of the best model so far:
                         the paper's Tables 2-7 (`table` = the paper's table number,
                         columns `emlib.results.SEGMENTATION_COLUMNS` / `RESTORATION_COLUMNS`)
    validation.csv       per evaluated epoch, the VALIDATION score (same columns; the
                         curves of Figs. 6-9, 11). A separate file, so that readers of
                         results*.csv (emlib.results.load_our_results) see test rows only.
    best_model.safetensors  the best model's weights (read the run with `emlib.runs.read`)
    summary.json         written last, at successful completion
"""
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from emlib import data, finite, inits, lifecycle, models, paper, provenance, qc, results, run_folder, session, training
from emlib.config import check_config_types, config_from_dict, config_to_dict, fields_from_args, upgrade
from emlib.data import AU_DATASETS, RESTORATION_DATASET, SEGMENTATION_DATASETS, TASK_ALIASES, TEMIMAGENET_TASKS
from emlib.data.augment import Augmented, CentreCropped, PairAugment
from emlib.data.segmentation_folder import check_downsample
from emlib.data.subsets import check_fraction, labelled
from emlib.intensity import CenteredIntensities
from emlib.metrics import dice_scores, restoration_scores

SEGMENTATION = "segmentation"
QC_IMAGES = 3  # test predictions a finished run draws into qc/
RESTORATION_TASKS = tuple(TEMIMAGENET_TASKS)  # denoising, noise_background_removal, super_resolution
TASKS = (SEGMENTATION,) + RESTORATION_TASKS
OPTIMIZERS = ("adam", "adamw")
# Defaults that depend on the task: the paper's GPU settings.
TASK_DEFAULTS = {
    SEGMENTATION: dict(model="unet_4_424", dataset="Au5nmV1", crop=448, batch_size=16, head="reinit"),
    "restoration": dict(model="hrnet_w44", dataset=RESTORATION_DATASET, crop=256, batch_size=64, head="transfer"),
}
LOG_COLUMNS = ["epoch", "step", "train_loss", "val_metric", "lr", "images_per_s"]
RESUME_MAY_GROW = ("epochs",)
# lr may change on resume (to continue a diverged run at a lower one); data_root may
# move (the data fingerprint in the checkpoint decides whether the data is the same);
# amp / channels_last may be spelled otherwise (the mode they resolve to must be the checkpoint's:
# training.check_fast_path_matches), so that a run with "auto" can go on on another processor.
RESUME_IGNORED = ("device", "workers", "output_dir", "compile", "data_root", "images_dir", "masks_dir", "lr", "amp",
                  "channels_last")
SMALLER_RUN_FLAGS = "--toy (a CPU preset), --epochs, --epoch-size, --crop or --batch-size"


def canonical_task(task: str) -> str:
    """The task's canonical name (accepts `background_removal`); ValueError for unknown tasks."""
    task = TASK_ALIASES.get(task, task)
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)} (or {list(TASK_ALIASES)}), got {task!r}")
    return task


def primary_metric(task: str) -> tuple:
    """(metric name, higher is better) used to pick the best model."""
    return ("dice_percent", True) if task == SEGMENTATION else ("l1", False)


# ----------------------------------------------------------------------------- the config


@dataclass
class FinetuneConfig:
    """Everything that defines a fine-tuning run. Defaults are the paper's GPU settings
    (fields left None get the task's defaults, TASK_DEFAULTS); `FinetuneConfig.toy()`
    is a CPU preset on synthetic data."""

    task: str = SEGMENTATION  # or denoising | noise_background_removal (alias background_removal) | super_resolution
    model: str | None = None  # registry name; None: init's architecture, else unet_4_424 (segmentation), hrnet_w44 (restoration)
    init: str = "random"  # "random" or a pretrained generator.safetensors (or the folder holding it)
    head: str | None = None  # the generator's output head: "reinit" (segmentation default) or "transfer" (restoration)
    dataset: str | None = None  # Au2.2nm | Au5nm | Au10nm | Au20nm | Au5nmV1 | msa_segtrack | emps | folder; TEMImageNet
    data_root: str | None = None  # folder of the dataset (or a root holding it, e.g. au/, nanoparticles/emps/); None = synthetic
    images_dir: str | None = None  # dataset folder: a folder of images named outright, with masks_dir (instead of data_root)
    masks_dir: str | None = None  # dataset folder: the folder of their masks
    crop: int | None = None  # train crop: 448 of the 512 tiles (segmentation), 256 = whole image (restoration)
    eval_crop: int | None = None  # centre crop for validation/test images; None = whole images (paper)
    downsample: int = 1  # segmentation folders read at 1/n of their size per side, train, val and test alike
    batch_size: int | None = None  # per process: 16 (segmentation, not stated in the paper), 64 (restoration, paper)
    epochs: int = 60
    epoch_size: int | str | None = "paper"  # train items per epoch: "paper" (Table 1), None (one pass) or n
    lr: float = 2e-4  # paper, for both kinds of task
    optimizer: str = "adam"  # paper: Adam
    weight_decay: float = 0.0
    eval_every: int = 5  # paper: every 5 epochs (and always after the last)
    eval_dense_epochs: int = 0  # also evaluate after each of the first n epochs (where pretraining's gain is largest)
    lr_drops: int = 0  # divide the lr by 10 this many times, each when the best validation score is `patience` epochs old
    patience: int = 10  # epochs without a better validation score (and since the last drop) before the lr drops
    plateau_stop: float | None = None  # stop once no better validation score came in this last fraction of the epochs
    min_epochs: int = 0  # no lr drop and no plateau stop before this epoch
    label_fraction: float = 1.0  # train on a seeded fraction of the labelled train images, in (0, 1]
    augment_dihedral: bool = True  # random flips / 90-degree rotations (input and target alike)
    augment_resize: bool = True  # random rescaling before the crop (masks nearest-neighbour)
    augment_noise: bool = True  # Gaussian or Poisson-like noise on the input
    test: bool = True  # record the best model's test score at every evaluation
    seed: int = 0  # model init, data order, crops
    split_seed: int = 0  # train/val/test split and label subset (fixed across training seeds)
    device: str = "auto"
    amp: bool | str = "auto"  # bf16/fp16 autocast: True, False or "auto" (CUDA; CPUs with native bf16), emlib.training
    channels_last: bool | str = "auto"  # memory layout: True, False or "auto" (CUDA; per network on bf16 CPUs)
    compile: bool = False
    workers: int = 4  # loader processes, at most the machine's cores
    deterministic: bool = False
    output_dir: str = "runs/finetune"

    def __post_init__(self):
        if isinstance(self.epoch_size, str) and self.epoch_size.isdigit():  # from the command line or papermill
            self.epoch_size = int(self.epoch_size)
        self.task = canonical_task(self.task)
        if self.model is None and self.init != "random":
            self.model = inits.export_model(self.init)  # the weights name their architecture
        defaults = TASK_DEFAULTS[SEGMENTATION if self.task == SEGMENTATION else "restoration"]
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        self.validate()

    @classmethod
    def toy(cls, **overrides) -> "FinetuneConfig":
        """A CPU preset on synthetic data: the smallest models, small crops, eval every epoch.

        Segmentation: unet_2_44 on Au5nmV1, 96 px crops, lr 3e-3 (a toy run has few
        steps), 8 epochs of 24 items (6 batches of 4). Restoration: unet_2_44 too (HRNet
        learns too slowly for a CPU minute), 64 px crops, evaluated on 64 px centre
        crops, 4 epochs of 160 items (20 batches of 8). With a pretrained `init` and no
        `model`, the model is the init's architecture.
        """
        task = canonical_task(overrides.get("task", SEGMENTATION))
        common = dict(task=task, device="cpu", amp=False, channels_last=False, workers=0, eval_every=1,
                      output_dir=f"runs/finetune_toy/{task}")
        if task == SEGMENTATION:
            toy = dict(model="unet_2_44", dataset="Au5nmV1", crop=96, batch_size=4, epochs=8, epoch_size=24, lr=3e-3)
        else:
            toy = dict(model="unet_2_44", dataset=RESTORATION_DATASET, crop=64, eval_crop=64, batch_size=8,
                       epochs=4, epoch_size=160, lr=3e-3)
        if overrides.get("init", "random") != "random":
            toy["model"] = None  # the init's architecture
        return cls(**{**common, **toy, **overrides})

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "FinetuneConfig":
        """From a dict of fields; unknown keys raise ValueError naming them."""
        return config_from_dict(cls, data)

    @property
    def is_segmentation(self) -> bool:
        return self.task == SEGMENTATION

    def validate(self) -> None:
        """Raise ValueError naming the first bad field. Values only: the run checks
        that data_root and init exist when it starts (so a finished run folder
        loads with `emlib.runs.read` on a machine without its data)."""
        self.task = canonical_task(self.task)
        check_config_types(self)
        if self.model not in models.generator_names():
            raise ValueError(f"model={self.model!r} is not a registry model; choose one of {models.generator_names()}")
        datasets = list(SEGMENTATION_DATASETS) if self.is_segmentation else [RESTORATION_DATASET]
        if self.dataset not in datasets:
            raise ValueError(f"dataset={self.dataset!r} is not a dataset of task {self.task!r}; choose one of {datasets}")
        if (self.images_dir is None) != (self.masks_dir is None):
            raise ValueError("images_dir and masks_dir (--images, --masks) go together: name both folders or neither")
        if self.images_dir is not None and self.dataset != data.USER_FOLDER:
            raise ValueError(f"images_dir/masks_dir name a user's own folders: they need dataset='folder', not {self.dataset!r}")
        positive = {"crop": self.crop, "batch_size": self.batch_size, "epochs": self.epochs, "lr": self.lr,
                    "eval_every": self.eval_every}
        if not (self.epoch_size in (None, "paper") or (isinstance(self.epoch_size, int) and not isinstance(self.epoch_size, bool))):
            raise ValueError(f"epoch_size must be 'paper', None or a positive integer, got {self.epoch_size!r}")
        for name in ("eval_crop", "epoch_size"):
            if isinstance(getattr(self, name), int):
                positive[name] = getattr(self, name)
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        check_fraction(self.label_fraction)
        check_downsample(self.downsample)
        if self.downsample != 1 and (not self.is_segmentation or self.dataset in AU_DATASETS):
            raise ValueError(f"downsample={self.downsample} is for segmentation image folders (msa_segtrack, emps, folder), "
                             f"not {self.dataset!r}")
        if self.head not in models.HEAD_MODES:
            raise ValueError(f"head must be one of {models.HEAD_MODES}, got {self.head!r}")
        for name in ("eval_dense_epochs", "min_epochs", "lr_drops"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1 epoch, got {self.patience}")
        if self.plateau_stop is not None and not 0 < self.plateau_stop < 1:
            raise ValueError(f"plateau_stop must be a fraction in (0, 1) (1/3: stop when the last third of the epochs "
                             f"brought no better validation score) or None, got {self.plateau_stop!r}")
        for name in ("seed", "split_seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.weight_decay < 0 or self.workers < 0:
            raise ValueError(f"weight_decay and workers must be >= 0, got {self.weight_decay}, {self.workers}")
        if self.device not in session.DEVICES:
            raise ValueError(f"device must be one of {session.DEVICES}, got {self.device!r}")
        training.check_mode("amp", self.amp)
        training.check_mode("channels_last", self.channels_last)


# ----------------------------------------------------------------------------- config from fields


def make_config(fields: dict, toy: bool = False) -> FinetuneConfig:
    """The config of a dict of fields (renamed ones upgraded) over a preset: the task's
    defaults, or `FinetuneConfig.toy()` with `toy`. The preset takes the fields' task,
    init and model (the task's model, dataset and sizes; the init's architecture).
    What `python -m emlib finetune` and the sweep run."""
    fields = upgrade(fields)
    given = {name: fields[name] for name in ("task", "init", "model") if fields.get(name) is not None}
    base = FinetuneConfig.toy(**given) if toy else FinetuneConfig(**given)
    return config_from_dict(FinetuneConfig, {**config_to_dict(base), **fields})


def config_from_args(args) -> FinetuneConfig:
    """The config of parsed `python -m emlib finetune` arguments (--toy, --config, flags)."""
    return make_config(fields_from_args(FinetuneConfig, args), args.toy)


def field_help() -> dict:
    """What the values of each field mean, for `--help`."""
    return {
        "task": f"{SEGMENTATION}, {', '.join(TEMIMAGENET_TASKS)} (aliases: {', '.join(TASK_ALIASES)})",
        "model": f"a registry network: {', '.join(models.generator_names())}; unset: the --init export's network",
        "init": f"random, a generator.safetensors (or its run folder), or a named generator: {', '.join(inits.PRETRAINED)}",
        "dataset": f"segmentation: {', '.join(SEGMENTATION_DATASETS)} (folder: your own images/ + masks/ under --data-root, "
                   f"or --images DIR --masks DIR); restoration: {RESTORATION_DATASET}",
        "data_root": "the dataset's folder (or a folder holding it); unset: the synthetic data",
        "epoch_size": "train crops per epoch: paper (the paper's Table 1 train count of the dataset, or one pass over a "
                      "dataset not in the paper), none (one pass over the train images) or a number",
        "head": "a pretrained generator's output layer: reinit (re-initialised; the segmentation default) or transfer "
                "(carried over; the restoration default); unset: the task's default",
        "label_fraction": "train on this seeded fraction of the labelled train images, in (0, 1]",
        "lr_drops": "divide the lr by 10 this many times, each when the best validation score is --patience epochs "
                    "old (and the last drop as old), not before --min-epochs",
        "patience": "epochs without a better validation score before the lr drops (and at the last lr before "
                    "--plateau-stop may stop the run)",
        "min_epochs": "no lr drop and no plateau stop before this epoch",
        "plateau_stop": "stop early once the best validation score is older than this fraction of the epochs run "
                        "(0.25: the last quarter brought nothing better), checked at evaluations from --min-epochs on, "
                        "after every --lr-drops drop and --patience epochs at the last lr; unset: train all --epochs",
        "downsample": "read the images and masks at 1/n of their size per side (area averages), train, val and test "
                      "alike, so scores are at that size too: for particles much larger than the network's reach",
    }


# ----------------------------------------------------------------------------- initialisation


def for_task(model, task: str):
    """The network as the task trains it: as is (segmentation) or, for restoration, in
    `emlib.intensity.CenteredIntensities` ([0, 1] in and out, [-1, 1] inside)."""
    return model if task == SEGMENTATION else CenteredIntensities(model)


def registry_model(model):
    """The registry model inside `for_task`'s wrapper (and inside DDP / compile)."""
    model = training.unwrap_model(model)
    return model.model if isinstance(model, CenteredIntensities) else model


def build_model(config: FinetuneConfig):
    """(model for the task, transfer report or None for random init); 1 input and 1 output channel."""
    model = models.create(config.model, in_channels=1, out_channels=1)
    report = None
    if config.init != "random":
        path = inits.weights_path(config.init)
        try:
            report = models.transfer_weights(model, path, head=config.head)
        except models.WeightsFileError:
            raise  # it names the file and what is wrong with it
        except ValueError as err:
            raise ValueError(f"init={config.init!r} does not fit model={config.model!r}: {err}") from None
    return for_task(model, config.task), report


# ----------------------------------------------------------------------------- data


class Repeated(Dataset):
    """`length` items cycling through `dataset` (epochs of a set size, larger or smaller than one pass)."""

    def __init__(self, dataset, length: int):
        self.dataset, self.length = dataset, length

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        return self.dataset[index % len(self.dataset)]


def augmented_batch(train, seed: int, size: int = 8, epoch: int = 0) -> list:
    """`size` (image, target) training items as epoch `epoch` of a run with `seed` draws them: augmented
    crops cycling over the train split, each under its own seed (seed, epoch, index)."""
    items = training.SeededSamples(Repeated(train, size), seed)
    items.epoch = epoch
    return [items[i] for i in range(size)]


def resolve_data_root(config: FinetuneConfig):
    """(folder of the dataset, "synthetic" | "real"); data_root None writes/uses the synthetic set.
    With images_dir and masks_dir, the folder is images_dir."""
    if config.images_dir is not None:
        for name in ("images_dir", "masks_dir"):
            if not Path(getattr(config, name)).is_dir():
                raise FileNotFoundError(f"{name} folder not found: {getattr(config, name)}")
        print(f"data: images {config.images_dir}, masks {config.masks_dir}")
        return Path(config.images_dir), "real"
    return data.dataset_folder(config.dataset, config.data_root)


def epoch_items(config: FinetuneConfig, n_train: int) -> int:
    """Train items per epoch: Table 1's train count ("paper", for the paper's datasets), one pass (None) or n."""
    if config.epoch_size is None:
        return n_train
    if config.epoch_size == "paper":
        return paper.train_images(config.dataset) or n_train
    return int(config.epoch_size)


def augmentation(config: FinetuneConfig) -> PairAugment:
    """The train-time transform of the config's switches (crop always; resize, dihedral, noise on request)."""
    return PairAugment(config.crop, mask=config.is_segmentation, resize=config.augment_resize,
                       dihedral=config.augment_dihedral, noise=config.augment_noise)


def build_datasets(config: FinetuneConfig, folder: Path) -> dict:
    """{"train", "val", "test"} datasets of the task (test only when config.test).

    Train items are augmented crops; val/test items are whole images (or
    `eval_crop` centre crops). Splits are by source image (`sources`).
    """
    splits = ("train", "val", "test") if config.test else ("train", "val")
    out = {}
    for split in splits:
        if config.is_segmentation:
            fraction = config.label_fraction if split == "train" else 1.0
            item = data.catalog.segmentation_dataset(config.dataset, folder, split, config.split_seed, fraction,
                                                     masks_dir=config.masks_dir, downsample=config.downsample)
        else:
            item = data.catalog.restoration_dataset(config.task, folder, split, config.split_seed)
            if split == "train":
                item = label_subset(item, config.label_fraction, config.split_seed)
        if len(item) == 0:
            raise ValueError(f"the {split} split of {config.dataset} in {folder} is empty")
        if split == "train":
            item = Augmented(item, augmentation(config))
        elif config.eval_crop is not None:
            item = CentreCropped(item, config.eval_crop)
        out[split] = item
    return out


def label_subset(dataset, fraction: float, seed: int):
    """A seeded subset of `fraction` of the items (at least one); keeps `sources`."""
    if fraction >= 1.0:
        return dataset
    subset = Subset(dataset, labelled(len(dataset), fraction, seed).tolist())
    subset.sources = [dataset.sources[i] for i in subset.indices]
    return subset


# ----------------------------------------------------------------------------- loss, evaluation, best model


def task_loss(task: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits (segmentation) or L1 + L2 (restoration), in float32."""
    output, target = output.float(), target.float()
    if task == SEGMENTATION:
        return F.binary_cross_entropy_with_logits(output, target)
    return F.l1_loss(output, target) + F.mse_loss(output, target)


@torch.no_grad()
def evaluate(model, dataset, task: str, device, batch_size: int = 8, amp=None, channels_last: bool = False) -> dict:
    """Mean metrics over `dataset`: {"dice_percent"} or {"l1", "psnr", "ssim"}; eval mode, no grad.

    `amp`: the autocast dtype (None: fp32; a bool as in `training.autocast`); outputs are scored in fp32."""
    model = training.unwrap_model(model)
    was_training = model.training
    model.eval()
    per_image = {}
    for inputs, target in same_size_batches(dataset, batch_size):
        with training.autocast(device, amp):
            output = model(training.to_device(inputs, device, channels_last)).float().cpu()  # any H, W: the registry models pad and crop back
        if task == SEGMENTATION:
            scores = {"dice_percent": 100.0 * dice_scores(output, target)}
        else:
            scores = restoration_scores(output, target)
        for name, values in scores.items():
            per_image.setdefault(name, []).append(values)
    model.train(was_training)
    return {name: torch.cat(values).mean().item() for name, values in per_image.items()}


def same_size_batches(dataset, batch_size: int):
    """(inputs, targets) batches of consecutive items of one size (whole images of varied sizes batch alone)."""
    batch = []
    for index in range(len(dataset)):
        item = dataset[index]
        if batch and (len(batch) == batch_size or item[0].shape != batch[0][0].shape):
            yield tuple(torch.stack(parts) for parts in zip(*batch))
            batch = []
        batch.append(item)
    if batch:
        yield tuple(torch.stack(parts) for parts in zip(*batch))


class BestModel:
    """The best model seen at the evaluations: its epoch, score and a copy of its weights.

    `update` keeps the earlier model on ties, as "best so far" means strictly better.
    """

    def __init__(self, higher_is_better: bool):
        self.higher_is_better = higher_is_better
        self.epoch, self.score, self.state, self.test = None, None, None, {}

    def is_better(self, score: float) -> bool:
        if self.score is None:
            return True
        return score > self.score if self.higher_is_better else score < self.score

    def update(self, epoch: int, score: float, model) -> bool:
        """Keep `model` if `score` beats the best so far; returns whether it did."""
        if not self.is_better(score):
            return False
        state = training.unwrap_model(model).state_dict()
        self.epoch, self.score, self.test = epoch, score, {}
        self.state = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
        return True

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "score": self.score, "state": self.state or {}, "test": dict(self.test)}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.score, self.test = state["epoch"], state["score"], dict(state["test"])
        self.state = state["state"] or None


# ----------------------------------------------------------------------------- schedule: lr drops and the stop
# Both are functions of the validation history (checkpointed), so a resumed run drops and stops where it would have.

LR_DROP = 0.1  # the lr is multiplied by this at each drop


def best_epochs(history, config: FinetuneConfig) -> list:
    """[(epoch, the epoch of the best validation score so far)] along the (epoch, score) history; strictly
    better scores only, as BestModel keeps them."""
    higher_is_better = primary_metric(config.task)[1]
    out, best, best_epoch = [], None, None
    for epoch, score in history:
        if best is None or (score > best if higher_is_better else score < best):
            best, best_epoch = score, epoch
        out.append((epoch, best_epoch))
    return out


def lr_drop_epochs(history, config: FinetuneConfig) -> list:
    """The evaluation epochs after which the lr dropped (at most `lr_drops`), from `min_epochs` on: the best
    validation score was `patience` epochs old, and the last drop as old."""
    drops = []
    for epoch, best_epoch in best_epochs(history, config):
        since_drop = epoch - (drops[-1] if drops else 0)
        if (len(drops) < config.lr_drops and epoch >= config.min_epochs and epoch - best_epoch >= config.patience
                and since_drop >= config.patience):
            drops.append(epoch)
    return drops


def scheduled_lr(history, config: FinetuneConfig) -> float:
    """The lr after the drops the validation history has brought."""
    return config.lr * LR_DROP ** len(lr_drop_epochs(history, config))


def plateaued(epoch: int, history, config: FinetuneConfig) -> bool:
    """Whether the run stops after `epoch` (`plateau_stop`): an evaluation epoch from `min_epochs` on, at
    least `patience` epochs after the last of the `lr_drops`, whose best validation score came at or before
    (1 - plateau_stop) x epoch, so that the run ends with no better score in its last `plateau_stop` of epochs."""
    if config.plateau_stop is None or not history or history[-1][0] != epoch or epoch < config.min_epochs:
        return False
    drops, best_epoch = lr_drop_epochs(history, config), best_epochs(history, config)[-1][1]
    return (len(drops) == config.lr_drops and epoch - (drops[-1] if drops else 0) >= config.patience
            and best_epoch <= (1 - config.plateau_stop) * epoch)


def is_evaluation_epoch(epoch: int, config: FinetuneConfig) -> bool:
    """Evaluate after each of the first `eval_dense_epochs` epochs, every `eval_every`-th epoch (1-based)
    and after the last one."""
    return epoch <= config.eval_dense_epochs or epoch % config.eval_every == 0 or epoch == config.epochs


# ----------------------------------------------------------------------------- results rows


def results_columns(config: FinetuneConfig) -> list:
    return results.SEGMENTATION_COLUMNS if config.is_segmentation else results.RESTORATION_COLUMNS


def result_row(config: FinetuneConfig, epoch: int, scores: dict, init: str, source: str) -> dict:
    """One row of results.csv / validation.csv in the schema of emlib.results."""
    common = dict(table=paper.table_numbers().get(config.dataset, ""), dataset=config.dataset, model=results.paper_model_name(config.model),
                  init=init, epoch=epoch, seed=config.seed, source=source, run_id=Path(config.output_dir).name)
    if config.is_segmentation:
        blocks, receptive_field = "", ""
        if config.model.startswith("unet_"):
            _, blocks, receptive_field = config.model.split("_")
        return dict(common, blocks=blocks, receptive_field=receptive_field, label_fraction=config.label_fraction,
                    dice_percent=round(scores["dice_percent"], 4))
    return dict(common, task=config.task, l1=round(scores["l1"], 6), psnr=round(scores["psnr"], 4),
                ssim=round(scores["ssim"], 5))


def make_optimizer(config: FinetuneConfig, model) -> torch.optim.Optimizer:
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


# ----------------------------------------------------------------------------- the run


def run(config: FinetuneConfig, resume: bool = False, overwrite: bool = True) -> dict:
    """Fine-tune `config.model` on `config.task`; returns the run summary (see summary.json).

    Under `torchrun` this is DistributedDataParallel training (rank 0 evaluates,
    logs and writes; only its summary holds the scores). resume=True continues from
    output_dir/checkpoint.pt when it exists (and says so, then starts fresh, when
    it does not); a resume that is refused (other config, other data, a corrupt
    checkpoint) leaves the folder untouched. overwrite=False refuses to start
    afresh over a finished run (the CLI's default; notebooks re-run their cells,
    so the API's default is True). The folder is locked for the run: a second run
    into it raises run_folder.RunFolderLockedError. A SIGINT/SIGTERM saves a
    checkpoint and returns a summary with status "interrupted" and the signal's
    name (no summary.json); a NaN/inf loss raises NonFiniteLossError, NaN/inf
    weights NonFiniteWeightsError (never saved).
    """
    return lifecycle.run(config, _run, resume, overwrite, check_files=lambda: check_init(config))


def check_init(config: FinetuneConfig) -> None:
    """FileNotFoundError naming the init when it names weights that are not there."""
    if config.init != "random":
        inits.weights_path(config.init)


def _run(config: FinetuneConfig, ctx: session.DistributedContext, resuming: bool) -> dict:
    output_dir, device = Path(config.output_dir), ctx.device
    results_path, validation_path = output_dir / "results.csv", output_dir / "validation.csv"
    columns = results_columns(config)
    metric, higher_is_better = primary_metric(config.task)
    folder, source = resolve_data_root(config)
    datasets = build_datasets(config, folder)
    model, report = build_model(config)
    tag = inits.tag(config.init)
    n_train = len(datasets["train"])
    n_items = epoch_items(config, n_train)
    train_items = datasets["train"] if n_items == n_train else Repeated(datasets["train"], n_items)
    train_data = training.SeededSamples(train_items, config.seed)
    sampler = training.ResumableSampler(train_data, ctx.world_size, ctx.rank, shuffle=True, seed=config.seed)
    epoch_steps = math.ceil(sampler.num_samples / config.batch_size)

    dtype = training.amp_dtype(device, config.amp)
    channels_last = training.use_channels_last(device, config.channels_last, registry_model(model))
    fast_path = training.fast_path_summary(dtype, {"model": channels_last})
    model = training.prepare_model(model, device, channels_last)
    optimizer = make_optimizer(config, model)
    scaler = training.make_grad_scaler(device, dtype)
    best = BestModel(higher_is_better)
    position, history = {"epoch": 0, "batches_done": 0, "step": 0, "loss_sum": 0.0}, []
    fingerprint = run_folder.data_fingerprint(list(datasets.values()))
    content = run_folder.content_fingerprint(folder)
    holders = {"model": model, "optimizer": optimizer, "scaler": scaler, "rng": lifecycle.RNG, "position": position,
               "best": best, "history": history}
    checkpoint = lifecycle.Checkpoint(output_dir, config, holders, data=fingerprint, fast_path=fast_path, content=content,
                                      may_grow=RESUME_MAY_GROW, ignore=RESUME_IGNORED)
    if resuming:
        checkpoint.restore()
        for group in optimizer.param_groups:  # the config's lr (it may change on resume), after the drops so far
            group["lr"] = scheduled_lr(history, config)
    lifecycle.start_folder(ctx, config, fast_path)
    if ctx.is_main:
        if resuming:
            run_folder.keep_rows_up_to(results_path, "epoch", position["epoch"], columns)
            run_folder.keep_rows_up_to(validation_path, "epoch", position["epoch"], columns)
        else:
            results_path.unlink(missing_ok=True)
            validation_path.unlink(missing_ok=True)
    model_run = training.maybe_compile(session.wrap_ddp(model, ctx), config.compile)
    logger = None
    if ctx.is_main:
        logger = run_folder.CSVLogger(output_dir / "log.csv", LOG_COLUMNS, position["step"] if resuming else None)

    def evaluate_epoch(epoch):
        """Validation score; the best model's test score; one row each in the results files."""
        score = float("nan")
        if ctx.is_main:
            scores = evaluate(model, datasets["val"], config.task, device, config.batch_size, dtype, channels_last)
            score = scores[metric]
            if best.update(epoch, scores[metric], model) and config.test:
                best.test = evaluate(model, datasets["test"], config.task, device, config.batch_size, dtype, channels_last)
            results.append_rows(validation_path, [result_row(config, epoch, scores, tag, source)], columns)
            if config.test:
                results.append_rows(results_path, [result_row(config, epoch, best.test, tag, source)], columns)
        history.append((epoch, session.share_from_main(score, device)))  # every rank drops the lr and stops alike
        for group in optimizer.param_groups:
            group["lr"] = scheduled_lr(history, config)
        return history[-1][1]

    meter, status = training.Throughput(), "finished"
    images_per_s = float("nan")
    total_steps = config.epochs * epoch_steps
    estimate = training.RunEstimate(epoch_steps, total_steps, position["step"], SMALLER_RUN_FLAGS, enabled=ctx.is_main)
    workers = training.loader_workers(config.workers)
    progress = training.progress_bar(total_steps, f"finetune {config.model} {config.task}", initial=position["step"],
                                     disable=not ctx.is_main)
    model_run.train()
    with training.StopRequest() as stop:
        while (position["epoch"] < config.epochs and status == "finished"
               and not plateaued(position["epoch"], history, config)):
            epoch = position["epoch"] + 1  # 1-based, as in the paper's tables
            sampler.set_epoch(epoch, start_index=position["batches_done"] * config.batch_size)
            train_data.epoch = epoch
            loader = DataLoader(train_data, batch_size=config.batch_size, sampler=sampler, num_workers=workers,
                                pin_memory=device.type == "cuda", worker_init_fn=training.worker_init())
            for inputs, target in training.start_workers(loader):
                inputs = training.to_device(inputs, device, channels_last)
                target = training.to_device(target, device, channels_last)
                with training.autocast(device, dtype):
                    loss = task_loss(config.task, model_run(inputs), target)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                position["step"] += 1
                position["batches_done"] += 1
                value = session.all_reduce_mean(loss.detach().float()).item()
                finite.check_finite(position["step"], loss=value)
                position["loss_sum"] += value
                images_per_s = meter.update(len(inputs) * ctx.world_size)
                estimate.step()
                progress.update(1)
                progress.set_postfix(loss=f"{value:.3g}", refresh=False)
                if session.all_reduce_any(stop.requested, device):
                    status = "interrupted"
                    break
            if status != "finished":
                checkpoint.save(ctx)
                break
            check_weights_after_epoch(model, epoch, checkpoint.path)
            val = evaluate_epoch(epoch) if is_evaluation_epoch(epoch, config) else None
            if ctx.is_main:
                logger.log({"epoch": epoch, "step": position["step"], "lr": optimizer.param_groups[0]["lr"],
                            "train_loss": position["loss_sum"] / max(position["batches_done"], 1),
                            "val_metric": val if val is not None else "", "images_per_s": images_per_s})
            position.update(epoch=epoch, batches_done=0, loss_sum=0.0)
            checkpoint.save(ctx)
    progress.close()
    if status == "interrupted":
        return lifecycle.interrupted(ctx, stop, f"in epoch {position['epoch'] + 1}", checkpoint, epoch=position["epoch"],
                                     step=position["step"])

    summary = {
        "status": "finished", "task": config.task, "dataset": config.dataset, "model": config.model,
        "init": tag, "source": source, "data_root": str(folder), "output_dir": str(output_dir),
        "metric": metric, "best_epoch": best.epoch, f"best_val_{metric}": best.score,
        **{f"test_{k}": v for k, v in best.test.items()},
        "val_history": [list(h) for h in history], "epochs": position["epoch"], "steps": position["step"],
        "stopped_at_plateau": plateaued(position["epoch"], history, config),
        "lr_drop_epochs": lr_drop_epochs(history, config),
        "train_images": n_train, "transferred_tensors": len(report.loaded) if report else 0,
        "reinitialised_tensors": report.reinitialised if report else [],
        "world_size": ctx.world_size, "fast_path": fast_path, "wall_s": checkpoint.wall_s(),
        "data_sha256": fingerprint, **provenance.provenance(device),
    }

    def write_outputs():
        model.load_state_dict(best.state)  # training is over: the run's model becomes the best one
        models.save_weights(registry_model(model), output_dir / "best_model.safetensors",
                            {"task": config.task, "best_epoch": best.epoch, metric: best.score})
        write_qc_images(model, datasets["test" if "test" in datasets else "val"], config.task, output_dir / "qc", device)

    return lifecycle.finish(ctx, config, summary, write_outputs)


def check_weights_after_epoch(model, epoch: int, checkpoint_path: Path) -> None:
    """NonFiniteWeightsError when an epoch left NaN/inf in the weights or buffers (a BatchNorm
    running_var, say, while every loss was finite): such a model is never scored or saved."""
    kept = ("the last good checkpoint is kept (continue from it with --resume and a lower lr)" if checkpoint_path.is_file()
            else "there is no earlier checkpoint (start again with a lower lr)")
    finite.check_finite_weights(training.unwrap_model(model).state_dict(),
                                f"the model diverged in epoch {epoch}: it is not scored or saved; {kept}")


@torch.no_grad()
def write_qc_images(model, dataset, task: str, folder: Path, device, n: int = QC_IMAGES) -> list:
    """PNGs of the model on the first `n` images of `dataset` (the test split): input | prediction |
    ground truth, masks drawn in red (`emlib.qc`), for a person to check beside the scores."""
    model.eval()
    paths = []
    for index in range(min(n, len(dataset))):
        inputs, target = dataset[index]
        output = model(inputs[None].to(device)).float().cpu()[0, 0].numpy()
        image, truth = inputs[0].numpy(), target[0].numpy()
        if task == SEGMENTATION:
            panels = [("input", image), ("prediction", qc.overlay(image, output > 0)), ("ground truth", qc.overlay(image, truth))]
        else:
            panels = [("input", image), ("prediction", output.clip(0, 1)), ("target", truth)]
        paths.append(qc.save_panels(folder / f"test_{index}.png", panels))
    return paths
