"""Fine-tuning augmentations: each switch does what it says, to image and target alike."""
import numpy as np
import pytest
import torch

from emlib.data.augment import CentreCropped, PairAugment


def pair(size=16):
    image = torch.arange(size * size, dtype=torch.float32).view(1, size, size)
    mask = (image % 3 == 0).float()
    return image, mask


def dihedral_variants(a: torch.Tensor):
    return [torch.rot90(a.flip(-1) if f else a, k, (-2, -1)) for f in (0, 1) for k in range(4)]


def test_all_switches_off_is_a_plain_random_crop():
    image, mask = pair()
    augment = PairAugment(8, resize=False, dihedral=False, noise=False)
    seen = set()
    for seed in range(20):
        torch.manual_seed(seed)
        x, y = augment(image, mask)
        top, left = divmod(int(x[0, 0, 0]), 16)
        assert torch.equal(x, image[:, top:top + 8, left:left + 8]) and torch.equal(y, mask[:, top:top + 8, left:left + 8])
        seen.add((top, left))
    assert len(seen) > 5


def test_dihedral_moves_image_and_mask_together():
    image, mask = pair(8)
    augment = PairAugment(8, resize=False, dihedral=True, noise=False)
    used = set()
    for seed in range(40):
        torch.manual_seed(seed)
        x, y = augment(image, mask)
        k = next(i for i, v in enumerate(dihedral_variants(image)) if torch.equal(v, x))
        assert torch.equal(dihedral_variants(mask)[k], y)
        used.add(k)
    assert len(used) == 8  # all flips and rotations occur


def test_noise_touches_the_input_only():
    image, mask = pair()
    torch.manual_seed(0)
    changed = 0
    for seed in range(20):
        torch.manual_seed(seed)
        x, y = PairAugment(16, resize=False, dihedral=False, noise=True)(image, mask)
        assert torch.equal(y, mask)  # the target is never noised
        changed += not torch.equal(x, image)
    assert 3 <= changed <= 17  # p = 0.5


def test_resize_keeps_masks_binary_and_changes_scale():
    image = torch.zeros(1, 64, 64)
    image[:, 16:48, 16:48] = 1.0  # a 32 px square
    mask = image.clone()
    sizes = set()
    for seed in range(30):
        torch.manual_seed(seed)
        x, y = PairAugment(96, resize=True, dihedral=False, noise=False)(image, mask)
        assert x.shape == y.shape == (1, 96, 96)
        assert set(y.unique().tolist()) <= {0.0, 1.0}  # nearest-neighbour: no blended mask values
        sizes.add(int(y[0, 48].sum()))  # width of the (mirrored) square along the centre row
    assert len(sizes) > 3


def test_restoration_targets_are_resized_like_the_input():
    image, _ = pair(32)
    for seed in range(10):
        torch.manual_seed(seed)
        x, y = PairAugment(16, mask=False, resize=True, dihedral=True, noise=False)(image, 2 * image)
        assert torch.allclose(y, 2 * x)


def test_small_images_are_mirror_padded_and_centre_crops_cap_the_size():
    image, mask = pair(6)
    x, y = PairAugment(10, resize=False, dihedral=False, noise=False)(image, mask)
    assert x.shape == (1, 10, 10)
    centre = CentreCropped([(image, mask)], 4)[0]
    assert torch.equal(centre[0], image[:, 1:5, 1:5])
    assert CentreCropped([(image, mask)], 100)[0][0].shape == (1, 6, 6)


@pytest.mark.parametrize("switch", ["resize", "dihedral", "noise"])
def test_each_switch_changes_a_batch(switch):
    """The same seeds with the switch on or off give different batches (and identical ones when off twice)."""
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.standard_normal((1, 40, 40)).astype(np.float32))
    mask = (image > 0).float()
    off = dict(resize=False, dihedral=False, noise=False)

    def batch(**switches):
        out = []
        for seed in range(8):
            torch.manual_seed(seed)
            out.append(PairAugment(24, **switches)(image, mask)[0])
        return torch.stack(out)

    assert torch.equal(batch(**off), batch(**off))
    assert not torch.equal(batch(**off), batch(**{**off, switch: True}))
