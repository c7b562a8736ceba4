"""The book's explorers: fixed corruptions, their static grids, the ipywidgets, and a pretrained run read back."""
import json
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import tifffile
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from emlib import explorers, models, pretrain  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def image(seed=0, size=32):
    return torch.rand(1, size, size, generator=torch.Generator().manual_seed(seed))


def test_fixed_corruption_applies_exactly_the_settings():
    clean = torch.full((4, 1, 48, 48), 0.5)
    corrupted, target = explorers.fixed_corruption(clean, noise_std=0.05)
    assert torch.equal(target, clean)
    assert (corrupted - clean).std().item() == pytest.approx(0.05, rel=0.1)
    corrupted, target = explorers.fixed_corruption(image(), 0.0, 0.0)
    assert torch.equal(corrupted, target) and torch.equal(target, image())


def test_fixed_corruption_blur_only_blurs_and_flip_rot90_turn_input_and_target_alike():
    clean = image()
    corrupted, target = explorers.fixed_corruption(clean, blur_sigma=1.5)
    assert torch.equal(target, clean)
    assert corrupted.std() < clean.std()  # a blur smooths random pixels
    _, turned = explorers.fixed_corruption(clean, 0.0, 0.0, flip=True, rot90=True)
    assert torch.equal(turned, torch.rot90(clean.flip(-1), 1, dims=(-2, -1)))
    a, b = explorers.fixed_corruption(clean, 0.0, 0.0, flip=True)
    assert torch.equal(a, b) and torch.equal(b, clean.flip(-1))


def test_fixed_corruption_same_seed_same_noise_pattern_for_every_setting():
    clean = image()
    a1, _ = explorers.fixed_corruption(clean, 0.1, 0.0, seed=3)
    a2, _ = explorers.fixed_corruption(clean, 0.1, 0.0, seed=3)
    a3, _ = explorers.fixed_corruption(clean, 0.1, 0.0, seed=4)
    assert torch.equal(a1, a2) and not torch.equal(a1, a3)
    low, _ = explorers.fixed_corruption(torch.full((1, 32, 32), 0.5), 0.02, 0.0, seed=3)
    high, _ = explorers.fixed_corruption(torch.full((1, 32, 32), 0.5), 0.04, 0.0, seed=3)
    assert torch.allclose(high - 0.5, 2 * (low - 0.5), atol=1e-6)  # one noise field, scaled


def test_corruption_grid_shows_every_setting_and_names_the_data():
    fig = explorers.corruption_grid(image(), "synthetic stand-in", noise_stds=(0.0, 0.1), blur_sigmas=(0.0, 1.0, 2.0))
    axes = fig.get_axes()
    assert len(axes) == (3 + 1) * (4 + 1)  # rows: 3 blurs + the flips; columns: target + max(2 noises, 4 flips)
    titles = [ax.get_title() for ax in axes]
    assert sum(t.startswith("noise ") for t in titles) == 6
    assert sum(t.startswith("A: ") for t in titles) == 4
    assert "synthetic stand-in" in fig._suptitle.get_text()


def test_corruption_explorer_redraws_on_every_control():
    pytest.importorskip("ipywidgets")
    widget = explorers.corruption_explorer(image(), "synthetic stand-in")
    names = [getattr(child, "description", "") for child in widget.children]
    assert names[:4] == ["noise std", "blur sigma (px)", "flip", "rot90"]
    for child, value in zip(widget.children[:4], (0.2, 3.0, True, True)):
        child.value = value  # runs the drawing function; an error would raise here
    assert widget.kwargs == {"noise_std": 0.2, "blur_sigma": 3.0, "flip": True, "rot90": True}


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A pretraining run folder as `pretrain.run` leaves it (untrained weights), whose data_root is relative."""
    base = tmp_path_factory.mktemp("repo")
    data = base / "shared" / "cells"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(30):
        tifffile.imwrite(data / f"patch{i:02d}.tif", rng.integers(0, 256, (40, 40), dtype=np.uint8))
    run = base / "results" / "pretrain-unet_2_44"
    config = pretrain.PretrainConfig.toy(data_root=str(data), image_size=32, output_dir=str(run))
    config.data_root = "shared/cells"  # as a sweep run from the repository root records it
    torch.manual_seed(0)
    G = models.init_weights(models.create("unet_2_44"))
    pretrain.export_generator(G, config, run, {"source": "real", "steps": 0})
    (run / "config.json").write_text(json.dumps(config.to_dict()))  # what a finished run holds too
    (run / "summary.json").write_text(json.dumps({"status": "finished", "source": "real"}))
    return base, run


def test_load_pretraining_run_resolves_a_relative_data_root_above_the_run_or_under_base(run_folder, monkeypatch, tmp_path):
    base, run = run_folder
    monkeypatch.chdir(tmp_path)
    found = explorers.load_pretraining_run(run)  # under a folder above the run: the repository root
    assert found.config.data_root == str(base / "shared/cells")
    moved = Path(shutil.copytree(run, tmp_path / "elsewhere" / run.name))
    with pytest.raises(FileNotFoundError, match="data_root"):
        explorers.load_pretraining_run(moved)
    loaded = explorers.load_pretraining_run(moved / "generator.safetensors", base=base)
    assert loaded.folder == moved and loaded.source == "real" and loaded.config.model == "unet_2_44"
    assert loaded.config.data_root == str(base / "shared/cells") and loaded.config.output_dir == str(moved)
    assert not loaded.network.training
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        explorers.load_pretraining_run(tmp_path)


def test_held_out_images_restore_and_the_restoration_figures(run_folder, monkeypatch, tmp_path):
    base, run = run_folder
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the run folder has no manifest: the cache gets it
    loaded = explorers.load_pretraining_run(run, base=base)
    images = explorers.held_out_images(loaded, limit=2)
    assert images.shape == (2, 1, 32, 32) and 0 <= images.min() and images.max() <= 1
    assert not (run / "manifest.json").exists() and not list((base / "shared/cells").glob("*.json"))
    out = explorers.restore(loaded, images, strength=1.0)
    assert out["l1_g"].shape == out["l1_identity"].shape == (2,)
    assert torch.allclose(out["l1_identity"], (out["input"] - out["target"]).abs().mean(dim=(1, 2, 3)))
    assert explorers.restore(loaded, images, strength=0.0)["l1_identity"].max() == 0
    assert explorers.strength_settings(loaded, 0.5) == (0.05, 1.0)
    fig = explorers.restoration_grid(loaded, images, "real data (test)", strengths=(0.5, 1.0))
    assert len(fig.get_axes()) == 2 * 5
    curve = explorers.restoration_curve(loaded, images, strengths=(0.0, 1.0))
    assert curve["l1_identity"][0] == 0 and curve["l1_identity"][1] > 0 and curve["n_images"] == 2
    assert curve["l1_g"][1] == pytest.approx(out["l1_g"].mean().item())  # same seed, same corruption
    fig = explorers.plot_restoration_curve(curve, "real data (test)")
    assert [line.get_label() for line in fig.get_axes()[0].get_lines()][:2] == ["G(A)", "identity: A itself"]
    pytest.importorskip("ipywidgets")
    widget = explorers.restoration_explorer(loaded, images, "real data (test)")
    widget.children[0].value, widget.children[1].value = 1, 0.25
    assert widget.kwargs == {"index": 1, "strength": 0.25}

