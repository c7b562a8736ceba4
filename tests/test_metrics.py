"""Dice as the paper defines it, and the restoration metrics, on hand-made cases."""
import pytest
import torch

from emlib.metrics import dice_percent, dice_scores, l1_errors, psnr_values, restoration_scores, ssim_values


def logits_of(mask):
    """A {0,1} mask -> logits whose hard mask (logit > 0) is that mask."""
    return torch.where(torch.as_tensor(mask) > 0, torch.tensor(3.0), torch.tensor(-3.0))


def test_dice_hand_case():
    truth = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.float32)  # |G| = 4
    predicted = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.float32)  # |P| = 3, overlap 2
    assert dice_scores(logits_of(predicted), truth).item() == pytest.approx((2 * 2 + 1) / (3 + 4 + 1))


def test_dice_thresholds_logits_at_zero_not_half():
    truth = torch.ones(1, 1, 2, 2)
    logits = torch.tensor([[[[0.3, 0.3], [-0.3, -0.3]]]])  # sigmoid 0.57 / 0.43
    assert dice_scores(logits, truth).item() == pytest.approx((2 * 2 + 1) / (2 + 4 + 1))


def test_dice_empty_prediction_and_empty_truth():
    empty = torch.zeros(1, 1, 8, 8)
    full = torch.ones(1, 1, 8, 8)
    assert dice_scores(logits_of(empty), empty).item() == 1.0  # both empty: perfect by the +1 smoothing
    assert dice_scores(logits_of(empty), full).item() == pytest.approx(1 / 65)  # nothing found
    assert dice_scores(logits_of(full), empty).item() == pytest.approx(1 / 65)  # everything false positive


def test_dice_is_per_image_then_mean_in_percent():
    truth = torch.zeros(2, 1, 4, 4)
    truth[0, 0, :2] = 1  # image 0 has 8 particle pixels, image 1 none
    predicted = torch.zeros_like(truth)
    predicted[0, 0, :2] = 1  # perfect on image 0
    predicted[1, 0, 0, 0] = 1  # one false pixel on image 1
    per_image = dice_scores(logits_of(predicted), truth)
    assert per_image.tolist() == pytest.approx([1.0, 1 / 2])
    # Pooling the pixels of the batch would give (2*8+1)/(9+8+1); the paper averages images.
    assert dice_percent(logits_of(predicted), truth) == pytest.approx(75.0)


def test_dice_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        dice_scores(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))


def test_l1_and_psnr_of_a_constant_offset():
    target = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.8
    prediction = target + 0.1
    assert l1_errors(prediction, target) == pytest.approx(torch.full((3,), 0.1), abs=1e-6)
    assert psnr_values(prediction, target) == pytest.approx(torch.full((3,), 20.0), abs=1e-3)  # MSE 0.01


def test_ssim_is_one_for_identical_images_and_lower_for_noisy_ones():
    g = torch.Generator().manual_seed(1)
    target = torch.rand(2, 1, 32, 32, generator=g)
    noisy = (target + 0.3 * torch.randn(2, 1, 32, 32, generator=g)).clamp(0, 1)
    assert ssim_values(target, target) == pytest.approx(torch.ones(2), abs=1e-5)
    assert (ssim_values(noisy, target) < 0.9).all()


def test_restoration_scores_are_per_image():
    target = torch.zeros(4, 1, 16, 16)
    prediction = target + torch.arange(4.0).view(4, 1, 1, 1) * 0.05
    scores = restoration_scores(prediction, target)
    assert set(scores) == {"l1", "psnr", "ssim"}
    assert scores["l1"].tolist() == pytest.approx([0.0, 0.05, 0.1, 0.15])
    assert scores["psnr"][1] > scores["psnr"][2] > scores["psnr"][3]
