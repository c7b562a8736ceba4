"""Synthetic data: real on-disk formats, written once, deterministic, safe under concurrency."""
import hashlib
import json
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from PIL import Image

from emlib.data import AU_DATASETS, dataset_folder, ensure_synthetic, is_synthetic, locate, pretraining_folder
from emlib.data.synthetic import FORMAT_VERSION, MARKER, TEMIMAGENET_FOLDERS


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


def test_locate_resolves_dataset_folders_and_their_source(root, tmp_path, monkeypatch):
    assert locate(root, "au") == (root / "au", "synthetic")
    assert locate(root / "temimagenet", "temimagenet") == (root / "temimagenet", "synthetic")
    (tmp_path / "cem500k").mkdir()
    assert locate(tmp_path, "cem500k") == (tmp_path / "cem500k", "real")
    assert locate(tmp_path / "cem500k", "cem500k") == (tmp_path / "cem500k", "real")
    monkeypatch.setattr("emlib.data.catalog.ensure_synthetic", lambda: root)  # None = the synthetic set
    assert locate(None, "au") == (root / "au", "synthetic")
    assert dataset_folder("emps", None, verbose=False) == (root / "nanoparticles" / "emps", "synthetic")
    assert dataset_folder("msa_segtrack", root / "nanoparticles", verbose=False)[0] == root / "nanoparticles" / "msa_segtrack"
    # Pretraining reads data_root as given: a root with several sources is never narrowed to one of them.
    (tmp_path / "cem500k" / "a.tif").write_bytes(b"")
    assert pretraining_folder(tmp_path, verbose=False) == (tmp_path, "real")
    assert pretraining_folder(None, verbose=False) == (root / "cem500k", "synthetic")
    with pytest.raises(FileNotFoundError, match="data_root folder not found: .*nowhere"):
        pretraining_folder(tmp_path / "nowhere")


def test_synthetic_nanoparticle_folders_read_like_the_real_ones(root):
    from emlib.data import NANOPARTICLE_DATASETS, SegmentationFolder

    for name, options in NANOPARTICLE_DATASETS.items():
        splits = [SegmentationFolder(root / "nanoparticles" / name, s, **options) for s in ("train", "val", "test")]
        assert all(len(d) > 0 for d in splits)
        image, mask = splits[0][0]
        assert image.shape == mask.shape and 0 < float(mask.mean()) < 1


def test_written_once_and_deterministic(root, tmp_path):
    before = (root / MARKER).stat().st_mtime_ns
    assert ensure_synthetic(root, scale="tiny") == root
    assert (root / MARKER).stat().st_mtime_ns == before
    assert tree_digest(ensure_synthetic(tmp_path / "again", scale="tiny")) == tree_digest(root)
    with pytest.raises(ValueError, match="scale"):
        ensure_synthetic(root, scale="ci")


def test_outdated_folder_is_rewritten(root, tmp_path):
    old = ensure_synthetic(tmp_path / "old", scale="tiny")
    (old / "au" / "stale.txt").write_text("from an older emlib")
    (old / MARKER).write_text(json.dumps({"scale": "tiny", "version": 0}))
    assert ensure_synthetic(old, scale="tiny") == old
    assert json.loads((old / MARKER).read_text())["version"] == FORMAT_VERSION
    assert not (old / "au" / "stale.txt").exists() and tree_digest(old) == tree_digest(root)
    assert [p.name for p in tmp_path.iterdir()] == ["old"]


def test_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match=str(tmp_path)):
        ensure_synthetic(tmp_path, scale="tiny")
    assert (tmp_path / "mine.txt").exists()


def test_concurrent_writers_both_succeed(tmp_path):
    # Threads race on the file system exactly as processes do (staging folder, then rename),
    # without paying two torch imports.
    target = tmp_path / "shared"
    results, errors = [], []

    def write():
        try:
            results.append(ensure_synthetic(target, scale="tiny"))
        except Exception as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=write) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and results == [target, target]
    assert (target / MARKER).exists()
    assert [p.name for p in tmp_path.iterdir()] == ["shared"]  # no staging folders left behind


def test_data_lines_print_paths_relative_to_the_working_directory(data_root, monkeypatch, capsys):
    from emlib.data import catalog

    monkeypatch.chdir(Path(data_root).parent)
    catalog.locate(data_root, "au", verbose=True)
    line = capsys.readouterr().out
    assert line.startswith(f"data: {Path(data_root).name}/au (synthetic)") and str(Path(data_root).parent) not in line
    monkeypatch.chdir(Path(data_root) / "au")
    catalog.pretraining_folder(data_root)
    assert capsys.readouterr().out.startswith("pretraining data: every image under .. (synthetic)")
