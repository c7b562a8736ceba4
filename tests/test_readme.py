"""The README's instructions for a microscopist: the install line and the padding example run as written."""
import re
from pathlib import Path

import numpy as np

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
PYPROJECT = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()


def test_install_line_names_what_a_user_needs():
    assert 'python -m pip install "emlib[export] @ git+https://github.com/emlib-book/emlib"' in README
    assert "torch" in README.split("## Install by hand")[1].split("##")[0]
    pin = re.search(r'"(pydantic<[\d.]+)"', PYPROJECT).group(1)  # the export extra's pin, said in the README
    assert f"`{pin}`" in README


def test_the_padding_example_gives_the_declared_size_step():
    block = next(b for b in re.findall(r"```python\n(.*?)```", README, re.S) if "np.pad" in b)
    for shape in ((37, 50), (64, 16), (1, 1)):
        namespace = {"image": np.random.default_rng(0).random(shape)}
        exec(block, namespace)
        padded, step = namespace["padded"], namespace["step"]
        assert padded.shape[0] % step == 0 and padded.shape[1] % step == 0
        assert np.array_equal(padded[: shape[0], : shape[1]], namespace["image"])
