"""What a fine-tuning run's `init` names: the one home of that vocabulary.

    "random"                PyTorch's default initialisation
    a path                  a pretrained generator.safetensors, or the pretraining run folder holding it
                            (with its model_card.json)
    a name of PRETRAINED    one of the real-data study's committed generators (e.g. "real_small/unet_2_44")

Three words describe an init in results and figures:

    tag    the `init` column of results rows: random, the paper's P50k / P100k / P200k when the
           model card's pretraining subset is one of those sizes, else pretrained; "-L1" appended
           for a generator pretrained without the adversarial loss (adv_weight 0)
    kind   the study's: random, GAN (pretrained with the adversarial loss) or L1-only
    card   the pretraining's model card (None for random weights or a card that is gone)

    python -m emlib finetune --dataset emps --data-root ../shared/data/real/nanoparticles --init real_small/unet_2_44

A name of PRETRAINED stands for a pretraining run folder under `results/` of an emlib
checkout, or of the copy a pip install carries (`emlib.paths.repository_path`): Pix2Pix (LSGAN + 100 x L1,
or L1 only) on the real cellular EM patches of experiments/real_small.yaml, on one CPU thread:
small scale, real data, not the paper's CEM500K pretraining. `describe` says what each one is,
from its model card (see book/reproduction_status.md).
"""
import json
from pathlib import Path

from emlib import models
from emlib.config import upgrade
from emlib.paper import PRETRAINED_TAGS
from emlib.paths import repository_path

RANDOM = "random"
PRETRAINED = {
    "real_small/unet_2_44": "results/real_small/pretrain-unet_2_44-preal",
    "real_small/unet_4_200": "results/real_small/pretrain-unet_4_200-preal",
    "real_small/unet_2_44-l1": "results/real_small/pretrain-unet_2_44-preal-l1",
    "real_small/hrnet_w18_small": "results/real_small/pretrain-hrnet_w18_small-preal",
}
KINDS = (RANDOM, "GAN", "L1-only")
L1_ONLY_SUFFIX = "-L1"


def path_of(name) -> Path | None:
    """The run folder a pretrained name stands for, or None when `name` is not one of PRETRAINED."""
    if str(name) not in PRETRAINED:
        return None
    folder = repository_path(PRETRAINED[str(name)])
    if not (folder / "generator.safetensors").is_file():
        raise FileNotFoundError(f"init={name!r} names {folder}, which this installation does not hold: the study's "
                                "generators ship with a checkout of the emlib repository and with its wheel "
                                "(pip install git+https://github.com/emlib-book/emlib)")
    return folder


def weights_path(init) -> Path:
    """The generator.safetensors named by `init`: the file, the folder holding it, or a name of PRETRAINED."""
    path = path_of(init) or Path(init)
    if path.is_dir():
        path = path / "generator.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"init={str(init)!r}: no pretrained weights file {path} (use 'random' or a generator export)")
    return path


def card(init) -> dict | None:
    """The model card of the pretraining behind `init` (renamed fields upgraded); None for random
    weights or when the card (or the weights) is no longer there."""
    if init in (None, RANDOM):
        return None
    path = repository_path(PRETRAINED[str(init)]) if str(init) in PRETRAINED else Path(init)
    card_path = (path if path.is_dir() else path.parent) / "model_card.json"
    return upgrade(json.loads(card_path.read_text())) if card_path.is_file() else None


def export_model(init) -> str:
    """The registry name of the generator export `init` names (from its file's header)."""
    path = weights_path(init)
    name = models.read_metadata(path).get("name")
    if name not in models.generator_names():
        raise ValueError(f"init={str(init)!r}: {path} names no registry generator ({name!r}); give model explicitly")
    return name


def tag(init) -> str:
    """The `init` column of results rows (see the module docstring); FileNotFoundError when the weights are gone."""
    if init == RANDOM:
        return RANDOM
    weights_path(init)
    pretraining = card(init)
    if pretraining is None:
        return "pretrained"
    subset = pretraining.get("subset", pretraining.get("config", {}).get("subset"))
    l1_only = pretraining.get("config", {}).get("adv_weight", 1.0) == 0
    return PRETRAINED_TAGS.get(subset, "pretrained") + (L1_ONLY_SUFFIX if l1_only else "")


def is_pretrained(init_tag) -> bool:
    """Any init but random: the paper's P50k/P100k/P200k, or `pretrained` for a generator
    pretrained on another subset size (toy runs)."""
    return init_tag != RANDOM


def kind(init_tag: str) -> str:
    """A results row's init tag as the study names it: random, GAN or L1-only (KINDS)."""
    if init_tag == RANDOM:
        return RANDOM
    return "L1-only" if str(init_tag).endswith(L1_ONLY_SUFFIX) else "GAN"


def describe(folder) -> str:
    """One line saying what a pretrained generator is, from its model card (and the run's summary)."""
    folder = Path(folder)
    model_card = card(folder)
    config = model_card.get("config", {})
    summary_path = folder / "summary.json"
    machine = json.loads(summary_path.read_text()).get("machine", {}) if summary_path.is_file() else {}
    loss = "LSGAN + 100 x L1" if config.get("adv_weight", 1.0) > 0 else "L1 only (no discriminator)"
    hardware = f"GPU {machine['gpu']}" if machine.get("gpu") else f"CPU ({machine.get('torch_threads', '?')} thread)"
    scale = "synthetic toy run" if model_card.get("source") == "synthetic" else "small scale, real data"
    return (f"{model_card.get('model', config.get('model'))} pretrained with Pix2Pix ({loss}) on "
            f"{model_card.get('subset')} {model_card.get('source')} images from "
            f"{Path(str(model_card.get('data_root', '?'))).name}, {model_card.get('steps')} steps of "
            f"{config.get('batch_size')} at {model_card.get('image_size')} px on {hardware}; "
            f"{scale}; final validation L1 {model_card.get('final_val_l1', float('nan')):.4f}")
