"""Au segmentation: Sytwu preprocessing on hand cases, every dataset name, splits, bad files."""
import hashlib

import h5py
import numpy as np
import pytest
import torch

from emlib.data import AU_DATASETS, AuSegmentation, ensure_synthetic
from emlib.data.au import keep_tile, read_masks, remove_xray_spikes, tile_image
from emlib.data.images import standardize


@pytest.fixture(scope="module")
def au_root(tmp_path_factory):
    return ensure_synthetic(tmp_path_factory.mktemp("synthetic") / "data", scale="tiny") / "au"


def digest(array):
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def test_spike_removal_hand_cases():
    image = np.full((5, 5), 100.0)
    image[2, 2] = 10_000  # interior spike -> mean of its 8 neighbours
    image[2, 3] = 9_000  # a neighbouring spike is not used as a neighbour
    image[0, 0] = 5_000  # border spike -> image mean
    image[4, 4] = -20  # negative values are clipped to 0
    mean_before = np.clip(image, 0, None).mean()
    cleaned = remove_xray_spikes(image, threshold=1500)
    assert cleaned[2, 2] == pytest.approx(100.0) and cleaned[2, 3] == pytest.approx(100.0)
    assert cleaned[0, 0] == pytest.approx(mean_before)
    assert cleaned[4, 4] == 0
    assert cleaned[1, 1] == 100.0  # ordinary pixels untouched
    assert np.array_equal(remove_xray_spikes(np.full((4, 4), 7.0), 1), np.full((4, 4), 7.0))


def test_standardise_tile_and_keep():
    image = np.arange(1024 * 1536, dtype=np.float32).reshape(1024, 1536)
    z = standardize(image)
    assert z.mean() == pytest.approx(0, abs=1e-4) and z.std() == pytest.approx(1, abs=1e-4)
    assert not standardize(np.full((3, 3), 5.0)).any()
    tiles = tile_image(image, image, tile=512)
    assert len(tiles) == 6 and np.array_equal(tiles[1][0], image[:512, 512:1024])
    assert len(tile_image(image[:600, :600], image[:600, :600])) == 1  # remainder dropped
    with pytest.raises(ValueError, match="smaller than one tile"):
        tile_image(image[:100, :100], image[:100, :100])
    mask = np.zeros((512, 512), np.uint8)
    mask.flat[:400] = 1
    assert not keep_tile(mask)
    mask.flat[400] = 1
    assert keep_tile(mask)


@pytest.mark.parametrize("name", list(AU_DATASETS))
def test_every_dataset_name_loads_with_splits_disjoint_by_micrograph(au_root, name):
    splits = {s: AuSegmentation(au_root, name, split=s) for s in ("train", "val", "test")}
    for dataset in splits.values():
        image, mask = dataset[0]
        assert image.shape == mask.shape == (1, 512, 512) and image.dtype == mask.dtype == torch.float32
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
    tiles = [{digest(t) for t in d.images} for d in splits.values()]
    assert not (tiles[0] & tiles[1] or tiles[0] & tiles[2] or tiles[1] & tiles[2])
    sources = [set(d.sources) for d in splits.values()]  # no micrograph in two splits
    assert not (sources[0] & sources[1] or sources[0] & sources[2] or sources[1] & sources[2])
    masks = read_masks(au_root, name)
    kept = sum(keep_tile(m) or AU_DATASETS[name]["source"] == "groschner"
               for full in masks for _, m in tile_image(full, full))
    assert sum(len(d) for d in splits.values()) == kept


def test_spikes_are_removed_and_tiles_standardised(au_root):
    train = AuSegmentation(au_root, "Au20nm", split="train")
    assert np.abs(train.images).max() < 15  # raw synthetic spikes sit ~10 std above the rest


def test_label_fraction_subsets_train(au_root):
    full = AuSegmentation(au_root, "Au10nm", split="train")
    half = AuSegmentation(au_root, "Au10nm", split="train", label_fraction=0.5)
    micrographs = sorted(set(full.sources))
    assert sorted(set(half.sources)) == sorted(set(half.sources) & set(micrographs))
    assert len(set(half.sources)) == max(1, round(0.5 * len(micrographs)))
    assert {digest(t) for t in half.images} <= {digest(t) for t in full.images}
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="label_fraction"):
            AuSegmentation(au_root, "Au10nm", label_fraction=bad)


def write_au5nm(folder, images, labels, labels_key="labels"):
    """An Au5nm pair of Sytwu HDF5 files in folder: `images` and labels under `labels_key`."""
    tag = AU_DATASETS["Au5nm"]["tag"]
    with h5py.File(folder / f"{tag}_Images.h5", "w") as f:
        f.create_dataset("images", data=images)
    with h5py.File(folder / f"{tag}_Labels.h5", "w") as f:
        f.create_dataset(labels_key, data=labels)


def test_bad_inputs_name_the_file(tmp_path, au_root):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        AuSegmentation(tmp_path / "nowhere", "Au5nm")
    with pytest.raises(FileNotFoundError, match="Au_5nm_330kx_423e_Labels.h5"):
        AuSegmentation(tmp_path, "Au5nm")
    tag = AU_DATASETS["Au5nm"]["tag"]
    write_au5nm(tmp_path, np.zeros((1, 512, 512), np.float32), np.zeros((1, 512, 512), np.uint8), labels_key="masks")
    with pytest.raises(ValueError, match=r"Labels\.h5.*'labels'.*keys found: \['masks'\]"):
        AuSegmentation(tmp_path, "Au5nm")
    (tmp_path / f"{tag}_Labels.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="Labels.h5"):
        AuSegmentation(tmp_path, "Au5nm")
    with pytest.raises(ValueError, match="dataset"):
        AuSegmentation(au_root, "Au7nm")


@pytest.mark.parametrize("values", [(0, 1, 2), (0, 3)])
def test_non_binary_labels_and_nan_pixels_name_the_file_and_index(tmp_path, values):
    labels = np.zeros((3, 512, 512), np.uint8)
    labels[:, :100, :100] = 1
    labels[2, 0, :len(values)] = values
    images = np.ones((3, 512, 512), np.float32)
    write_au5nm(tmp_path, images, labels)
    with pytest.raises(ValueError, match=rf"Labels\.h5: label 2 holds the values \[{', '.join(map(str, sorted(set(values) | {0, 1})))}\]"):
        AuSegmentation(tmp_path, "Au5nm")
    labels[2, 0, :len(values)] = 0
    images[1, 5, 5] = np.nan
    write_au5nm(tmp_path, images, labels)
    with pytest.raises(ValueError, match=r"Images\.h5: image 1 has 1 NaN or Inf"):
        for split in ("train", "val", "test"):
            AuSegmentation(tmp_path, "Au5nm", split=split)


def test_an_image_smaller_than_a_tile_names_the_file_and_index(tmp_path):
    write_au5nm(tmp_path, np.ones((3, 300, 300), np.float32), np.ones((3, 300, 300), np.uint8))
    with pytest.raises(ValueError, match=r"Images\.h5, image \d: image \(300, 300\) is smaller than one tile of 512"):
        AuSegmentation(tmp_path, "Au5nm", split="test")
