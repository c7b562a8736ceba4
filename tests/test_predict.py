"""Tiled prediction: equals whole-image inference in the interior, keeps the size."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from emlib.tiling import blend_window, predict

REAL = Path(__file__).resolve().parents[1].parent / "shared/data/real"


def pooled_net(seed=0):
    """A small fully convolutional net with one 2x pooling level (receptive-field radius 5)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Upsample(scale_factor=2),
        nn.Conv2d(4, 1, 3, padding=1),
    )


def test_blend_windows_of_neighbours_sum_to_one():
    tile, overlap = 32, 16
    left, right = blend_window(tile, overlap, False, True), blend_window(tile, overlap, True, False)
    shared = left[tile - overlap:] + right[:overlap]
    assert torch.allclose(shared, torch.ones(overlap))
    assert (left[-overlap // 4:] == 0).all()  # the cut edge never contributes


def test_tiled_equals_whole_image_in_the_interior():
    model = pooled_net()
    image = torch.randn(72, 88, generator=torch.Generator().manual_seed(0))
    tiled = predict(model, image, tile=32, overlap=24, standardize=None, batch_size=3)
    with torch.no_grad():
        whole = model.eval()(image[None, None])[0, 0].numpy()
    margin = 8  # near the bottom/right border the tiles see reflect padding instead of zeros
    np.testing.assert_allclose(tiled[margin:-margin, margin:-margin], whole[margin:-margin, margin:-margin], atol=1e-5)
    assert not np.allclose(tiled, 0)


def test_tiled_unet_equals_whole_image_in_the_interior():
    from emlib.models import create

    torch.manual_seed(0)
    model = create("unet_2_44")
    image = torch.randn(160, 192, generator=torch.Generator().manual_seed(1))
    tiled = predict(model, image, tile=128, overlap=96, standardize=None)  # RF radius 22 <= 96 / 4; stride 32
    with torch.no_grad():
        whole = model.eval()(image[None, None])[0, 0].numpy()
    np.testing.assert_allclose(tiled[24:-24, 24:-24], whole[24:-24, 24:-24], atol=1e-4)


@pytest.mark.parametrize("shape", [(37, 53), (5, 70), (100, 33)])
def test_output_keeps_odd_input_sizes(shape):
    image = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    out = predict(pooled_net(), image, tile=16, overlap=4, standardize="unit")
    assert out.shape == shape and out.dtype == np.float32 and np.isfinite(out).all()


def test_standardisation_matches_the_training_data():
    rng = np.random.default_rng(0)
    image = rng.normal(50, 10, size=(40, 40)).astype(np.float32)
    standardised = predict(nn.Identity(), image, tile=16, overlap=8, standardize="per_image")
    assert standardised.mean() == pytest.approx(0, abs=1e-4) and standardised.std() == pytest.approx(1, abs=1e-2)
    as_uint8 = np.array([[0, 255], [51, 102]], dtype=np.uint8)
    np.testing.assert_allclose(predict(nn.Identity(), as_uint8, tile=8, overlap=0, standardize="unit"),
                               [[0, 1], [0.2, 0.4]], atol=1e-6)


def test_model_mode_is_restored_and_multichannel_output_kept():
    torch.manual_seed(0)
    model = nn.Conv2d(1, 3, 3, padding=1).train()
    out = predict(model, torch.rand(20, 24), tile=16, overlap=8)
    assert model.training and out.shape == (3, 20, 24)


@pytest.mark.parametrize("kwargs, match", [
    (dict(tile=16, overlap=16), "overlap"),
    (dict(standardize="zscore"), "standardize"),
    (dict(batch_size=0), "batch_size"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        predict(nn.Identity(), np.zeros((8, 8), np.float32), **kwargs)


def test_rejects_non_2d_images():
    with pytest.raises(ValueError, match="2-D"):
        predict(nn.Identity(), np.zeros((2, 8, 8), np.float32))


def test_real_experimental_image_keeps_its_size():
    if not REAL.exists():
        pytest.skip(f"real sample data folder {REAL} is absent")
    from PIL import Image

    path = sorted((REAL / "experimental_stem").glob("*.png"))[0]
    image = np.asarray(Image.open(path).convert("L"))
    out = predict(pooled_net(), image, tile=128, overlap=32, standardize="unit", batch_size=16)
    assert out.shape == image.shape and np.isfinite(out).all()


def test_emlib_predict_is_callable_more_than_once():
    import emlib

    first = emlib.predict(nn.Identity(), np.ones((6, 6), np.float32), standardize=None)
    second = emlib.predict(nn.Identity(), np.ones((6, 6), np.float32), standardize=None)  # a second call still reaches the function
    assert np.array_equal(first, second) and first.shape == (6, 6)
