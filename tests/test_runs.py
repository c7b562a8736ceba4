"""emlib.runs, the one reader of a run folder: what it reads, the paths it resolves, the errors it gives, and the
BioImage.IO export of a generator pretrained on a folder of PNGs (its package sample from the run's own test split)."""
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from emlib import bioimageio, inits, runs
from emlib.pretrain import PretrainConfig, run as pretrain

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "results" / "real_small"
COMMITTED = sorted(p.parent for p in STUDY.glob("*/summary.json"))

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")


@pytest.fixture(scope="module")
def png_run(tmp_path_factory):
    """A toy generator pretrained on a mixed folder: 30 PNGs and 6 TIFFs of 40 px."""
    images = tmp_path_factory.mktemp("pngs")
    rng = np.random.default_rng(0)
    for i in range(30):
        Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(images / f"png{i:02d}.png")
    for i in range(6):
        tifffile.imwrite(images / f"tif{i}.tif", rng.integers(0, 256, (40, 40), dtype=np.uint8))
    out = tmp_path_factory.mktemp("pretrain") / "run"
    pretrain(PretrainConfig.toy(data_root=str(images), image_size=32, max_steps=1, output_dir=str(out)))
    return out


def test_a_pretraining_run_reads_as_one_object(png_run):
    run = runs.read(png_run / "generator.safetensors")  # a file in the folder names the folder
    assert (run.folder, run.kind, run.task, run.init, run.source) == (png_run, "pretrain", "pretraining", "random", "real")
    assert run.config.output_dir == str(png_run) and run.card["model"] == run.config.model == run.network.name
    assert run.weights == png_run / "generator.safetensors" and not run.network.training
    manifest = json.loads((png_run / "manifest.json").read_text())
    assert run.images("test").files == manifest["test"] and run.images("val").files == manifest["val"]


def test_a_png_pretrained_generator_exports_with_a_sample_of_its_own_test_split(png_run, tmp_path):
    package = bioimageio.export(png_run, tmp_path / "png.zip")
    with zipfile.ZipFile(package) as z:
        stored = np.load(io.BytesIO(z.read("test_input.npy")))
        readme = z.read("README.md").decode()
    run = runs.read(png_run)
    test_split = run.images("test")
    index = int(readme.split("The package's test input is image ")[1].split(" ")[0])
    assert "of the test split" in readme
    # the stored input is that test image (of the run's manifest.json), corrupted as in pretraining, on 0..255
    inputs, _ = bioimageio.held_out_inputs(run)
    image = list(inputs)[index]
    expected = bioimageio.package_input(run, bioimageio.crop_to_multiple(image, run.network.size_multiple))
    np.testing.assert_allclose(stored[0], expected.numpy(), atol=1e-4)
    train = set(run.images("train").files)
    assert test_split.files[index] not in train and any(f.endswith(".png") for f in test_split.files)


def test_unfinished_and_foreign_folders_fail_naming_the_folder(png_run, tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        runs.read(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"lr": 1}))
    with pytest.raises(ValueError, match=f"{tmp_path}/config.json is neither"):
        runs.read(tmp_path)
    (tmp_path / "config.json").write_text((png_run / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="unfinished run"):
        runs.read(tmp_path)
    assert runs.read(tmp_path, finished=False).summary is None
    (tmp_path / "summary.json").write_text(json.dumps({"status": "failed"}))
    with pytest.raises(ValueError, match="status 'failed'"):
        runs.read(tmp_path)


def test_relative_paths_are_found_from_the_folders_above_the_run(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "data" / "cells").mkdir(parents=True)
    folder = repo / "results" / "pretrain-x"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(PretrainConfig.toy(data_root="data/cells").to_dict()))
    monkeypatch.chdir(tmp_path)
    run = runs.read(folder, finished=False)
    assert run.config.data_root == str(repo / "data" / "cells") and run.fields["data_root"] == "data/cells"
    assert runs.resolve_path("data/nowhere", folder) == "data/nowhere"  # found nowhere: as written


@pytest.mark.skipif(not COMMITTED, reason="no finished runs committed under results/real_small")
@pytest.mark.parametrize("folder", COMMITTED, ids=lambda p: p.name)
def test_committed_runs_load_through_the_reader(folder):
    run = runs.read(folder)
    assert run.finished and run.config.model == run.network.name
    if run.kind == "finetune":
        assert run.rows and {row["run_id"] for row in run.rows} == {folder.name}
        assert run.init == inits.RANDOM or run.card is not None  # the study's generators are committed too
    else:
        assert run.card["source"] == "real"


@pytest.mark.skipif(not COMMITTED, reason="no finished runs committed under results/real_small")
@pytest.mark.parametrize("kind", ["pretrain", "finetune"])
def test_a_committed_run_of_each_kind_exports(kind, tmp_path):
    run = next(r for r in map(runs.read, COMMITTED) if r.kind == kind)
    data_root = run.config.data_root
    if data_root and not Path(data_root).is_dir():
        pytest.skip(f"the study's data {data_root} is not on this machine")
    package = bioimageio.export(run.folder, tmp_path / f"{kind}.zip")
    with zipfile.ZipFile(package) as z:
        assert "rdf.yaml" in z.namelist() and "of the test split" in z.read("README.md").decode()
    assert torch.isfinite(torch.from_numpy(np.load(io.BytesIO(zipfile.ZipFile(package).read("test_output.npy"))).astype(np.float32))).all()
