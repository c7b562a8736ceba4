"""GAN pretraining: the loss formulas, the two updates, exact resume, crash safety,
the NaN guard, config errors, DDP on CPU, and that a toy run learns.

Runs use a tiny TIFF folder written here (40 images of 40 x 40 px) and 32 px crops,
so that each training run takes a few seconds on a CPU.
"""
import contextlib
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch

from emlib import cli, finite, models, pretrain, run_folder, session, training


def tiny_config(cem_folder, output_dir, **overrides):
    fields = dict(data_root=str(cem_folder), image_size=32, batch_size=2, epochs=2, steps_per_epoch=4, val_limit=4,
                  output_dir=str(output_dir), deterministic=True, log_every=1)
    return pretrain.PretrainConfig.toy(**{**fields, **overrides})


def read_losses(path):
    log = run_folder.read_log(path)
    return np.stack([log[c] for c in ("d_loss", "g_adv", "g_l1", "d_real", "d_fake")], axis=1), log["step"]


# ----------------------------------------------------------------------------- formulas and updates


def test_losses_equal_a_hand_computation():
    d_real = torch.tensor([[[[0.9, 1.2], [0.4, 1.0]]]])
    d_fake = torch.tensor([[[[0.1, -0.3], [0.5, 0.0]]]])
    fake, target = torch.tensor([0.2, 0.6, 1.0]), torch.tensor([0.5, 0.5, 0.0])
    hand_d = 0.5 * (((0.1**2 + 0.2**2 + 0.6**2 + 0.0**2) / 4) + ((0.1**2 + 0.3**2 + 0.5**2 + 0.0**2) / 4))
    assert pretrain.discriminator_loss(d_real, d_fake).item() == pytest.approx(hand_d, rel=1e-6)
    g_adv, g_l1 = pretrain.generator_losses(d_fake, fake, target)
    assert g_adv.item() == pytest.approx((0.9**2 + 1.3**2 + 0.5**2 + 1.0**2) / 4, rel=1e-6)
    assert g_l1.item() == pytest.approx((0.3 + 0.1 + 1.0) / 3, rel=1e-6)
    assert pretrain.generator_losses(None, fake, target)[0].item() == 0.0  # L1-only ablation


def test_discriminator_and_generator_steps_update_only_their_own_weights():
    torch.manual_seed(0)
    G, D = models.create("unet_2_44"), models.create("patchgan")
    opt_g, opt_d = (torch.optim.Adam(m.parameters(), lr=1e-2) for m in (G, D))
    scaler = training.make_grad_scaler(torch.device("cpu"), None)
    corrupted, target = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    config = pretrain.PretrainConfig.toy()

    def snapshot(model):
        return [p.detach().clone() for p in model.parameters()]

    def changed(model, before):
        return [not torch.equal(p, b) for p, b in zip(model.parameters(), before)]

    g0, d0 = snapshot(G), snapshot(D)
    fake = G(corrupted)
    pretrain.discriminator_step(D, opt_d, scaler, corrupted, target, fake, contextlib.nullcontext)
    assert not any(changed(G, g0)) and all(changed(D, d0))

    g1, d1 = snapshot(G), snapshot(D)
    pretrain.generator_step(opt_g, D, scaler, corrupted, target, fake, config, contextlib.nullcontext)
    assert not any(changed(D, d1)) and any(changed(G, g1))
    assert all(p.requires_grad for p in D.parameters())  # D is unfrozen again


# ----------------------------------------------------------------------------- runs


def test_resume_after_sigterm_continues_exactly(cem_folder, tmp_path, monkeypatch):
    straight = pretrain.run(tiny_config(cem_folder, tmp_path / "straight", max_steps=5, steps_per_epoch=3))

    real_step, calls = pretrain.gan_step, {"n": 0}

    def step_then_sigterm(*args, **kwargs):
        losses = real_step(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:  # mid-epoch (3 steps per epoch)
            os.kill(os.getpid(), signal.SIGTERM)
        return losses

    monkeypatch.setattr(pretrain, "gan_step", step_then_sigterm)
    stopped = pretrain.run(tiny_config(cem_folder, tmp_path / "resumed", max_steps=5, steps_per_epoch=3))
    assert stopped == {"status": "interrupted", "signal": "SIGTERM", "step": 2, "output_dir": str(tmp_path / "resumed")}
    assert not (tmp_path / "resumed" / "summary.json").exists()
    monkeypatch.setattr(pretrain, "gan_step", real_step)
    resumed = pretrain.run(tiny_config(cem_folder, tmp_path / "resumed", max_steps=5, steps_per_epoch=3), resume=True)

    (a, steps_a), (b, steps_b) = read_losses(tmp_path / "straight" / "log.csv"), read_losses(tmp_path / "resumed" / "log.csv")
    assert steps_a.tolist() == steps_b.tolist() == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
    assert resumed["final_val_l1"] == pytest.approx(straight["final_val_l1"], abs=1e-6)
    wa, _ = models.load_weights(tmp_path / "straight" / "generator.safetensors")
    wb, _ = models.load_weights(tmp_path / "resumed" / "generator.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(cem_folder, tmp_path, monkeypatch):
    config = tiny_config(cem_folder, tmp_path, max_steps=4, checkpoint_every=2)
    real_save, calls = torch.save, {"n": 0}

    def save_that_crashes_the_second_time(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            f.write(b"half a checkpoint")
            raise OSError("simulated crash mid-write")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_that_crashes_the_second_time)
    with pytest.raises(OSError, match="simulated crash"):
        pretrain.run(config)
    monkeypatch.setattr(torch, "save", real_save)
    assert run_folder.load_checkpoint(tmp_path / "checkpoint.pt")["position"]["step"] == 2
    assert not list(tmp_path.glob(".checkpoint.pt.*"))  # the temp file is gone
    assert pretrain.run(config, resume=True)["steps"] == 4


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(cem_folder, tmp_path, monkeypatch):
    real_losses, calls = pretrain.generator_losses, {"n": 0}

    def losses_going_nan(d_fake, fake, target):
        calls["n"] += 1
        adv, l1 = real_losses(d_fake, fake, target)
        return (adv * float("nan"), l1) if calls["n"] >= 3 else (adv, l1)

    monkeypatch.setattr(pretrain, "generator_losses", losses_going_nan)
    with pytest.raises(finite.NonFiniteLossError, match="g_adv = nan at step 3"):
        pretrain.run(tiny_config(cem_folder, tmp_path, max_steps=6, checkpoint_every=2))
    state = run_folder.load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["position"]["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["generator"].values())
    assert not (tmp_path / "summary.json").exists()


def test_resume_with_another_generator_is_refused(cem_folder, tmp_path):
    pretrain.run(tiny_config(cem_folder, tmp_path, max_steps=1))
    with pytest.raises(ValueError, match="model: 'unet_2_44' -> 'unet_2_84'"):
        pretrain.run(tiny_config(cem_folder, tmp_path, max_steps=2, model="unet_2_84"), resume=True)


@pytest.mark.parametrize("overrides, error, field", [
    (dict(model="unet_9_999"), ValueError, "model"),
    (dict(model="patchgan"), ValueError, "model"),
    (dict(lr=-1e-4), ValueError, "lr"),
    (dict(image_size=16), ValueError, "image_size"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(corrupt_on="gpu"), ValueError, "corrupt_on"),
    (dict(noise_std=(0.2, 0.1)), ValueError, "noise_std"),
])
def test_bad_config_values_name_the_field(overrides, error, field):
    with pytest.raises(error, match=field):
        pretrain.PretrainConfig.toy(**overrides)


def test_the_config_holds_values_and_the_run_checks_data_root(tmp_path):
    config = pretrain.PretrainConfig.toy(data_root="/no/such/folder", output_dir=str(tmp_path / "run"))
    assert pretrain.PretrainConfig.from_dict(config.to_dict()) == config  # a run folder loads without its data
    with pytest.raises(FileNotFoundError, match="data_root folder not found: /no/such/folder"):
        pretrain.run(config)
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


def test_image_size_the_generator_cannot_take_is_refused(cem_folder, tmp_path):
    with pytest.raises(ValueError, match="image_size=34 must be a multiple of 4"):
        pretrain.run(tiny_config(cem_folder, tmp_path, image_size=34))


def test_config_dict_round_trip_and_unknown_keys():
    config = pretrain.PretrainConfig.toy(betas=(0.4, 0.9))
    data = json.loads(json.dumps(config.to_dict()))
    assert pretrain.PretrainConfig.from_dict(data) == config
    with pytest.raises(ValueError, match="learning_rate"):
        pretrain.PretrainConfig.from_dict({**data, "learning_rate": 1.0})


def test_runs_written_before_the_renames_still_load_and_resume(cem_folder, tmp_path):
    out = tmp_path / "run"
    pretrain.run(tiny_config(cem_folder, out, max_steps=1))
    config_json = json.loads((out / "config.json").read_text())
    old_config = {("generator" if k == "model" else k): v for k, v in config_json.items()}
    (out / "config.json").write_text(json.dumps(old_config))  # as the real-data sweep wrote them
    state = run_folder.load_checkpoint(out / "checkpoint.pt")
    run_folder.save_checkpoint(out / "checkpoint.pt", {**state, "config": old_config})
    (out / "validation.csv").rename(out / "val.csv")  # the validation log's old name
    assert run_folder.run_file(out, "validation.csv") == out / "val.csv"
    assert pretrain.PretrainConfig.from_dict(old_config).model == "unet_2_44"
    assert cli.main(["pretrain", "--config", str(out / "config.json"), "--max-steps", "2", "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 2
    assert json.loads((out / "config.json").read_text())["model"] == "unet_2_44"
    assert not (out / "val.csv").exists() and run_folder.read_log(out / "validation.csv")["step"].tolist() == [1, 2]


def test_the_discriminator_comes_from_the_registry(cem_folder, tmp_path):
    generator, discriminator = pretrain.build_models(tiny_config(cem_folder, tmp_path))
    assert (generator.name, discriminator.name) == ("unet_2_44", "patchgan")


def test_toy_run_lowers_validation_l1_and_exports_the_generator(cem_folder, tmp_path):
    config = tiny_config(cem_folder, tmp_path, epochs=3, lr=1e-2)
    torch.manual_seed(config.seed)
    untrained, _ = pretrain.build_models(config)
    _, val_set, _ = pretrain.build_datasets(config, cem_folder)
    before = pretrain.validation_l1(untrained, val_set, config, session.DistributedContext())
    summary = pretrain.run(config)
    val = [v for _, _, v in summary["val_l1"]]
    assert len(val) == 3 and val[-1] < min(val[:-1]) and val[-1] < 0.9 * before
    card = json.loads((tmp_path / "model_card.json").read_text())
    assert card["model"] == "unet_2_44" and card["steps"] == 12 and card["final_val_l1"] == val[-1]
    assert card["manifest_hash"] and card["source"] == "real" and card["config"]["lr"] == 1e-2
    assert models.load(tmp_path / "generator.safetensors").name == "unet_2_44"
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "finished"


def test_cli_reads_a_config_file_and_flags_override_it(cem_folder, tmp_path):
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({"image_size": 32, "batch_size": 4, "val_limit": 4, "lr": 5e-4}))
    out = tmp_path / "run"
    assert cli.main(["pretrain", "--toy", "--config", str(config_file), "--data-root", str(cem_folder),
                     "--max-steps", "2", "--lr", "1e-3", "--no-flip", "--output-dir", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert (saved["lr"], saved["batch_size"], saved["max_steps"], saved["flip"]) == (1e-3, 4, 2, False)
    assert (out / "summary.json").exists()


def test_ddp_with_two_gloo_processes_trains_and_only_rank0_writes(cem_folder, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
           "-m", "emlib", "pretrain", "--toy", "--data-root", str(cem_folder), "--image-size", "32",
           "--batch-size", "2", "--epochs", "1", "--steps-per-epoch", "3", "--val-limit", "4", "--output-dir", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["images_seen"] == 3 * 2 * 2
    log = run_folder.read_log(out / "log.csv")
    assert log["step"].tolist() == [1, 2, 3]  # one row per step: rank 1 did not log
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.json", "generator.safetensors",
                                                     "log.csv", "manifest.json", "model_card.json", "summary.json", "validation.csv"]
    state = run_folder.load_checkpoint(out / "checkpoint.pt")  # loads in a single process
    models.create("unet_2_44").load_state_dict(training.strip_module_prefix(state["generator"]))


def test_a_folder_of_ones_own_images_trains_on_every_image_by_default(cem_folder, tmp_path):
    config = pretrain.PretrainConfig(data_root=str(cem_folder), output_dir=str(tmp_path / "run"))  # the README's command
    train, _, _ = pretrain.build_datasets(config, cem_folder)
    assert len(train) == 44 - 2 * 4  # every image but the val and test ones
    with pytest.raises(ValueError, match=r"subset=100 but the folder .* supplies 36 train images; .* --subset none"):
        pretrain.build_datasets(pretrain.PretrainConfig(data_root=str(cem_folder), subset=100,
                                                        output_dir=str(tmp_path / "run2")), cem_folder)
