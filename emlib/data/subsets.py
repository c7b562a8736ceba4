"""The labelled subset of a train split: one rule for every dataset (label-efficiency runs).

`labelled(n, fraction, seed)` keeps round(fraction * n) of n train items (at least
one), drawn by one seeded permutation: the subsets of one seed are nested (the
items of 10 % are among those of 25 %), and validation and test never change.
"""
import numpy as np


def check_fraction(fraction: float) -> None:
    """ValueError unless 0 < fraction <= 1."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label_fraction must be in (0, 1], got {fraction}")


def labelled(n: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of the kept items among n; all of them for fraction >= 1."""
    check_fraction(fraction)
    if fraction >= 1.0:
        return np.arange(n)
    keep = max(1, round(fraction * n))
    return np.sort(np.random.default_rng(seed + 1).permutation(n)[:keep])  # seed + 1: not the split's own draw
