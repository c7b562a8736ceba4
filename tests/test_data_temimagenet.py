"""TEMImageNet loader: real input PNGs, task table, Table 1 split proportions, bad pairs."""
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emlib.data import TEMIMAGENET_TASKS, TEMImageNet, ensure_synthetic
from emlib.data.temimagenet import split_counts

REAL = Path(__file__).resolve().parents[1].parent / "shared/data/real"
INPUTS = REAL / "temimagenet_inputs"
needs_real = pytest.mark.skipif(not INPUTS.is_dir(), reason=f"real samples not found at {INPUTS}")


@pytest.fixture
def real_tree(tmp_path):
    """A TEMImageNet tree from the two real inputs (+ one renamed copy); targets = inputs."""
    for folder in ("image", "noNoise"):
        (tmp_path / folder).mkdir()
        for png in INPUTS.glob("*.png"):
            shutil.copy(png, tmp_path / folder / png.name)
        shutil.copy(INPUTS / "11133.png", tmp_path / folder / "00001.png")
    return tmp_path


@needs_real
def test_real_inputs_load_as_unit_floats(real_tree):
    (real_tree / "image" / "99999.png").write_bytes((INPUTS / "12965.png").read_bytes())  # no target
    ids = [i for s in ("train", "val", "test") for i in TEMImageNet(real_tree, "denoising", s).ids]
    assert sorted(ids) == ["00001", "11133", "12965"]
    dataset = TEMImageNet(real_tree, "denoising", split="train")
    inputs, target = dataset[0]
    pixels = np.asarray(Image.open(real_tree / "image" / f"{dataset.ids[0]}.png"), dtype=np.float32) / 255
    assert inputs.shape == target.shape == (1, 256, 256)
    assert np.array_equal(inputs[0].numpy(), pixels)


@needs_real
def test_mismatched_pair_names_both_files(real_tree):
    for name in ("11133", "12965", "00001"):
        Image.new("L", (128, 128)).save(real_tree / "noNoise" / f"{name}.png")
    dataset = TEMImageNet(real_tree, "denoising", split="train")
    with pytest.raises(ValueError, match=r"image/\d+\.png.*noNoise/\d+\.png"):
        dataset[0]


def test_split_counts_follow_table_1():
    assert split_counts(14364) == (10377, 1832, 2155)
    assert split_counts(120) == (87, 15, 18)
    assert split_counts(3) == (1, 1, 1)


def test_synthetic_splits_are_seeded_disjoint_and_complete(tmp_path):
    root = ensure_synthetic(tmp_path / "data", scale="tiny") / "temimagenet"
    splits = {s: TEMImageNet(root, "super_resolution", split=s) for s in ("train", "val", "test")}
    ids = [set(d.ids) for d in splits.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert all(d.sources == d.ids for d in splits.values())  # a sample id is its source: splits are by sample
    assert len(set.union(*ids)) == 8
    assert TEMImageNet(root, "super_resolution", "val").ids == splits["val"].ids
    reseeded = [TEMImageNet(root, "super_resolution", s, seed=3).ids for s in ("train", "val", "test")]
    assert reseeded != [d.ids for d in splits.values()]
    for task, (_, target_folder) in TEMIMAGENET_TASKS.items():
        inputs, target = TEMImageNet(root, task, "train")[0]
        stored = np.asarray(Image.open(root / target_folder / f"{TEMImageNet(root, task).ids[0]}.png")) / 255
        assert np.allclose(target[0].numpy(), stored) and 0 <= inputs.min() and inputs.max() <= 1
    alias = TEMImageNet(root, "background_removal")
    assert alias.target_dir.name == "noBackgroundnoNoise"


def test_bad_task_and_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="task"):
        TEMImageNet(tmp_path, "deblurring")
    with pytest.raises(FileNotFoundError, match="image"):
        TEMImageNet(tmp_path, "denoising")
