"""Shared test settings and fixtures."""
import os
from pathlib import Path

import pytest
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
