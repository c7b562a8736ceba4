"""Pretrained generators by name: the ones our real-data study committed to the repository.

    python -m emlib finetune --dataset emps --data-root ../shared/data/real/nanoparticles --init real_small/unet_2_44

A name stands for a pretraining run folder under `results/` of an emlib checkout
(these small files are not part of the pip package). What each one is, from its
model card: Pix2Pix (LSGAN + 100 x L1, or L1 only) on 1504 real cellular EM patches,
3000 steps of 8 random 96 px crops on one CPU thread: small scale, real data, not the
paper's CEM500K pretraining (see book/reproduction_status.md).
"""
import json
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PRETRAINED = {
    "real_small/unet_2_44": "results/real_small/pretrain-unet_2_44-preal",
    "real_small/unet_4_200": "results/real_small/pretrain-unet_4_200-preal",
    "real_small/unet_2_44-l1": "results/real_small/pretrain-unet_2_44-preal-l1",
}


def path_of(name) -> Path | None:
    """The run folder a pretrained name stands for, or None when `name` is not one of PRETRAINED."""
    if str(name) not in PRETRAINED:
        return None
    folder = REPO_ROOT / PRETRAINED[str(name)]
    if not (folder / "generator.safetensors").is_file():
        raise FileNotFoundError(f"init={name!r} names {folder}, which this installation does not hold: "
                                "the study's generators ship with a checkout of the emlib repository, not with the package")
    return folder


def describe(folder) -> str:
    """One line saying what a pretrained generator is, from its model card (and the run's summary)."""
    folder = Path(folder)
    card = json.loads((folder / "model_card.json").read_text())
    config = card.get("config", {})
    summary_path = folder / "summary.json"
    machine = json.loads(summary_path.read_text()).get("machine", {}) if summary_path.is_file() else {}
    loss = "LSGAN + 100 x L1" if config.get("adv_weight", 1.0) > 0 else "L1 only (no discriminator)"
    hardware = f"GPU {machine['gpu']}" if machine.get("gpu") else f"CPU ({machine.get('torch_threads', '?')} thread)"
    scale = "synthetic toy run" if card.get("source") == "synthetic" else "small scale, real data"
    return (f"{card.get('model', config.get('model', config.get('generator')))} pretrained with Pix2Pix ({loss}) on "
            f"{card.get('subset')} {card.get('source')} images from {Path(str(card.get('data_root', '?'))).name}, "
            f"{card.get('steps')} steps of {config.get('batch_size')} at {card.get('image_size')} px on {hardware}; "
            f"{scale}; final validation L1 {card.get('final_val_l1', float('nan')):.4f}")
