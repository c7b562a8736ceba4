"""CEM500K loader on the real example patches: splits, manifests, edge patches, bad files."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from emlib.data import CEM500K
from emlib.data.cem500k import eval_split_size, pad_to_at_least

REAL = Path(__file__).resolve().parents[1].parent / "shared/data/real"
EXAMPLES = REAL / "cem500k_examples"
needs_real = pytest.mark.skipif(not EXAMPLES.is_dir(), reason=f"real samples not found at {EXAMPLES}")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private HOME, so that manifests for read-only folders land in tmp, not ~/.cache."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@needs_real
def test_real_examples_split_disjointly_and_completely(home):
    splits = {s: CEM500K(EXAMPLES, split=s) for s in ("train", "val", "test")}
    files = [set(d.files) for d in splits.values()]
    assert sum(len(f) for f in files) == 7 and set.union(*files) == {p.name for p in EXAMPLES.glob("*.tiff")}
    assert len(splits["val"]) == len(splits["test"]) == eval_split_size(7) == 1
    # The read-only folder gets no manifest; the cache under HOME does.
    assert not list(EXAMPLES.glob("*.json"))
    assert splits["train"].manifest_path.is_relative_to(home)


@needs_real
def test_items_are_the_tiff_pixels_in_unit_range(home):
    dataset = CEM500K(EXAMPLES, split="val")
    image = dataset[0]
    pixels = tifffile.imread(EXAMPLES / dataset.files[0])
    assert image.shape == (1, 224, 224) and image.dtype == torch.float32
    if pixels.shape == (224, 224):  # centre crop of a full patch is the patch itself
        assert torch.equal(image[0], torch.from_numpy(pixels.astype(np.float32) / 255))


@needs_real
def test_edge_patch_is_padded_not_crashed(home, tmp_path):
    manifest = tmp_path / "m.json"
    for split in ("train", "val", "test"):
        dataset = CEM500K(EXAMPLES, split=split, manifest_path=manifest)
        if "example5.tiff" in dataset.files:
            image = dataset[dataset.files.index("example5.tiff")]
            assert image.shape == (1, 224, 224)
            assert 0.0 <= image.min() and image.max() <= 1.0
    assert CEM500K(EXAMPLES, image_size=64, manifest_path=manifest)[0].shape == (1, 64, 64)


def test_symmetric_padding_rule():
    image = np.arange(6).reshape(2, 3)
    padded = pad_to_at_least(image, 4)
    assert padded.shape == (4, 4)
    assert padded[1:3, 0:3].tolist() == image.tolist()  # 1 row above and below, 1 column after
    assert padded[0].tolist() == padded[1].tolist()  # mirrored about the edge


@needs_real
def test_manifest_is_reused_and_reproducible(home, tmp_path):
    first = CEM500K(EXAMPLES, manifest_path=tmp_path / "a.json")
    written = (tmp_path / "a.json").stat().st_mtime_ns
    again = CEM500K(EXAMPLES, manifest_path=tmp_path / "a.json")
    assert (tmp_path / "a.json").stat().st_mtime_ns == written
    fresh = CEM500K(EXAMPLES, manifest_path=tmp_path / "b.json")
    assert first.manifest_hash == again.manifest_hash == fresh.manifest_hash
    assert first.files == fresh.files
    other_seed = CEM500K(EXAMPLES, seed=1, manifest_path=tmp_path / "c.json")
    assert other_seed.manifest_hash != first.manifest_hash
    with pytest.raises(ValueError, match="seed"):
        CEM500K(EXAMPLES, seed=1, manifest_path=tmp_path / "a.json")


@needs_real
def test_subsets_are_nested_and_bounded(home):
    full = CEM500K(EXAMPLES)
    assert CEM500K(EXAMPLES, subset=3).files == full.files[:3]
    with pytest.raises(ValueError, match="subset=50000"):
        CEM500K(EXAMPLES, subset=50_000)
    with pytest.raises(ValueError, match="subset"):
        CEM500K(EXAMPLES, split="val", subset=1)


def make_folder(tmp_path, count):
    folder = tmp_path / "cem"
    (folder / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        tifffile.imwrite(folder / ("nested" if i % 2 else "") / f"p{i}.tif", rng.integers(0, 255, (30, 40), np.uint8))
    return folder


def test_writable_folder_keeps_its_manifest_and_finds_nested_files(tmp_path):
    folder = make_folder(tmp_path, 30)
    dataset = CEM500K(folder, image_size=16)
    assert dataset.manifest_path.parent == folder
    manifest = json.loads(dataset.manifest_path.read_text())
    assert len(manifest["val"]) == len(manifest["test"]) == 3 and len(manifest["train"]) == 24
    assert any(f.startswith("nested/") for f in manifest["train"] + manifest["val"] + manifest["test"])


def test_corrupt_tiff_is_named(tmp_path):
    folder = make_folder(tmp_path, 3)
    (folder / "broken.tiff").write_bytes(b"II*\x00 definitely not a tiff")
    splits = [CEM500K(folder, s, image_size=16, manifest_path=tmp_path / "m.json") for s in ("train", "val", "test")]
    dataset = next(d for d in splits if "broken.tiff" in d.files)
    with pytest.raises(ValueError, match="broken.tiff"):
        dataset[dataset.files.index("broken.tiff")]


def test_missing_folder_and_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        CEM500K(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split"):
        CEM500K(tmp_path, split="validation")
    folder = make_folder(tmp_path, 2)
    with pytest.raises(ValueError, match="at least 3"):
        CEM500K(folder)
    shutil.rmtree(folder)
