"""SegmentationFolder: layouts, pairing, mask rules, splits by source image, bad inputs, the real sets."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from emlib.data import NANOPARTICLE_DATASETS, SegmentationFolder, catalog, dataset_folder
from emlib.data.segmentation_folder import pair_files, to_binary_mask

REAL = Path(__file__).resolve().parents[1].parent / "shared/data/real/nanoparticles"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real nanoparticle sets not found at {REAL}")


def write_pair(folder, stem, mask_stem=None, size=(32, 40), mask_values=(0, 255), dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, size, np.uint8)).save(folder / "images" / f"{stem}.png")
    mask = rng.choice(np.array(mask_values, dtype=dtype), size=size)
    Image.fromarray(mask).save(folder / "masks" / f"{mask_stem or stem}.png")


def flat_folder(tmp_path, n=10, **kwargs):
    folder = tmp_path / "seg"
    for i in range(n):
        write_pair(folder, f"img{i:02d}", seed=i, **kwargs)
    return folder


def test_pairing_by_stem_by_prefix_and_by_index():
    assert pair_files(["a.png", "b.png"], ["b.tif", "a.tif"]) == [("a.png", "a.tif"), ("b.png", "b.tif")]
    assert pair_files(["image_2.png", "image_10.png"], ["label_10.png", "label_2.png"]) == [
        ("image_10.png", "label_10.png"), ("image_2.png", "label_2.png")]
    assert pair_files(["x1.png", "x2.png"], ["m9.png", "m8.png"], by="index") == [("x1.png", "m8.png"), ("x2.png", "m9.png")]
    with pytest.raises(ValueError, match=r"unpaired files: images without a mask \['c'\], masks without an image \['d'\]"):
        pair_files(["a.png", "c.png"], ["a.png", "d.png"], where="here")
    with pytest.raises(ValueError, match="equal counts"):
        pair_files(["a.png"], ["a.png", "b.png"], by="index")


def test_mask_rules():
    assert to_binary_mask(np.array([[0, 255]], np.uint8), "binary", "m").tolist() == [[0, 1]]
    assert to_binary_mask(np.array([[0, 1]], np.uint8), "auto", "m").tolist() == [[0, 1]]
    assert to_binary_mask(np.array([[0, 7, 300]], np.uint16), "auto", "m").tolist() == [[0, 1, 1]]  # instances
    with pytest.raises(ValueError, match=r"mask m\.png is declared binary but holds the values \[0, 3\]"):
        to_binary_mask(np.array([[0, 3]], np.uint8), "binary", "m.png")


def test_flat_folder_splits_60_20_20_by_source_image(tmp_path):
    folder = flat_folder(tmp_path, n=10)
    splits = {s: SegmentationFolder(folder, s) for s in ("train", "val", "test")}
    assert [len(d) for d in splits.values()] == [6, 2, 2]
    sources = [set(d.sources) for d in splits.values()]
    assert set.union(*sources) == {f"images/img{i:02d}.png" for i in range(10)}
    assert not (sources[0] & sources[1] or sources[0] & sources[2] or sources[1] & sources[2])
    image, mask = splits["test"][0]
    assert image.shape == mask.shape == (1, 32, 40)  # whole images
    assert abs(float(image.mean())) < 1e-5 and float(image.std()) == pytest.approx(1, abs=1e-3)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}


def test_label_fraction_takes_whole_train_images(tmp_path):
    folder = flat_folder(tmp_path, n=20)
    full = SegmentationFolder(folder, "train")
    half = SegmentationFolder(folder, "train", label_fraction=0.5)
    assert len(half) == len(full) // 2 and set(half.sources) < set(full.sources)
    assert set(SegmentationFolder(folder, "val", label_fraction=0.5).sources) == set(SegmentationFolder(folder, "val").sources)


def test_bad_folders_and_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        SegmentationFolder(tmp_path / "nowhere")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no mask folder"):
        SegmentationFolder(tmp_path / "empty")
    (tmp_path / "empty" / "masks").mkdir()
    with pytest.raises(ValueError, match=r"no image files .* under .*empty/images"):
        SegmentationFolder(tmp_path / "empty")

    folder = flat_folder(tmp_path, n=6)
    write_pair(folder, "odd", mask_values=(0, 3))
    dataset = next(d for d in (SegmentationFolder(folder, s, masks="binary") for s in ("train", "val", "test"))
                   if "images/odd.png" in d.sources)
    with pytest.raises(ValueError, match=r"odd\.png is declared binary but holds the values \[0, 3\]"):
        dataset[dataset.sources.index("images/odd.png")]

    Image.fromarray(np.zeros((10, 10), np.uint8)).save(folder / "masks" / "odd.png")  # wrong size
    with pytest.raises(ValueError, match=r"odd\.png is \(32, 40\) but its mask .*odd\.png is \(10, 10\)"):
        dataset[dataset.sources.index("images/odd.png")]

    Image.fromarray(np.zeros((10, 10), np.uint8)).save(folder / "images" / "lonely.png")
    with pytest.raises(ValueError, match=r"unpaired files: images without a mask \['lonely'\]"):
        SegmentationFolder(folder)


def test_split_lists_and_split_folders(tmp_path):
    folder = flat_folder(tmp_path, n=8)
    (folder / "train.csv").write_text("\n".join(f"img{i:02d}" for i in range(6)) + "\n")
    (folder / "test.csv").write_text("img06\nimg07\n")
    test = SegmentationFolder(folder, "test")
    assert test.sources == ["images/img06.png", "images/img07.png"]
    train, val = SegmentationFolder(folder, "train"), SegmentationFolder(folder, "val")
    assert len(train) == 5 and len(val) == 1 and not set(train.sources) & set(val.sources)
    (folder / "test.csv").write_text("img06\nnope\n")
    with pytest.raises(ValueError, match=r"test\.csv lists 1 id\(s\) with no image/mask pair .*\['nope'\]"):
        SegmentationFolder(folder, "test")

    split_root = tmp_path / "published"
    for split, n in (("train", 5), ("test", 3)):
        for i in range(n):
            write_pair(split_root / split, f"image_{split}{i}", f"label_{split}{i}", seed=i)
    assert len(SegmentationFolder(split_root, "test")) == 3
    assert len(SegmentationFolder(split_root, "train")) + len(SegmentationFolder(split_root, "val")) == 5


def test_data_folder_is_never_written(tmp_path):
    folder = flat_folder(tmp_path, n=10)
    folder.chmod(0o555)
    before = sorted(folder.rglob("*"))
    try:
        for split in ("train", "val", "test"):
            dataset = SegmentationFolder(folder, split)
            dataset[0]
    finally:
        folder.chmod(0o755)
    assert sorted(folder.rglob("*")) == before


@needs_real
@pytest.mark.parametrize("name, counts", [("msa_segtrack", (16, 4, 20)), ("emps", (293, 73, 99))])
def test_real_nanoparticle_sets(name, counts):
    folder, source = dataset_folder(name, REAL, verbose=False)
    assert folder == REAL / name and source == "real"
    splits = {s: SegmentationFolder(folder, s, **NANOPARTICLE_DATASETS[name]) for s in ("train", "val", "test")}
    assert tuple(len(d) for d in splits.values()) == counts
    sources = [set(d.sources) for d in splits.values()]
    assert not (sources[0] & sources[1] or sources[0] & sources[2] or sources[1] & sources[2])
    if name == "emps":  # the published split
        test_ids = (REAL / "emps" / "test.csv").read_text().split()
        assert {Path(s).stem for s in sources[2]} == set(test_ids)
    image, mask = splits["test"][0]
    assert image.shape == mask.shape and image.shape[-1] >= 512
    assert 0 < float(mask.mean()) < 1 and set(mask.unique().tolist()) == {0.0, 1.0}


@pytest.mark.skipif(not (REAL / "emps").is_dir(), reason="real EMPS not found")
def test_emps_validation_is_carved_by_source_figure():
    """sources.csv names the published figure each EMPS image was cropped from: validation shares none with train."""
    import csv

    root = REAL / "emps"
    with open(root / "sources.csv", newline="") as f:
        figure = {row["filename"]: (row["doi"], row["figure"]) for row in csv.DictReader(f)}
    splits = {s: catalog.segmentation_dataset("emps", root, s, 0) for s in ("train", "val", "test")}
    figures = {s: {figure[Path(x).name] for x in d.sources} for s, d in splits.items()}
    assert not figures["train"] & figures["val"] and not figures["val"] & figures["test"]
    assert 0.15 * 366 <= len(splits["val"]) <= 0.3 * 366 and len(splits["train"]) + len(splits["val"]) == 366


def test_sources_csv_keeps_a_source_in_one_split(tmp_path):
    from emlib.data.segmentation_folder import seeded_split

    items = [f"img{i}" for i in range(30)]
    train, val = seeded_split(items, (0.8, 0.2), seed=1, source_of=lambda item: int(item[3:]) // 5)  # 6 sources of 5
    assert len(val) == 10 and {int(i[3:]) // 5 for i in train}.isdisjoint({int(i[3:]) // 5 for i in val})


@pytest.mark.parametrize("images_name, masks_name", [("image", "mask"), ("images", "labels"), ("images", "ground_truth"),
                                                     ("images", "gt"), ("image", "masks")])
def test_folders_as_users_name_them(tmp_path, images_name, masks_name):
    folder = flat_folder(tmp_path, n=10)
    (folder / "images").rename(folder / images_name)
    (folder / "masks").rename(folder / masks_name)
    splits = [SegmentationFolder(folder, split=s) for s in ("train", "val", "test")]
    assert [len(d) for d in splits] == [6, 2, 2]
    assert splits[0].pairs[0][1].parent.name == masks_name


def test_two_folders_named_outright(tmp_path):
    folder = flat_folder(tmp_path, n=10)
    images, masks = tmp_path / "my raw frames", tmp_path / "annotations"
    (folder / "images").rename(images)
    (folder / "masks").rename(masks)
    splits = {s: SegmentationFolder(images, masks, split=s) for s in ("train", "val", "test")}
    assert [len(d) for d in splits.values()] == [6, 2, 2]
    assert set.union(*(set(d.sources) for d in splits.values())) == {f"img{i:02d}.png" for i in range(10)}
    image, mask = splits["test"][0]
    assert image.shape == mask.shape == (1, 32, 40)
    with pytest.raises(FileNotFoundError, match="mask folder not found: .*nowhere"):
        SegmentationFolder(images, tmp_path / "nowhere")


def test_finetune_cli_takes_images_and_masks_folders(tmp_path):
    from emlib import cli, finetune
    folder = flat_folder(tmp_path, n=10)
    parser = cli.build_parser()
    args = parser.parse_args(["finetune", "--toy", "--dataset", "folder", "--images", str(folder / "images"),
                              "--masks", str(folder / "masks")])
    config = finetune.config_from_args(args)
    assert (config.images_dir, config.masks_dir) == (str(folder / "images"), str(folder / "masks"))
    datasets = finetune.build_datasets(config, finetune.resolve_data_root(config)[0])
    assert [len(datasets[s].dataset if s == "train" else datasets[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    with pytest.raises(ValueError, match="images_dir and masks_dir .* go together"):
        finetune.FinetuneConfig.toy(dataset="folder", images_dir=str(folder / "images"))


def test_downsample_reads_images_and_masks_at_a_fraction_of_their_size(tmp_path):
    folder = tmp_path / "seg"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    image = np.zeros((40, 60), np.uint8)
    image[:, 30:] = 200  # a bright right half
    mask = np.zeros((40, 60), np.uint8)
    mask[:21, :] = 255  # 21 of 40 rows: each 2 x 2 block of rows 0-19 is all particle, rows 20-21 half
    for stem in ("a", "b", "c", "d", "e"):
        Image.fromarray(image).save(folder / "images" / f"{stem}.png")
        Image.fromarray(mask).save(folder / "masks" / f"{stem}.png")
    full, half = (SegmentationFolder(folder, split="test", downsample=n)[0] for n in (1, 2))
    assert full[0].shape == (1, 40, 60) and half[0].shape == half[1].shape == (1, 20, 30)
    assert half[1][0, :10].eq(1).all() and half[1][0, 11:].eq(0).all()  # a block half particle counts as particle
    assert half[1][0, 10].eq(1).all()
    assert abs(float(half[0].mean())) < 1e-5 and abs(float(half[0].std(unbiased=False)) - 1) < 1e-4  # standardised after
    assert half[0][0, :, :15].unique().numel() == 1 and (half[0][0, :, 15:] > half[0][0, :, :15]).all()
    with pytest.raises(ValueError, match="downsample must be a whole number >= 1"):
        SegmentationFolder(folder, split="test", downsample=0)
    with pytest.raises(ValueError, match="Au datasets are read as the paper's 512 px tiles"):
        catalog.segmentation_dataset("Au5nm", folder, "test", downsample=2)


def test_items_read_once_are_served_from_memory_and_never_shared(tmp_path):
    folder = flat_folder(tmp_path)
    dataset, tiny = SegmentationFolder(folder, split="train"), SegmentationFolder(folder, split="train")
    image, mask = dataset[0]
    (folder / "images" / Path(dataset.pairs[0][0]).name).unlink()  # read again from disk, it would fail
    image[:] = 99  # a caller writing into its item changes nothing the dataset holds
    again, mask_again = dataset[0]
    assert not again.eq(99).any() and torch.equal(mask, mask_again)
    tiny.cache.budget = 0  # a dataset larger than the budget reads from disk each time
    tiny[1]
    assert tiny.cache.items == {}
