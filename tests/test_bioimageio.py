"""BioImage.IO export: toy runs (segmentation, restoration, pretraining) become packages that the
community's own tools accept offline, whose stored test output is emlib's, and bad run folders
fail with one clear error.

Offline: the checks of bioimageio.spec that need the internet are URL reachability (cite / git_repo
URLs), GitHub user look-ups (authors' github_user) and bioimage.io id resolution (id, parent, links).
Our packages leave those fields empty (cite by DOI only; asserted below), so none of these checks
runs; a guard on the socket layer makes any connection attempt fail and the tests assert there was none.
"""
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from emlib import bioimageio as export_module
from emlib import cli, models, pretrain
from emlib.bioimageio import export, read_run
from emlib.tiling import reach
from emlib.finetune import FinetuneConfig, run
from emlib.runs import load_finetuned
from emlib.pretrain import PretrainConfig
from emlib.tiling import predict
from emlib.finite import NonFiniteWeightsError
from emlib.data.images import PERCENTILES

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")


@pytest.fixture
def offline(monkeypatch):
    """Every internet connection (and DNS look-up) fails; yields the list of attempts."""
    attempts = []
    real_connect = socket.socket.connect

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(address)
            raise OSError(f"network switched off in this test: {address}")
        return real_connect(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        attempts.append(host)
        raise socket.gaierror(f"network switched off in this test: {host}")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts


@pytest.fixture(scope="module")
def pretrain_run(data_root, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("pretrain") / "run"
    pretrain.run(PretrainConfig.toy(max_steps=2, data_root=data_root, output_dir=str(output_dir)))
    return output_dir


@pytest.fixture(scope="module")
def random_generator_run(pretrain_run, tmp_path_factory):
    """The toy pretraining run with a generator of PyTorch-default random weights: two toy steps leave
    an almost constant grey output, which any processing would reproduce; this one depends on its input."""
    folder = Path(shutil.copytree(pretrain_run, tmp_path_factory.mktemp("pretrain_random") / "run"))
    torch.manual_seed(0)
    models.save_weights(models.create("unet_2_44"), folder / "generator.safetensors")
    return folder


@pytest.fixture(scope="module")
def segmentation_run(data_root, pretrain_run, tmp_path_factory):
    """Three short toy epochs from the toy generator, its output head carried (head="transfer"): then the
    mask depends on the input's intensities from the first step, which the processing checks below need
    (with a fresh head, three toy epochs can end on a constant mask)."""
    output_dir = tmp_path_factory.mktemp("segmentation") / "run"
    run(FinetuneConfig.toy(data_root=data_root, output_dir=str(output_dir), epochs=3, epoch_size=24,
                           init=str(pretrain_run), head="transfer"))
    return output_dir


@pytest.fixture(scope="module")
def restoration_run(data_root, tmp_path_factory):
    """HRNet (size multiple 32, timm backbone) on denoising, one epoch of one batch."""
    output_dir = tmp_path_factory.mktemp("restoration") / "run"
    run(FinetuneConfig.toy(task="denoising", model="hrnet_w18_small", data_root=data_root,
                           output_dir=str(output_dir), epochs=1, epoch_size=8))
    return output_dir


def package_file(package: Path, name: str) -> bytes:
    with zipfile.ZipFile(package) as z:
        return z.read(name)


def check_package(package: Path, attempts: list):
    """The package through bioimageio.spec (format) and bioimageio.core (model test); returns the description."""
    from bioimageio.core import test_model
    from bioimageio.spec import load_description

    description = load_description(package, perform_io_checks=True)
    summary = description.validation_summary
    # bioimageio.spec 0.5.12 reports a format-only validation as "valid-format" ("passed" is kept for
    # the dynamic tests below); its format check itself must say "passed".
    assert summary.status == "valid-format", summary.format()
    assert any(d.name.startswith("bioimageio.spec format validation") and d.status == "passed" for d in summary.details)
    tested = test_model(package)
    assert tested.status == "passed", tested.format()
    reproduced = [d.name for d in tested.details if d.name.startswith("Reproduce test outputs") and d.status == "passed"]
    assert len(reproduced) == 2  # pytorch_state_dict and torchscript both reproduce emlib's output
    # Nothing that would need the internet, and no connection attempt.
    assert all(c.url is None and c.doi is not None for c in description.cite)
    assert description.git_repo is None and description.id is None and description.parent is None
    assert all(a.github_user is None for a in description.authors)
    assert attempts == []
    return description


def test_segmentation_package(segmentation_run, pretrain_run, tmp_path, offline):
    package = export(segmentation_run, tmp_path / "seg.zip")
    description = check_package(package, offline)
    pre = [p.id for p in description.inputs[0].preprocessing]
    post = [p.id for p in description.outputs[0].postprocessing]
    assert pre == ["ensure_dtype", "zero_mean_unit_variance", "ensure_dtype"]
    assert [str(a) for a in description.inputs[0].preprocessing[1].kwargs.axes] == ["y", "x"]  # per image
    assert post == ["sigmoid", "binarize", "ensure_dtype"]
    assert description.outputs[0].postprocessing[1].kwargs.threshold == 0.5
    y_in, y_out = description.inputs[0].axes[2], description.outputs[0].axes[2]
    assert y_out.halo >= reach(models.create("unet_2_44")) and y_out.halo % 4 == 0  # exact tiling in a consumer
    assert (y_in.size.step, y_in.size.min) == (4, 4 * (2 * y_out.halo // 4 + 1))  # U-Net_2: 2**2, first multiple > 2 * halo
    architecture = description.weights.pytorch_state_dict.architecture
    assert (str(architecture.source.path), str(architecture.callable)) == ("emlib_network.py", "create")
    assert "emlib" not in re.sub(r"#.*|\"\"\"[\s\S]*?\"\"\"", "", package_file(package, "emlib_network.py").decode())
    assert architecture.kwargs == {"name": "unet_2_44", "in_channels": 1, "out_channels": 1}

    # The stored output is emlib's: emlib.predict on the stored input, thresholded at logit 0.
    inputs = np.load(io.BytesIO(package_file(package, "test_input.npy")))
    expected = np.load(io.BytesIO(package_file(package, "test_output.npy")))
    model, _ = load_finetuned(segmentation_run)
    ours = predict(model, inputs[0, 0], tile=inputs.shape[-1], overlap=0, standardize="per_image", amp=False) > 0
    assert expected.dtype == np.uint8 and expected.any()
    assert (ours != expected[0, 0]).mean() < 1e-4

    readme = package_file(package, "README.md").decode()
    summary = json.loads((segmentation_run / "summary.json").read_text())
    assert "toy run on synthetic data, not for use" in readme and "## Validation" in readme
    assert f"test Dice of that model: {summary['test_dice_percent']:.2f} %" in readme
    assert str(pretrain_run) in readme and "arXiv 2402.18286" in readme  # pretrained from what; the paper
    from PIL import Image

    cover = Image.open(io.BytesIO(package_file(package, "cover.png")))
    assert cover.size[0] == 2 * cover.size[1]  # input | prediction


def test_restoration_package(restoration_run, tmp_path, offline):
    package = export(restoration_run, tmp_path / "denoising.zip")
    description = check_package(package, offline)
    pre, post = description.inputs[0].preprocessing, description.outputs[0].postprocessing
    assert [p.id for p in pre[1:-1]] == ["scale_range", "clip", "scale_linear"]  # any bit depth -> [0, 1] -> [-1, 1]
    assert (pre[1].kwargs.min_percentile, pre[1].kwargs.max_percentile) == PERCENTILES  # emlib's own rule
    assert (pre[2].kwargs.min, pre[2].kwargs.max, pre[3].kwargs.gain, pre[3].kwargs.offset) == (0, 1, 2.0, -1.0)
    assert "timm" in package_file(package, "environment.yaml").decode()  # HRNet's dependency
    assert [(p.id, p.kwargs.gain, p.kwargs.offset) for p in post[:-1]] == [("scale_linear", 0.5, 0.5)]
    assert description.inputs[0].axes[3].size.step == 32  # HRNet
    readme = package_file(package, "README.md").decode()
    assert "test L1 / PSNR / SSIM" in readme and "random initialisation" in readme


def test_pretraining_package(random_generator_run, tmp_path, offline):
    package = export(random_generator_run, tmp_path / "generator.zip")
    check_package(package, offline)
    inputs = np.load(io.BytesIO(package_file(package, "test_input.npy")))
    expected = np.load(io.BytesIO(package_file(package, "test_output.npy")))
    assert inputs.max() > 1.5 and inputs.min() >= 0 and inputs.max() <= 255  # 8-bit scale, as declared
    assert expected.std() > 1e-3  # above the model test's tolerance: not a constant (see random_generator_run)
    readme = package_file(package, "README.md").decode()
    assert "validation L1" in readme and "toy run on synthetic data" in readme


def test_toy_pretraining_exports(pretrain_run, tmp_path):
    assert zipfile.is_zipfile(export(pretrain_run, tmp_path / "toy.zip"))


@pytest.mark.parametrize("run_name, step", [("segmentation_run", "zero_mean_unit_variance"),
                                            ("random_generator_run", "scale_range")])
def test_wrong_declared_processing_fails_the_model_test(run_name, step, request, tmp_path, monkeypatch, offline):
    """The stored output is emlib's, so a package that declares other processing than emlib
    applies (here: without its first step, the standardisation or the percentile scaling) fails."""
    from bioimageio.core import test_model

    right = export_module.processing
    assert right(read_run(request.getfixturevalue(run_name)))[0][0].id == step
    monkeypatch.setattr(export_module, "processing", lambda r: (right(r)[0][1:], right(r)[1]))
    tested = test_model(export(request.getfixturevalue(run_name), tmp_path / "wrong.zip"))
    assert tested.status != "passed"
    assert any(d.name.startswith("Reproduce test outputs") and d.status == "failed" for d in tested.details)


def test_cli_writes_a_package(pretrain_run, tmp_path):
    out = tmp_path / "cli.zip"
    assert cli.main(["export", "bioimageio", str(pretrain_run), "--out", str(out), "--author", "A. Person"]) == 0
    assert "A. Person" in package_file(out, "rdf.yaml").decode()


# ----------------------------------------------------------------------------- bad input


def copy_run(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "copy"))


def test_unfinished_run_is_refused(segmentation_run, tmp_path, capsys):
    folder = copy_run(segmentation_run, tmp_path)
    (folder / "summary.json").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{folder} is an unfinished run: summary.json is missing")):
        export(folder, tmp_path / "x.zip")
    assert cli.main(["export", "bioimageio", str(folder), "--out", str(tmp_path / "x.zip")]) == 2
    assert "summary.json is missing" in capsys.readouterr().err
    assert not (tmp_path / "x.zip").exists()


def test_non_finite_weights_are_refused(segmentation_run, tmp_path):
    folder = copy_run(segmentation_run, tmp_path)
    path = folder / "best_model.safetensors"
    with safe_open(path, framework="pt") as f:
        metadata = f.metadata()
    state = load_file(path)
    state["head.bias"] = torch.full_like(state["head.bias"], float("nan"))
    save_file(state, path, metadata=metadata)  # emlib's own save_weights refuses NaN
    with pytest.raises(NonFiniteWeightsError, match=re.escape(f"head.bias holds 1 NaN/inf value(s) of 1; refusing to load {path} (weights from a run that diverged)")):
        export(folder, tmp_path / "x.zip")


def test_older_or_unknown_formats_are_refused(segmentation_run, pretrain_run, tmp_path):
    folder = copy_run(segmentation_run, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "steps_per_epoch": 6}))  # a field of an older emlib
    with pytest.raises(ValueError, match=r"config.json does not fit .* older or unknown run format.*steps_per_epoch"):
        read_run(folder)
    (folder / "config.json").write_text(json.dumps({"what": "else"}))
    with pytest.raises(ValueError, match="neither a fine-tuning config .* nor a pretraining config"):
        read_run(folder)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "best_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{folder}: best_model.safetensors is missing")):
        read_run(folder)
    pretrain_copy = Path(shutil.copytree(pretrain_run, tmp_path / "pretrain"))
    (pretrain_copy / "model_card.json").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{pretrain_copy}: model_card.json is missing")):
        read_run(pretrain_copy)
    with pytest.raises(FileNotFoundError, match="not an emlib run folder: config.json is missing"):
        read_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="run folder not found"):
        read_run(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="must name a .zip file"):
        export(pretrain_run, tmp_path / "model.yaml")


def test_scale_label_is_read_from_the_run(pretrain_run, tmp_path):
    folder = copy_run(pretrain_run, tmp_path)
    assert export_module.scale_label(read_run(folder)) == "toy run on synthetic data, not for use"
    summary = json.loads((folder / "summary.json").read_text())
    (folder / "summary.json").write_text(json.dumps({**summary, "source": "real", "machine": {"cpu": "x"}}))
    assert export_module.scale_label(read_run(folder)) == "small CPU run on real data"
    (folder / "summary.json").write_text(json.dumps({**summary, "source": "real", "machine": {"gpu": "NVIDIA H100"}}))
    assert export_module.scale_label(read_run(folder)).startswith("run on real data on a GPU (NVIDIA H100)")


WITHOUT_EMLIB = """
import sys
sys.modules["emlib"] = None  # `import emlib` raises ImportError, as where emlib is not installed
from bioimageio.core.__main__ import main
sys.argv = ["bioimageio", "test", sys.argv[1]]
sys.exit(main())
"""


def bioimageio_test_without_emlib(package, cwd):
    """`bioimageio test PACKAGE` in a python that cannot import emlib (-I: no PYTHONPATH, no cwd on the path)."""
    return subprocess.run([sys.executable, "-I", "-c", WITHOUT_EMLIB, str(package)], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_packages_pass_bioimageio_test_without_emlib(segmentation_run, restoration_run, tmp_path):
    for run_dir, name in ((segmentation_run, "seg.zip"), (restoration_run, "hrnet.zip")):
        package = export(run_dir, tmp_path / name)
        result = bioimageio_test_without_emlib(package, tmp_path)
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
        assert "import_from" not in package_file(package, "rdf.yaml").decode()  # no library to import
        for info in zipfile.ZipFile(package).infolist():
            assert info.external_attr >> 16 & 0o777 == 0o644, info.filename
    assert bioimageio_test_without_emlib(tmp_path / "seg.zip", tmp_path).returncode == 0


def test_packages_fill_sample_tensors(segmentation_run, tmp_path):
    import tifffile

    package = export(segmentation_run, tmp_path / "seg.zip")
    inputs = np.load(io.BytesIO(package_file(package, "test_input.npy")))
    sample = tifffile.imread(io.BytesIO(package_file(package, "sample_input.tif")))
    assert np.array_equal(sample.reshape(inputs.shape), inputs)
    assert "sample_tensor" in package_file(package, "rdf.yaml").decode()


def test_restoration_package_takes_any_bit_depth(random_generator_run):
    run = read_run(random_generator_run)
    raw, expected, _ = export_module.example_pair(run)
    twelve_bit = export_module.emlib_output(run, raw / 255 * 4095)  # the same image saved by a 12-bit camera
    assert torch.allclose(twelve_bit, expected, atol=1e-5)
