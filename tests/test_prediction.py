"""`python -m emlib predict`: a finished run (or package) applied to a folder of images of any size, stacks too."""
import json

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from emlib import cli, models, prediction
from emlib.data.images import read_unit, standardize
from emlib.finetune import FinetuneConfig
from emlib.pretrain import PretrainConfig


@pytest.fixture
def segmentation_run(tmp_path):
    """A finished-looking fine-tuning run folder: its config and a (random) best model."""
    folder = tmp_path / "seg_run"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(FinetuneConfig.toy().to_dict()))
    torch.manual_seed(0)
    models.save_weights(models.create("unet_2_44", 1, 1), folder / "best_model.safetensors")
    return folder


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "my images"
    (folder / "day1").mkdir(parents=True)
    rng = np.random.default_rng(0)
    tifffile.imwrite(folder / "day1" / "a.tif", rng.integers(0, 4096, (70, 90)).astype(np.uint16))  # 12-bit
    tifffile.imwrite(folder / "stack.tif", rng.integers(0, 255, (3, 40, 52)).astype(np.uint8), photometric="minisblack")
    Image.fromarray(rng.integers(0, 255, (33, 47)).astype(np.uint8)).save(folder / "b.png")
    return folder


def test_segments_a_folder_of_any_size_and_stacks_exactly(segmentation_run, images, tmp_path):
    out = tmp_path / "out"
    status = cli.main(["predict", str(segmentation_run), str(images), "--out", str(out), "--probabilities", "--qc", "2",
                       "--device", "cpu", "--amp", "off"])
    assert status == 0
    network, _ = prediction.runs.load_finetuned(segmentation_run)
    image = read_unit(images / "day1" / "a.tif")
    with torch.no_grad():
        whole = network(torch.from_numpy(standardize(image))[None, None])[0, 0].numpy()
    mask = tifffile.imread(out / "day1" / "a_mask.tif")
    assert mask.shape == image.shape and mask.dtype == np.uint8
    assert np.array_equal(mask > 0, whole > 0) and set(np.unique(mask)) <= {0, 255}
    probability = tifffile.imread(out / "day1" / "a_probability.tif")
    assert np.allclose(probability, 1 / (1 + np.exp(-whole)), atol=1e-5)
    assert tifffile.imread(out / "stack_mask.tif").shape == (3, 40, 52)  # a stack stays a stack
    assert tifffile.imread(out / "b_mask.tif").shape == (33, 47)
    assert len(list((out / "qc").rglob("*.png"))) == 2


def test_a_model_trained_downsampled_sees_images_so_and_answers_at_their_size(segmentation_run, images, tmp_path):
    config = FinetuneConfig.toy(dataset="emps", downsample=2).to_dict()
    (segmentation_run / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    assert cli.main(["predict", str(segmentation_run), str(images / "day1"), "--out", str(out), "--probabilities",
                     "--device", "cpu", "--amp", "off"]) == 0
    network, _ = prediction.runs.load_finetuned(segmentation_run)
    image = read_unit(images / "day1" / "a.tif")  # 70 x 90
    small = torch.nn.functional.interpolate(torch.from_numpy(image)[None, None], size=(35, 45), mode="area")
    with torch.no_grad():
        logits = network((small - small.mean()) / small.std(unbiased=False))
    expected = torch.nn.functional.interpolate(logits, size=image.shape, mode="bilinear")[0, 0].numpy()
    probability = tifffile.imread(out / "a_probability.tif")
    assert probability.shape == image.shape
    assert np.allclose(probability, 1 / (1 + np.exp(-expected)), atol=1e-4)


def test_restores_with_a_pretraining_run(tmp_path, images):
    folder = tmp_path / "pre_run"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(PretrainConfig.toy().to_dict()))
    models.save_weights(models.create("unet_2_44", 1, 1), folder / "generator.safetensors")
    written = prediction.run(folder, [images / "b.png"], tmp_path / "out", device="cpu")
    restored = tifffile.imread(tmp_path / "out" / "b_restored.tif")
    assert restored.shape == (33, 47) and restored.dtype == np.float32
    assert len(written) == 2  # the TIFF and its QC image


def test_bad_model_or_images_exit_2(tmp_path, segmentation_run, capsys):
    assert cli.main(["predict", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "neither a finished run folder" in capsys.readouterr().err
    assert cli.main(["predict", str(segmentation_run), str(tmp_path / "none.tif"), "--out", str(tmp_path / "o")]) == 2
    assert "image or folder not found" in capsys.readouterr().err
