"""Tests of emlib.models: the registry, the architectures, receptive fields, weights."""
from pathlib import Path

import pytest
import torch

from emlib import models

UNETS = [name for name in models.names() if name.startswith("unet_")]
REAL = Path(__file__).resolve().parents[1].parent / "shared/data/real"


def n_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def blocks(name: str) -> int:
    return int(name.split("_")[1])


def test_registry_names_and_unknown_name():
    assert len(UNETS) == 9 and "patchgan" in models.names()
    assert models.generator_names() == [n for n in models.names() if n != "patchgan"]
    with pytest.raises(ValueError, match="unet_2_44.*hrnet_w18.*patchgan"):
        models.create("unet_5_999")


@pytest.mark.parametrize("name", UNETS)
def test_unet_parameter_count_matches_sytwu(name):
    expected = {2: 8_069, 3: 32_725, 4: 130_677}[blocks(name)]
    model = models.create(name)
    assert n_parameters(model) == expected
    assert model.name == name and model.size_multiple == 2 ** blocks(name)


def test_patchgan_is_the_pix2pix_discriminator():
    disc = models.create("patchgan")
    assert n_parameters(disc) == 2_764_609  # C64-C128-C256-C512-C1, 4x4 kernels, BN without conv bias
    assert disc(torch.randn(2, 2, 64, 64)).shape == (2, 1, 6, 6)  # a patch map, one score per 70x70 patch
    assert models.receptive_field(disc) == 70


@pytest.mark.parametrize("name", UNETS)
def test_receptive_field_formula_and_measurement(name):
    formula = int(name.split("_")[2])
    torch.manual_seed(0)  # the measurement depends on the init (an unseeded unet_4_424 can measure 0)
    model = models.create(name)
    assert models.receptive_field(name) == formula
    measured = models.measure_receptive_field(model)
    if blocks(name) == 2:
        assert measured == formula
    else:
        assert abs(measured - formula) < 2 ** blocks(name)


def test_measured_receptive_field_depends_on_pooling_phase():
    model = models.create("unet_3_96")
    size = 96 + 4 * 8
    measured = {models.measure_receptive_field(model, size=size, position=size // 2 + k) for k in range(8)}
    assert len(measured) > 1, "pooling phase should change the measured extent"
    assert all(abs(m - 96) < 8 for m in measured)


def test_measurement_leaves_model_untouched_and_gradient_is_local():
    model = models.create("unet_2_44").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    influence = models.input_gradient(model, 96, 96)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    rows = influence.sum(1).nonzero().flatten()
    assert rows.min() > 0 and rows.max() < 95  # not dense: eval-mode BN does not couple pixels


def test_receptive_field_refuses_hrnet():
    with pytest.raises(ValueError, match="measure_receptive_field"):
        models.receptive_field(models.create("hrnet_w18_small"))


@pytest.mark.parametrize("name", [n for n in models.generator_names() if n != "hrnet_w44"])
def test_generators_keep_height_and_width(name):
    model = models.create(name, out_channels=2).eval()
    sizes = [(64, 64), (50, 70)] if name.startswith("hrnet") else [(32, 32), (37, 50), (9, 12)]
    with torch.no_grad():
        for height, width in sizes:
            assert model(torch.randn(2, 1, height, width)).shape == (2, 2, height, width)


def test_hrnet_at_paper_sizes_and_the_w44_once():
    with torch.no_grad():
        small = models.create("hrnet_w18_small").eval()
        for size in (224, 256):
            assert small(torch.randn(1, 1, size, size)).shape == (1, 1, size, size)
        big = models.create("hrnet_w44").eval()
        assert big(torch.randn(1, 1, 64, 64)).shape == (1, 1, 64, 64)
        assert n_parameters(big) > 50e6 > n_parameters(small)


@pytest.mark.skipif(not (REAL / "cem500k_examples").is_dir(), reason="../shared/data/real is absent")
def test_unet_on_a_real_cem500k_edge_patch():
    tifffile = pytest.importorskip("tifffile")
    image = tifffile.imread(REAL / "cem500k_examples/example5.tiff").astype("float32") / 255
    assert image.shape == (224, 138)  # 138 is no multiple of 16: padded and cropped back
    with torch.no_grad():
        out = models.create("unet_4_200").eval()(torch.from_numpy(image)[None, None])
    assert out.shape == (1, 1, 224, 138) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["unet_2_44", "unet_4_424", "hrnet_w18_small", "patchgan"])
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    model = models.create(name).train()
    x = torch.randn(2, 2 if name == "patchgan" else 1, 64, 64)
    model(x).square().mean().backward()
    dead = [k for k, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead


def test_init_weights_follows_pix2pix():
    torch.manual_seed(0)
    disc = models.init_weights(models.create("patchgan"))
    conv, bn = disc.layers[8], disc.layers[9]  # C512 and its BatchNorm; 2M weights give a tight std
    assert conv.out_channels == bn.num_features == 512
    assert abs(conv.weight.std().item() - 0.02) < 1e-3 and abs(conv.weight.mean().item()) < 1e-3
    assert abs(bn.weight.mean().item() - 1) < 0.01 and torch.all(bn.bias == 0)
    assert torch.all(disc.layers[0].bias == 0)


def test_safetensors_round_trip(tmp_path):
    model = models.create("unet_3_96")
    path = models.save_weights(model, tmp_path / "sub" / "g.safetensors", metadata={"epoch": 3, "subset": "50k"})
    state, meta = models.load_weights(path)
    assert meta == {"epoch": 3, "subset": "50k", "name": "unet_3_96"}
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        models.load_weights(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("name, in_channels, out_channels", [("unet_2_84", 1, 1), ("hrnet_w18_small", 1, 2),
                                                            ("patchgan", 2, 1)])
def test_load_builds_the_architecture_the_file_names(tmp_path, name, in_channels, out_channels):
    model = models.create(name, in_channels=in_channels, out_channels=out_channels)
    path = models.save_weights(model, tmp_path / "w.safetensors")
    loaded = models.load(path)
    assert loaded.name == name and type(loaded) is type(model)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    x = torch.rand(1, in_channels, 64, 64)
    assert torch.equal(loaded.eval()(x), model.eval()(x))
    with pytest.raises(ValueError, match=f"holds weights of {name}, not unet_2_44"):
        models.load(path, expected_name="unet_2_44")


def test_load_refuses_files_that_name_no_registry_model(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="an unnamed architecture, not of a registry model"):
        models.load(tmp_path / "plain.safetensors")
    save_file(models.create("unet_2_44").state_dict(), str(tmp_path / "other.safetensors"), metadata={"name": "unet_3_96"})
    with pytest.raises(ValueError, match="not those of unet_3_96"):
        models.load(tmp_path / "other.safetensors")


def test_transfer_same_architecture_copies_everything(tmp_path):
    pretrained = models.create("unet_2_44")
    path = models.save_weights(pretrained, tmp_path / "g.safetensors")
    downstream = models.create("unet_2_44")
    report = models.transfer_weights(downstream, path)
    assert not report.skipped and not report.reinitialised
    assert all(torch.equal(pretrained.state_dict()[k], v) for k, v in downstream.state_dict().items())
    assert f"transferred {len(report.loaded)} tensors from unet_2_44" in str(report)


def test_transfer_reinitialises_head_for_other_out_channels():
    torch.manual_seed(0)
    pretrained = models.create("hrnet_w18_small")
    downstream = models.create("hrnet_w18_small", out_channels=2)
    fresh_head = downstream.head.weight.clone()
    report = models.transfer_weights(downstream, pretrained)
    assert sorted(report.reinitialised) == ["head.bias", "head.weight"]
    assert torch.equal(downstream.head.weight, fresh_head)
    assert torch.equal(downstream.fuse[0].weight, pretrained.fuse[0].weight)
    assert "head.weight" in str(report)


def test_transfer_between_architectures_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unet_3_96.*unet_2_44"):
        models.transfer_weights(models.create("unet_2_44"), models.create("unet_3_96"))
    with pytest.raises(ValueError, match="unnamed state dict.*unet_2_44.*32 unexpected"):
        models.transfer_weights(models.create("unet_2_44"), models.create("unet_3_96").state_dict())
    # same tensor shapes, other dilations: only the stored name tells them apart
    path = models.save_weights(models.create("unet_2_84"), tmp_path / "g.safetensors")
    with pytest.raises(ValueError, match="unet_2_84.*unet_2_44"):
        models.transfer_weights(models.create("unet_2_44"), path)


def test_flops_are_ordered_by_model_size():
    cost = {name: models.flops(name, size=64) for name in models.generator_names() if name != "hrnet_w44"}
    assert all(c > 0 for c in cost.values())
    for b in (2, 3, 4):  # dilation changes the RF, not the cost
        assert len({cost[n] for n in UNETS if blocks(n) == b}) == 1
    assert cost["unet_2_44"] < cost["unet_3_96"] < cost["unet_4_200"] < cost["hrnet_w18_small"]
    assert cost["hrnet_w18_small"] < cost["hrnet_w18"]
    assert models.flops("unet_2_44", size=128) == 4 * cost["unet_2_44"]  # every layer scales with the area
