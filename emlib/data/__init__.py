"""The datasets of the paper, the real data users have, their synthetic stand-ins, and the pretraining corruption.

    ImageFolder          any folder of grayscale EM images, unlabeled (pretraining)
    CEM500K              the paper's pretraining set: ImageFolder of TIFF patches
    AuSegmentation       Au nanoparticle HRTEM tiles and masks (the paper's segmentation sets)
    SegmentationFolder   images/ + masks/ folders (msa_segtrack, EMPS, a user's own)
    TEMImageNet          simulated ADF-STEM images and label images (restoration)
    PairAugment          the fine-tuning augmentations (resize, crop, flips/rotations, noise)
    Corruption           the batched, seeded noise/blur/flip/rot90 of pretraining
    ensure_synthetic     writes a small synthetic copy of every dataset in its real format
    locate, dataset_folder, pretraining_folder, check_data_root
                         a data_root (None = synthetic) -> the dataset folder and its source
"""
from emlib.data.au import AU_DATASETS, AuSegmentation
from emlib.data.augment import PairAugment
from emlib.data.catalog import (RESTORATION_DATASET, SEGMENTATION_DATASETS, USER_FOLDER, check_data_root, dataset_folder,
                                locate, pretraining_folder)
from emlib.data.cem500k import CEM500K
from emlib.data.corruption import Corruption
from emlib.data.image_folder import ImageFolder
from emlib.data.segmentation_folder import NANOPARTICLE_DATASETS, SegmentationFolder
from emlib.data.synthetic import ensure_synthetic, is_synthetic
from emlib.data.temimagenet import TASK_ALIASES, TEMIMAGENET_TASKS, TEMImageNet

__all__ = [
    "AU_DATASETS", "AuSegmentation", "CEM500K", "Corruption", "ImageFolder", "NANOPARTICLE_DATASETS", "PairAugment",
    "RESTORATION_DATASET", "SEGMENTATION_DATASETS", "SegmentationFolder", "TASK_ALIASES", "TEMIMAGENET_TASKS", "TEMImageNet",
    "USER_FOLDER", "check_data_root", "dataset_folder", "ensure_synthetic", "is_synthetic", "locate", "pretraining_folder",
]
