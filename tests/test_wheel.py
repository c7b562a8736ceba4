"""A pip install without a checkout (Colab: `pip install git+...`): the wheel carries the real-data study."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """emlib built into a wheel from the working tree's files and installed into a folder of its own."""
    tmp = tmp_path_factory.mktemp("wheel")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.splitlines()
    source = tmp / "source"
    for name in listed:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(source)], check=True)
    wheel = next((tmp / "dist").glob("emlib-*.whl"))
    subprocess.run(pip + ["install", "--no-deps", "--target", str(tmp / "site"), str(wheel)], check=True)
    return tmp / "site"


def run_installed(site, code, cwd, **env):
    environment = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=environment, capture_output=True, text=True)


@pytest.mark.slow
def test_a_wheel_install_holds_the_study_and_its_generators(installed, tmp_path, data_root):
    code = """
import emlib, sys
from emlib import inits, study, cli
assert emlib.__file__.startswith(%r), emlib.__file__
print(inits.path_of("real_small/unet_2_44"))
print(len(study.load_groups("results/real_small")), len(study.pretraining_runs("results/real_small")))
sys.exit(cli.main(["finetune", "--toy", "--init", "real_small/unet_2_44", "--epochs", "1", "--epoch-size", "4",
                   "--output-dir", "run", "--no-test"]))
""" % str(installed)
    result = run_installed(installed, code, tmp_path, EMLIB_DATA=data_root)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert Path(lines[0]).is_relative_to(installed) and (Path(lines[0]) / "generator.safetensors").is_file()
    groups, generators = (int(n) for n in lines[1].split())
    assert groups > 0 and generators > 0  # what notebooks 03, 06 and 07 show
    assert (tmp_path / "run" / "summary.json").is_file()
