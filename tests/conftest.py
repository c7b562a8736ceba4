"""Shared test settings and fixtures."""
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from emlib.data import ensure_synthetic

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one torch thread is as fast, and far faster when other processes share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def data_root():
    """The same synthetic root as `make book` and the notebooks (written once, git-ignored)."""
    return str(ensure_synthetic(os.environ.get("EMLIB_DATA") or REPO / "data" / "synthetic"))


@pytest.fixture(scope="session")
def cem_folder(tmp_path_factory):
    """A CEM500K-like folder: dark smooth uint8 TIFF patches (36 train, 4 val, 4 test)."""
    folder = tmp_path_factory.mktemp("cem500k")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:40, :40] / 40
    for i in range(44):
        fx, fy, phase = rng.uniform(1, 4, 2).tolist() + [rng.uniform(0, 6)]
        image = 0.3 + 0.25 * np.sin(2 * np.pi * (fx * xx + fy * yy) + phase) + 0.05 * rng.standard_normal((40, 40))
        tifffile.imwrite(folder / f"patch{i:03d}.tif", (np.clip(image, 0, 1) * 255).astype(np.uint8))
    return folder
