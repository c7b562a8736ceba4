"""Synthetic data: real on-disk formats, written once, deterministic, safe under concurrency."""
import hashlib
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from PIL import Image

from emlib.data import AU_DATASETS, ensure_synthetic, is_synthetic
from emlib.data.synthetic import MARKER, TEMIMAGENET_FOLDERS


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return ensure_synthetic(tmp_path_factory.mktemp("synthetic") / "data", scale="tiny")


def tree_digest(folder):
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix != ".h5"):
        digest.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    for path in sorted(Path(folder).rglob("*.h5")):  # HDF5 files carry timestamps: compare the arrays
        with h5py.File(path) as f:
            for key in f:
                digest.update(f[key][()].tobytes())
    return digest.hexdigest()


def test_cem500k_files_are_uint8_tiffs_with_edge_patches(root):
    shapes = set()
    for path in (root / "cem500k").rglob("*.tiff"):
        image = tifffile.imread(path)
        assert image.dtype == np.uint8 and image.ndim == 2
        shapes.add(image.shape)
    assert (224, 224) in shapes
    assert all(224 in s and min(s) in (138, 200, 224) for s in shapes)


def test_au_files_have_the_real_layouts(root):
    for spec in AU_DATASETS.values():
        if spec["source"] == "sytwu":
            with h5py.File(root / "au" / f"{spec['tag']}_Images.h5") as f:
                images = f["images"][()]
            with h5py.File(root / "au" / f"{spec['tag']}_Labels.h5") as f:
                labels = f["labels"][()]
            assert images.ndim == 3 and images.shape == labels.shape
            assert set(np.unique(labels)) == {0, 1}
            # x-ray spikes exist, so that the spike removal has work to do
            assert (images.max(axis=(1, 2)) > np.median(images) + spec["spike_threshold"]).all()
        else:
            with h5py.File(root / "au" / spec["images_file"]) as f:
                images = f["images"][()]
            with h5py.File(root / "au" / spec["maps_file"]) as f:
                maps = f["maps"][()]
            assert images.shape[1:] == (512, 512, 1) and maps.shape == images.shape[:3] + (2,)
            assert np.array_equal(maps.sum(-1), np.ones(maps.shape[:3]))  # one-hot


def test_temimagenet_folders_share_ids_and_size(root):
    names = [sorted(p.name for p in (root / "temimagenet" / f).glob("*.png")) for f in TEMIMAGENET_FOLDERS]
    assert all(n == names[0] for n in names) and len(names[0]) == 8
    for folder in TEMIMAGENET_FOLDERS:
        image = Image.open(root / "temimagenet" / folder / names[0][0])
        assert image.mode == "L" and image.size == (256, 256)
    noisy, clean = (np.asarray(Image.open(root / "temimagenet" / f / names[0][0]), float) for f in ("image", "noNoise"))
    assert np.corrcoef(noisy.ravel(), clean.ravel())[0, 1] > 0.3  # the label is the input without noise


def test_marker_and_is_synthetic(root, tmp_path):
    assert (root / MARKER).exists()
    assert is_synthetic(root) and is_synthetic(root / "au") and is_synthetic(root / "temimagenet" / "image")
    assert not is_synthetic(tmp_path)


def test_written_once_and_deterministic(root, tmp_path):
    before = (root / MARKER).stat().st_mtime_ns
    assert ensure_synthetic(root, scale="tiny") == root
    assert (root / MARKER).stat().st_mtime_ns == before
    assert tree_digest(ensure_synthetic(tmp_path / "again", scale="tiny")) == tree_digest(root)
    with pytest.raises(ValueError, match="scale"):
        ensure_synthetic(root, scale="ci")


def test_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match=str(tmp_path)):
        ensure_synthetic(tmp_path, scale="tiny")
    assert (tmp_path / "mine.txt").exists()


def test_concurrent_writers_both_succeed(tmp_path):
    target = tmp_path / "shared"
    code = f"from emlib.data.synthetic import ensure_synthetic; print(ensure_synthetic({str(target)!r}, 'tiny'))"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    assert all(rc == 0 for _, _, rc in results), [err.decode()[-500:] for _, err, _ in results]
    assert (target / MARKER).exists()
    assert [p.name for p in tmp_path.iterdir()] == ["shared"]  # no staging folders left behind
