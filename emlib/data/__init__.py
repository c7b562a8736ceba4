"""The three datasets of the paper, their synthetic stand-ins, and the pretraining corruption.

    CEM500K          unlabeled cellular EM TIFF patches (pretraining)
    AuSegmentation   Au nanoparticle HRTEM tiles and masks (segmentation)
    TEMImageNet      simulated ADF-STEM images and label images (restoration)
    Corruption       the batched, seeded noise/blur/flip/rot90 of pretraining
    ensure_synthetic writes a small synthetic copy of all three in their real formats
    locate           a data_root (None = synthetic) -> the dataset folder and its source
"""
from emlib.data.au import AU_DATASETS, AuSegmentation
from emlib.data.cem500k import CEM500K
from emlib.data.corruption import Corruption
from emlib.data.synthetic import ensure_synthetic, is_synthetic, locate
from emlib.data.temimagenet import TEMIMAGENET_TASKS, TEMImageNet

__all__ = [
    "AU_DATASETS",
    "AuSegmentation",
    "CEM500K",
    "Corruption",
    "TEMIMAGENET_TASKS",
    "TEMImageNet",
    "ensure_synthetic",
    "is_synthetic",
    "locate",
]
