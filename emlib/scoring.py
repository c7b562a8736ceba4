"""Scores a study computes from the data beside its runs' own: training-free baselines and transfer.

- Baselines (no training): a per-image Otsu threshold, with the polarity (particles
  darker or brighter than the background) chosen once on the train split, and
  "all foreground" (every pixel called particle). A model that does not beat them
  has learnt nothing a threshold does not know.
- Cross-dataset transfer: each finished fine-tuning run's best model scored on the
  test split of another dataset it never saw (EMPS -> msa_segtrack and back).

Both use the Dice of `emlib.metrics.dice_scores` (per image, mean in percent) on the same
test splits the runs report, so the numbers sit beside the runs' own.

    python -m emlib sweep experiments/real_small.yaml    # writes baselines.csv and cross_dataset.csv (spec: scores:)
"""
import numpy as np
import torch

from emlib import finetune, runs, training
from emlib.data import catalog
from emlib.metrics import dice_scores

POLARITIES = ("dark", "bright")  # which side of the threshold is particle
BASELINE_COLUMNS = ["dataset", "split", "baseline", "polarity", "n_images", "dice_percent"]
CROSS_COLUMNS = ["run_id", "trained_on", "scored_on", "model", "init", "head", "seed", "label_fraction",
                 "dice_percent", "own_test_dice_percent"]


def otsu_threshold(image: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a grey image: the cut of its `bins`-bin histogram that maximises the
    between-class variance (Otsu 1979)."""
    values = np.asarray(image, dtype=np.float64).ravel()
    low, high = values.min(), values.max()
    if high <= low:
        return float(low)
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts)  # pixels at or below each cut
    mean = np.cumsum(counts * centres)
    total, total_mean = weight[-1], mean[-1]
    above = total - weight
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mean * weight - total * mean) ** 2 / (weight * above)
    between[~np.isfinite(between)] = -1
    return float(edges[1:][int(np.argmax(between))])


def otsu_mask(image: np.ndarray, polarity: str) -> np.ndarray:
    """Particle mask of one image by its own Otsu threshold: below it ("dark") or above it ("bright")."""
    if polarity not in POLARITIES:
        raise ValueError(f"polarity must be one of {POLARITIES}, got {polarity!r}")
    threshold = otsu_threshold(image)
    return image <= threshold if polarity == "dark" else image > threshold


def baseline_dice(dataset, predict_mask) -> float:
    """Mean Dice (percent) of `predict_mask(image (H, W) array) -> bool mask` over a segmentation split."""
    scores = []
    for index in range(len(dataset)):
        image, mask = dataset[index]
        predicted = torch.from_numpy(predict_mask(image[0].numpy()).astype(np.float32))
        scores.append(dice_scores(predicted * 2 - 1, mask[0]).item())  # logits > 0 where predicted
    return 100.0 * float(np.mean(scores))


def choose_polarity(train) -> str:
    """The Otsu polarity with the higher Dice on the train split (the test split is never looked at)."""
    return max(POLARITIES, key=lambda polarity: baseline_dice(train, lambda image: otsu_mask(image, polarity)))


def baselines(dataset: str, folder, split_seed: int = 0, downsample: int = 1) -> list:
    """Rows (BASELINE_COLUMNS) of the training-free baselines on the test split of `dataset` in `folder`
    (read at 1/`downsample` of its size, as the runs read it: `FinetuneConfig.downsample`)."""
    train = catalog.segmentation_dataset(dataset, folder, "train", split_seed, downsample=downsample)
    test = catalog.segmentation_dataset(dataset, folder, "test", split_seed, downsample=downsample)
    polarity = choose_polarity(train)
    common = dict(dataset=dataset, split="test", n_images=len(test))
    return [
        dict(common, baseline="otsu", polarity=polarity,
             dice_percent=round(baseline_dice(test, lambda image: otsu_mask(image, polarity)), 4)),
        dict(common, baseline="all_foreground", polarity="",
             dice_percent=round(baseline_dice(test, lambda image: np.ones(image.shape, bool)), 4)),
    ]


def cross_dataset_score(run_dir, dataset: str, folder, split_seed: int = 0, amp="auto") -> float:
    """Test Dice (percent) of a finished fine-tuning run's best model on another dataset's test split, read at
    the run's own `downsample`."""
    model, config = runs.load_finetuned(run_dir)
    test = catalog.segmentation_dataset(dataset, folder, "test", split_seed, downsample=config.downsample)
    device = torch.device("cpu")
    channels_last = training.use_channels_last(device, amp, finetune.registry_model(model)) if amp == "auto" else False
    model = training.prepare_model(model, device, channels_last)
    scores = finetune.evaluate(model, test, config.task, device, 1, training.amp_dtype(device, amp), channels_last)
    return scores["dice_percent"]
