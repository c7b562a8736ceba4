"""The pretraining corruption: what is applied to the input, what to both, determinism."""
import json
from dataclasses import asdict

import pytest
import torch

from emlib.data import Corruption
from emlib.data.corruption import gaussian_blur


def dihedral_variants(image):
    """The 8 flips/rotations of a (C, H, W) image."""
    out = []
    for flipped in (image, image.flip(-1)):
        out += [torch.rot90(flipped, k, dims=(-2, -1)) for k in range(4)]
    return out


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def test_flips_and_rotations_are_identical_on_input_and_target():
    clean = torch.rand(16, 1, 12, 12, generator=seeded(0))
    identity_degradation = Corruption(noise_std=(0, 0), blur_sigma=(0, 0))
    corrupted, target = identity_degradation(clean, seeded(1))
    assert torch.equal(corrupted, target)
    for sample, transformed in zip(clean, target):
        assert any(torch.equal(transformed, v) for v in dihedral_variants(sample))
    assert not torch.equal(target, clean)  # 16 samples: some were flipped or rotated


def test_noise_goes_to_the_input_only():
    clean = torch.full((8, 1, 32, 32), 0.5)
    noise_only = Corruption(noise_std=(0.05, 0.05), p_noise=1.0, p_blur=0.0, flip=False, rot90=False)
    corrupted, target = noise_only(clean, seeded(0))
    assert torch.equal(target, clean)
    assert (corrupted - clean).std().item() == pytest.approx(0.05, rel=0.05)


def test_blur_goes_to_the_input_only_with_each_samples_own_sigma():
    clean = torch.rand(3, 2, 20, 20, generator=seeded(0))
    sigma = torch.tensor([0.0, 0.8, 2.0])
    batched = gaussian_blur(clean, sigma, max_sigma=2.0)
    for i in range(3):  # vectorised result == blurring each sample alone
        alone = gaussian_blur(clean[i:i + 1], sigma[i:i + 1], max_sigma=2.0)
        assert torch.allclose(batched[i], alone[0], atol=1e-6)
    assert torch.equal(batched[0], clean[0])  # sigma 0 is the identity
    delta = torch.zeros(1, 1, 21, 21)
    delta[..., 10, 10] = 1.0
    blurred = gaussian_blur(delta, torch.tensor([1.0]))
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert blurred[0, 0, 10, 10].item() == pytest.approx(1 / (2 * torch.pi), rel=0.02)

    blur_only = Corruption(noise_std=(0, 0), blur_sigma=(1.0, 2.0), p_blur=1.0, flip=False, rot90=False)
    corrupted, target = blur_only(clean, seeded(0))
    assert torch.equal(target, clean)
    assert (corrupted - clean).abs().mean() > 0.05


def test_seeded_generator_is_deterministic_and_output_stays_in_range():
    clean = torch.rand(4, 1, 16, 16, generator=seeded(0))
    corruption = Corruption(noise_std=(0.0, 0.3))
    first = corruption(clean, seeded(7))
    again = corruption(clean, seeded(7))
    other = corruption(clean, seeded(8))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])
    corrupted, target = first
    assert corrupted.shape == target.shape == clean.shape
    assert corrupted.min() >= 0 and corrupted.max() <= 1


def test_non_square_images_keep_their_shape():
    clean = torch.rand(8, 1, 10, 14, generator=seeded(0))
    corrupted, target = Corruption()(clean, seeded(0))
    assert corrupted.shape == target.shape == clean.shape


def test_config_round_trips_through_json():
    corruption = Corruption(noise_std=(0.01, 0.2), p_blur=0.25)
    assert Corruption(**json.loads(json.dumps(asdict(corruption)))) == corruption


@pytest.mark.parametrize(
    "kwargs, name",
    [(dict(p_noise=1.5), "p_noise"), (dict(blur_sigma=(2.0, 1.0)), "blur_sigma"), (dict(noise_std=0.1), "noise_std")],
)
def test_bad_parameters_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Corruption(**kwargs)


def test_unbatched_input_is_rejected():
    with pytest.raises(ValueError, match="B, C, H, W"):
        Corruption()(torch.rand(1, 16, 16))
