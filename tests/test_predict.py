"""Tiled prediction: equals one whole-image pass for every registry model, keeps the size."""
import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from emlib import models
from emlib.intensity import CenteredIntensities
from emlib.tiling import blend_window, predict, reach, tile_plan, tile_starts

REAL = Path(__file__).resolve().parents[1].parent / "shared/data/real"


def pooled_net(seed=0):
    """A small fully convolutional net with one 2x pooling level (receptive-field radius 5)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Upsample(scale_factor=2),
        nn.Conv2d(4, 1, 3, padding=1),
    )


def default_plan(name):
    """(tile, overlap) that `predict` picks for registry model `name`."""
    plan = tile_plan(models.create(name))
    assert plan.exact and plan.tile % plan.multiple == 0 and plan.overlap % plan.multiple == 0
    return plan.tile, plan.overlap


def whole_image(model, image):
    with torch.no_grad():
        return model.eval()(image[None, None])[0].squeeze(0).numpy()


def test_blend_window_discards_the_margin_at_cut_edges_only():
    window = blend_window(40, margin=6, band=8, cut_start=True, cut_end=False)
    assert (window[:6] == 0).all() and (window[6:14] > 0).all() and (window[14:] == 1).all()
    assert torch.equal(blend_window(40, 6, 8, cut_start=False, cut_end=False), torch.ones(40))
    step = blend_window(20, margin=5, band=0, cut_start=True, cut_end=True)
    assert step.tolist() == [0] * 5 + [1] * 10 + [0] * 5
    # two neighbours overlapping by 2 * margin + band: weights sum to 1 there
    left, right = blend_window(40, 6, 8, False, True), blend_window(40, 6, 8, True, False)
    assert torch.allclose(left[40 - 20:] + right[:20], torch.ones(20))


@pytest.mark.parametrize("length, tile, stride", [(100, 32, 24), (96, 32, 32), (20, 32, 8), (33, 32, 16)])
def test_tiles_cover_the_axis_and_end_on_its_border(length, tile, stride):
    starts = tile_starts(length, tile, stride)
    assert starts[0] == 0 and starts[-1] + min(tile, length) == length
    assert all(0 < b - a <= stride for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize("name", models.names()[:9])
def test_every_unet_tiled_equals_one_whole_image_pass(name):
    """Images of at least two default tiles per side, not multiples of the pooling
    stride: the seams, the padding and the borders are all exercised."""
    assert name.startswith("unet_")
    torch.manual_seed(0)
    model = models.create(name)
    tile, overlap = default_plan(name)
    image = torch.randn(tile + overlap // 2 + 37, tile + overlap // 2 + 11, generator=torch.Generator().manual_seed(1))
    tiled = predict(model, image, standardize=None, amp=False)
    np.testing.assert_allclose(tiled, whole_image(model, image), atol=1e-5)


def test_largest_unet_is_exact_on_a_large_image_and_was_not_before():
    """unet_4_424 (RF 424) on 1500 x 1400: 4 tiles of 928 with 464 px overlaps. The old
    default (256 px tiles, 64 px overlap) differs by far more than the tolerance."""
    torch.manual_seed(0)
    model = models.create("unet_4_424")
    image = torch.randn(1500, 1400, generator=torch.Generator().manual_seed(2))
    whole = whole_image(model, image)
    np.testing.assert_allclose(predict(model, image, standardize=None, amp=False), whole, atol=1e-5)
    with pytest.warns(UserWarning, match="reach"):
        old = predict(model, image, tile=256, overlap=64, standardize=None, amp=False)
    assert np.abs(old - whole).max() > 1e-4


def test_hrnet_tiled_equals_one_whole_image_pass():
    """hrnet_w18_small (reach 337 px): 1024 px tiles, the default 704 px overlap, 2 x 2 tiles."""
    torch.manual_seed(0)
    model = models.create("hrnet_w18_small")
    image = torch.randn(1100, 1090, generator=torch.Generator().manual_seed(3))
    tiled = predict(model, image, tile=1024, standardize=None, amp=False)
    whole = whole_image(model, image)
    np.testing.assert_allclose(tiled, whole, atol=1e-5 * max(1.0, np.abs(whole).max()))


def dependency_reach(model, length):
    """The largest distance between an output pixel and an input pixel with a non-zero
    gradient, over every pooling phase (one random input per phase, float64)."""
    multiple = model.size_multiple
    probe = copy.deepcopy(model).double().eval()
    x = torch.randn(multiple, 1, length, multiple, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x.requires_grad_(True)
    rows = length // 2 + torch.arange(multiple)
    probe(x)[torch.arange(multiple), 0, rows, multiple // 2].sum().backward()  # eval mode: samples independent
    worst = 0
    for sample, row in enumerate(rows.tolist()):
        support = (x.grad[sample, 0].abs().sum(1) > 0).nonzero()
        if len(support):  # an output pixel behind a dead ReLU depends on nothing: it says nothing about reach
            worst = max(worst, row - int(support.min()), int(support.max()) - row)
    assert worst > 0, "every probed output pixel was dead; try another seed"
    return worst


@pytest.mark.parametrize("name, length", [("unet_4_424", 640), ("unet_2_44", 128), ("hrnet_w18_small", 768)])
def test_reach_bounds_the_measured_dependency_and_is_tight(name, length):
    torch.manual_seed(0)  # a fixed random network, whatever ran before
    model = models.create(name)
    measured = dependency_reach(model, length)
    assert measured <= reach(name) < measured + 2 * model.size_multiple


def test_reach_of_unets_follows_their_receptive_field():
    """At least half the registry's theoretical RF, plus at most two pooling cells of phase slack."""
    for name in models.names()[:9]:
        rf, multiple = models.receptive_field(name), models.create(name).size_multiple
        assert rf / 2 <= reach(name) <= rf / 2 + 2 * multiple, name


def test_reach_sees_through_parameter_free_wrappers_only():
    unet = models.create("unet_2_44")
    assert reach(CenteredIntensities(unet)) == reach("unet_2_44") == reach(unet)
    assert reach(nn.Sequential(unet, nn.Conv2d(1, 1, 3, padding=1))) is None
    assert reach(pooled_net()) is None


def test_non_registry_model_is_exact_within_overlap_over_4():
    model = pooled_net()  # reach 5 <= 24 / 4
    image = torch.randn(72, 88, generator=torch.Generator().manual_seed(0))
    tiled = predict(model, image, tile=32, overlap=24, standardize=None, batch_size=3, amp=False)
    np.testing.assert_allclose(tiled, whole_image(model, image), atol=1e-5)
    assert not np.allclose(tiled, 0)


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

    first = emlib.predict(nn.Identity(), np.ones((6, 6), np.float32), standardize=None, amp=False)
    second = emlib.predict(nn.Identity(), np.ones((6, 6), np.float32), standardize=None)  # a second call still reaches the function
    assert np.array_equal(first, second) and first.shape == (6, 6)
