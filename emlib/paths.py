"""The repository's own folders: what a checkout holds beside the package (notebooks, results/).

A pip-installed emlib has none of them, except the real-data study's small artefacts: a wheel
carries results/real_small/ as emlib/_results/real_small/ (setup.py), which `repository_path`
finds. The modules that use a path say so when it is missing.
"""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout: emlib/, notebooks/, results/
PACKAGED_RESULTS = Path(__file__).resolve().parent / "_results"  # a wheel's copy of results/<study>/ (setup.py)


def repository_path(relative) -> Path:
    """A path of the repository: the checkout's when emlib runs from one, else, for a path under
    `results/`, the copy that a pip install carries (the same path without `results/`, in the package)."""
    relative = Path(relative)
    checkout = REPO_ROOT / relative
    if checkout.exists() or relative.parts[:1] != ("results",):
        return checkout
    return PACKAGED_RESULTS.joinpath(*relative.parts[1:])
