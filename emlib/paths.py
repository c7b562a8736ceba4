"""The repository's own folders: what a checkout holds beside the package (notebooks, results/).

A pip-installed emlib has none of them; the modules that use a path say so when it is missing.
"""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout: emlib/, notebooks/, results/
