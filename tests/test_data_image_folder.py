"""ImageFolder / CEM500K on the real example patches: splits, manifests, edge patches, tiles, bad files."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from emlib.data import CEM500K, ImageFolder
from emlib.data.image_folder import eval_split_size
from emlib.data.images import pad_to_at_least, page_count, read_raw

REAL = Path(__file__).resolve().parents[1].parent / "shared/data/real"
EXAMPLES = REAL / "cem500k_examples"
needs_real = pytest.mark.skipif(not EXAMPLES.is_dir(), reason=f"real samples not found at {EXAMPLES}")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private HOME, so that manifests land in tmp, not ~/.cache."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
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


def test_writable_folder_gets_no_manifest_and_nested_files_are_found(tmp_path, home):
    folder = make_folder(tmp_path, 30)
    before = sorted(folder.rglob("*"))
    dataset = CEM500K(folder, image_size=16)
    assert sorted(folder.rglob("*")) == before  # nothing written into the data folder
    assert dataset.manifest_path.is_relative_to(home)
    with pytest.raises(ValueError, match="inside the data folder"):
        CEM500K(folder, image_size=16, manifest_path=folder / "m.json")
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
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no image files \(.tif, .tiff\) found under .*empty"):
        CEM500K(tmp_path / "empty", manifest_path=tmp_path / "e.json")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    (tmp_path / "notes" / "b.csv").write_text("x")
    with pytest.raises(ValueError, match=r"no image files .* found under .*notes"):
        ImageFolder(tmp_path / "notes", manifest_path=tmp_path / "n.json")
    folder = make_folder(tmp_path, 2)
    with pytest.raises(ValueError, match="at least 3"):
        CEM500K(folder, manifest_path=tmp_path / "m.json")
    shutil.rmtree(folder)


def test_folder_change_after_the_split_is_refused(tmp_path, home):
    folder = make_folder(tmp_path, 12)
    CEM500K(folder, image_size=16, manifest_path=tmp_path / "m.json")
    (folder / "p0.tif").unlink()
    with pytest.raises(ValueError, match="has changed since its split"):
        CEM500K(folder, image_size=16, manifest_path=tmp_path / "m.json")


def test_tiles_per_image_gives_one_item_per_tile(tmp_path, home):
    folder = tmp_path / "sem"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        tifffile.imwrite(folder / f"tile{i}.tif", rng.integers(0, 255, (100, 130), np.uint8))
    manifest = tmp_path / "m.json"
    plain = ImageFolder(folder, "train", image_size=32, manifest_path=manifest)
    tiled = ImageFolder(folder, "train", image_size=32, manifest_path=manifest, tiles_per_image=True)
    assert len(plain) == 2 and len(tiled) == 2 * 3 * 4  # 100 // 32 = 3 rows, 130 // 32 = 4 columns
    assert tiled.sources == [f for f in plain.files for _ in range(12)]
    val = ImageFolder(folder, "val", image_size=32, manifest_path=manifest, tiles_per_image=True)
    pixels = tifffile.imread(folder / val.files[0]).astype(np.float32) / 255
    assert torch.equal(val[5][0], torch.from_numpy(pixels[32:64, 32:64]))  # tile (1, 1): row 1, column 1


def test_image_folder_reads_every_format_the_same(tmp_path, home):
    """uint8 TIFF, 8-bit PNG, RGBA PNG with equal channels and BMP give the same pixels."""
    from PIL import Image

    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 255, (40, 40), np.uint8)
    folder = tmp_path / "mixed"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", pixels)
    Image.fromarray(pixels).save(folder / "b.png")
    Image.fromarray(np.stack([pixels] * 3 + [np.full_like(pixels, 255)], -1), "RGBA").save(folder / "c.png")
    Image.fromarray(pixels).save(folder / "d.bmp")
    items = {}
    for split in ("train", "val", "test"):
        d = ImageFolder(folder, split, image_size=40, manifest_path=tmp_path / "m.json")
        items.update({f: d[i] for i, f in enumerate(d.files)})
    assert sorted(items) == ["a.tif", "b.png", "c.png", "d.bmp"]
    for image in items.values():
        assert torch.equal(image[0], torch.from_numpy(pixels.astype(np.float32) / 255))


REAL_CELLULAR = REAL / "cellular_em"


@pytest.mark.skipif(not REAL_CELLULAR.is_dir(), reason="real cellular EM not found")
def test_real_cellular_em_loads_whole_root_without_writing(tmp_path):
    before = {p: p.stat().st_mtime_ns for p in REAL_CELLULAR.rglob("*")}
    splits = {s: ImageFolder(REAL_CELLULAR, s, image_size=64, manifest_path=tmp_path / "m.json") for s in ("train", "val", "test")}
    assert sum(len(d) for d in splits.values()) == 1878  # all four sources, not only the cem500k/ sub-folder
    assert {f.split("/")[0] for f in splits["train"].files} == {"mussel", "cremi", "isbi", "cem500k"}
    sources = [set(d.sources) for d in splits.values()]
    assert not (sources[0] & sources[1] or sources[0] & sources[2] or sources[1] & sources[2])
    image = splits["train"][0]
    assert image.shape == (1, 64, 64) and 0 <= image.min() and image.max() <= 1
    assert {p: p.stat().st_mtime_ns for p in REAL_CELLULAR.rglob("*")} == before


@pytest.mark.skipif(not REAL_CELLULAR.is_dir(), reason="real cellular EM not found")
def test_real_cellular_em_splits_by_source_image(tmp_path):
    """No validation or test patch comes from a source image that gave a training patch (index.csv)."""
    import csv

    with open(REAL_CELLULAR / "index.csv", newline="") as f:
        source = {row["patch"]: row["source_file"] for row in csv.DictReader(f)}
    splits = {s: ImageFolder(REAL_CELLULAR, s, image_size=64, manifest_path=tmp_path / "m.json") for s in ("train", "val", "test")}
    held_out = {source[f] for s in ("val", "test") for f in splits[s].files}
    assert held_out and not held_out & {source[f] for f in splits["train"].files}
    assert not {source[f] for f in splits["val"].files} & {source[f] for f in splits["test"].files}
    assert 187 <= len(splits["val"]) < 187 + 70 and 187 <= len(splits["test"]) < 187 + 70  # 10 %, by whole sources
    assert json.loads((tmp_path / "m.json").read_text())["split_by"] == "index.csv:source_file"


def test_without_an_index_sources_are_sub_folders_or_files(tmp_path):
    from emlib.data.image_folder import MIN_FOLDER_GROUPS, make_manifest

    nested = [f"vol{v:02d}/p{i}.tif" for v in range(MIN_FOLDER_GROUPS) for i in range(5)]
    manifest = make_manifest(nested, seed=3, root=tmp_path)
    folders = {s: {f.split("/")[0] for f in manifest[s]} for s in ("train", "val", "test")}
    assert manifest["split_by"] == "sub-folder" and not folders["train"] & (folders["val"] | folders["test"])
    few = [f"a/p{i}.tif" for i in range(20)] + [f"b/p{i}.tif" for i in range(20)]
    manifest = make_manifest(few, seed=3, root=tmp_path)
    assert manifest["split_by"] == "file" and (len(manifest["val"]), len(manifest["test"])) == (4, 4)


def test_stacks_are_read_page_by_page_and_split_whole(home, tmp_path):
    folder = tmp_path / "volume_em"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        tifffile.imwrite(folder / f"single{i}.tif", rng.integers(0, 255, (24, 24), np.uint8))
    for i in range(3):  # FIB-SEM stacks: every page its own 2-D image, with its own content
        pages = np.stack([np.full((24, 24), 10 * i + p, np.uint16) + np.eye(24, dtype=np.uint16) * 500 for p in range(5)])
        tifffile.imwrite(folder / f"stack{i}.tif", pages)
    splits = {s: ImageFolder(folder, split=s, image_size=16) for s in ("train", "val", "test")}
    assert sum(len(d.files) for d in splits.values()) == 11
    assert sum(len(d) for d in splits.values()) == 8 + 3 * 5  # one item per page
    sources = [set(d.sources) for d in splits.values()]
    assert not (sources[0] & sources[1] or sources[0] & sources[2] or sources[1] & sources[2])  # a stack stays whole
    train = splits["train"]
    stacks = sorted({f for f, page, _ in train.items if page is not None})
    assert stacks and all(sorted(p for f, p, _ in train.items if f == s) == list(range(5)) for s in stacks)
    assert all(train[i].shape == (1, 16, 16) for i in range(len(train)))
    assert page_count(folder / "stack1.tif") == 5 and page_count(folder / "single1.tif") == 1
    assert int(read_raw(folder / "stack1.tif", 3)[0, 1]) == 13  # page 3 of stack 1
    with pytest.raises(ValueError, match="a stack: read it page by page"):
        read_raw(folder / "stack1.tif")
