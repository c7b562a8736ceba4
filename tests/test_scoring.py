"""emlib.scoring: the training-free baselines (Otsu, all-foreground) and cross-dataset scores."""
import numpy as np
import pytest

from emlib import scoring
from emlib.data import catalog


def two_level_image(rng, dark_fraction=0.3, shape=(64, 64)):
    """Dark discs on a bright, noisy background: the particle mask and the image."""
    mask = np.zeros(shape, bool)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    while mask.mean() < dark_fraction:
        cy, cx, r = rng.integers(0, shape[0]), rng.integers(0, shape[1]), rng.integers(4, 10)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
    image = np.where(mask, 0.3, 0.7) + 0.05 * rng.standard_normal(shape)
    return image, mask


def test_otsu_separates_two_levels_and_polarity_picks_the_particles():
    image, mask = two_level_image(np.random.default_rng(0))
    threshold = scoring.otsu_threshold(image)
    assert 0.4 < threshold < 0.6
    assert (scoring.otsu_mask(image, "dark") == mask).mean() > 0.98
    assert (scoring.otsu_mask(image, "bright") == ~mask).mean() > 0.98
    assert scoring.otsu_threshold(np.full((4, 4), 0.2)) == pytest.approx(0.2)  # a flat image: no cut to find
    with pytest.raises(ValueError, match="polarity"):
        scoring.otsu_mask(image, "grey")


def test_baselines_on_a_split_choose_polarity_on_train(data_root):
    """Synthetic EMPS: rows for Otsu (its polarity chosen on train) and all-foreground, scored on test."""
    folder, _ = catalog.dataset_folder("emps", data_root, verbose=False)
    rows = {row["baseline"]: row for row in scoring.baselines("emps", folder)}
    test = catalog.segmentation_dataset("emps", folder, "test")
    assert rows["otsu"]["n_images"] == len(test) and rows["otsu"]["polarity"] in scoring.POLARITIES
    assert rows["all_foreground"]["dice_percent"] == pytest.approx(
        scoring.baseline_dice(test, lambda image: np.ones(image.shape, bool)), abs=1e-3)
    # the other polarity scores worse on train, which is why it was not chosen
    train = catalog.segmentation_dataset("emps", folder, "train")
    other = "bright" if rows["otsu"]["polarity"] == "dark" else "dark"
    chosen = scoring.baseline_dice(train, lambda image: scoring.otsu_mask(image, rows["otsu"]["polarity"]))
    assert chosen >= scoring.baseline_dice(train, lambda image: scoring.otsu_mask(image, other))


def test_baselines_score_the_test_split_at_the_size_the_runs_read_it(data_root):
    folder, _ = catalog.dataset_folder("emps", data_root, verbose=False)
    full, half = (catalog.segmentation_dataset("emps", folder, "test", downsample=n) for n in (1, 2))
    assert half[0][1].shape[-1] == round(full[0][1].shape[-1] / 2)
    rows = {row["baseline"]: row for row in scoring.baselines("emps", folder, downsample=2)}
    assert rows["all_foreground"]["dice_percent"] == pytest.approx(
        scoring.baseline_dice(half, lambda image: np.ones(image.shape, bool)), abs=1e-3)
