"""The CPU fast path (issue 18): what "auto" picks, bf16 numerics against fp32, exact resume
within a mode, the mode recorded, inference in bf16, the run estimate and loader workers.

Speed itself is measured in benchmarks/cpu_fast_path.py, not here. The bf16 runs force
amp=True, so they run (slowly, emulated) on processors without native bf16 too.
"""
import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from emlib import cli, finetune, models, pretrain, run_folder, training
from emlib.data import catalog
from emlib.metrics import dice_scores

REPO = Path(__file__).resolve().parents[1]
REAL_NANO = REPO.parent / "shared/data/real/nanoparticles"
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


# ----------------------------------------------------------------------------- what "auto" picks


def test_cpuinfo_flags_decide_native_bf16():
    assert training.native_bf16_in("processor : 0\nflags : fpu avx512f avx512_bf16 amx_tile\n")
    assert training.native_bf16_in("flags\t\t: sse avx2 amx_bf16\n")
    assert training.native_bf16_in("Features\t: fp asimd bf16 i8mm\n")  # Arm
    assert not training.native_bf16_in("flags : fpu sse avx2 avx512f avx512bw\n")  # AVX-512 without BF16: emulated
    assert not training.native_bf16_in("model name : bf16 in the name is not a flag\n")


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_a_cpu_follows_native_bf16_and_the_network(monkeypatch, native):
    """On AVX-512 BF16 without AMX (AMD Zen 4) HRNet measured slower in channels_last; with AMX faster."""
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr(training, "cpu_has_amx", lambda: False)
    unet, hrnet, patchgan = models.create("unet_2_44"), models.create("hrnet_w18_small"), models.create("patchgan")
    assert training.amp_dtype(CPU, "auto") == (torch.bfloat16 if native else None)
    assert training.use_channels_last(CPU, "auto", unet) is native
    assert training.use_channels_last(CPU, "auto", patchgan) is native
    assert training.use_channels_last(CPU, "auto", hrnet) is False  # slower in channels_last on a CPU
    # explicit settings win over the processor
    assert training.amp_dtype(CPU, True) == torch.bfloat16 and training.amp_dtype(CPU, False) is None
    assert training.use_channels_last(CPU, True, hrnet) is True and training.use_channels_last(CPU, False, unet) is False
    monkeypatch.setattr(training, "cpu_has_amx", lambda: True)
    assert training.use_channels_last(CPU, "auto", hrnet) is native


def test_auto_on_cuda_is_on(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert training.amp_dtype(CUDA, "auto") == torch.float16
    assert not training.make_grad_scaler(CPU, torch.bfloat16).is_enabled() and not training.make_grad_scaler(CPU, None).is_enabled()
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert training.amp_dtype(CUDA, "auto") == torch.bfloat16
    assert training.use_channels_last(CUDA, "auto", models.create("hrnet_w18_small")) is True


@pytest.mark.parametrize("value", ["yes", "fp16", 1, None])
def test_bad_modes_are_named(value):
    with pytest.raises(ValueError, match="amp must be"):
        pretrain.PretrainConfig.toy(amp=value)
    with pytest.raises(ValueError, match="channels_last must be"):
        finetune.FinetuneConfig.toy(channels_last=value)


def test_cli_flags_for_the_modes():
    parser = cli.build_parser()
    for argv, amp in ((["--amp"], True), (["--no-amp"], False), (["--amp", "auto"], "auto"), (["--amp", "false"], False),
                      ([], "auto")):
        args = parser.parse_args(["pretrain", *argv])
        assert pretrain.config_from_args(args).amp == amp
    args = parser.parse_args(["finetune", "--toy", "--channels-last", "on"])
    assert finetune.config_from_args(args).channels_last is True
    with pytest.raises(SystemExit):
        parser.parse_args(["pretrain", "--amp", "fast"])


# ----------------------------------------------------------------------------- numerics: bf16 against fp32


def pretraining(cem_folder, output_dir, **overrides):
    fields = dict(data_root=str(cem_folder), image_size=32, batch_size=4, epochs=3, steps_per_epoch=4, val_limit=4,
                  output_dir=str(output_dir), deterministic=True)
    return pretrain.PretrainConfig.toy(**{**fields, **overrides})


def g_l1_curve(folder):
    return run_folder.read_log(Path(folder) / "log.csv")["g_l1"]


def test_bf16_pretraining_follows_fp32_and_records_its_mode(cem_folder, tmp_path):
    """Same seed, fp32 vs bf16 + channels_last: the L1 curve stays within 5 % step by step (bf16 keeps
    8 bits of mantissa, 0.4 % per rounding; 12 GAN steps compound it) and the final validation L1 differs
    by less than the spread between two fp32 seeds (seed noise) or 2 %, whichever is larger."""
    fp32 = pretrain.run(pretraining(cem_folder, tmp_path / "fp32"))
    bf16 = pretrain.run(pretraining(cem_folder, tmp_path / "bf16", amp=True, channels_last=True))
    other_seed = pretrain.run(pretraining(cem_folder, tmp_path / "seed1", seed=1))
    a, b = g_l1_curve(tmp_path / "fp32"), g_l1_curve(tmp_path / "bf16")
    assert len(a) == len(b) == 12
    assert np.max(np.abs(b - a) / a) < 0.05
    noise = max(abs(fp32["final_val_l1"] - other_seed["final_val_l1"]), 0.02 * fp32["final_val_l1"])
    assert abs(bf16["final_val_l1"] - fp32["final_val_l1"]) <= noise
    assert fp32["fast_path"] == {"amp": None, "channels_last": {"generator": False, "discriminator": False}}
    assert bf16["fast_path"] == {"amp": "bfloat16", "channels_last": {"generator": True, "discriminator": True}}
    assert json.loads((tmp_path / "bf16" / "summary.json").read_text())["fast_path"] == bf16["fast_path"]
    weights, _ = models.load_weights(tmp_path / "bf16" / "generator.safetensors")
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float32}  # fp32 on disk
    state = run_folder.load_checkpoint(tmp_path / "bf16" / "checkpoint.pt")
    running = [v for k, v in state["generator"].items() if "running_" in k]
    assert running and all(v.dtype == torch.float32 for v in running)  # BatchNorm statistics stay fp32
    assert all(v.dtype == torch.float32 for s in state["opt_g"]["state"].values() for v in s.values() if v.dim())


def test_bf16_resume_is_exact_and_another_mode_is_refused(cem_folder, tmp_path, monkeypatch):
    """amp="auto" on a bf16 processor, stopped by SIGTERM: resumed there, it continues bit for bit; resumed
    where "auto" means fp32 (another processor), it is refused before anything changes."""
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(training, "cpu_has_amx", lambda: True)
    fast = dict(amp="auto", channels_last="auto", max_steps=6, steps_per_epoch=4)
    pretrain.run(pretraining(cem_folder, tmp_path / "straight", **fast))
    real_step, calls = pretrain.gan_step, {"n": 0}

    def step_then_sigterm(*args, **kwargs):
        losses = real_step(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return losses

    monkeypatch.setattr(pretrain, "gan_step", step_then_sigterm)
    assert pretrain.run(pretraining(cem_folder, tmp_path / "resumed", **fast))["status"] == "interrupted"
    monkeypatch.setattr(pretrain, "gan_step", real_step)
    before = (tmp_path / "resumed" / "config.json").read_text()
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(ValueError, match="written with bfloat16 autocast.*fp32.*--amp / --no-amp"):
        pretrain.run(pretraining(cem_folder, tmp_path / "resumed", **fast), resume=True)
    assert (tmp_path / "resumed" / "config.json").read_text() == before  # a refused resume changes nothing
    stray = tmp_path / "stray"  # the advice can be followed: --amp --channels-last asks for the checkpoint's mode
    shutil.copytree(tmp_path / "resumed", stray)
    assert pretrain.run(pretraining(cem_folder, stray, **{**fast, "amp": True, "channels_last": True}),
                        resume=True)["status"] == "finished"
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: True)
    pretrain.run(pretraining(cem_folder, tmp_path / "resumed", **fast), resume=True)
    logs = [run_folder.read_log(tmp_path / name / "log.csv") for name in ("straight", "resumed")]
    for column in ("d_loss", "g_adv", "g_l1"):
        np.testing.assert_array_equal(logs[1][column], logs[0][column])  # bit-exact within the mode
    wa, _ = models.load_weights(tmp_path / "straight" / "generator.safetensors")
    wb, _ = models.load_weights(tmp_path / "resumed" / "generator.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_bf16_fine_tuning_follows_fp32(data_root, tmp_path):
    """Segmentation toy run, same seed: the training loss within 5 % epoch by epoch, and the best
    validation Dice within the seed-to-seed spread of fp32 (or 2 points)."""
    tiny = dict(data_root=data_root, crop=64, eval_crop=128, epoch_size=16, batch_size=4, epochs=4, test=False,
                deterministic=True)
    fp32 = finetune.run(finetune.FinetuneConfig.toy(output_dir=str(tmp_path / "fp32"), **tiny))
    bf16 = finetune.run(finetune.FinetuneConfig.toy(output_dir=str(tmp_path / "bf16"), amp=True, channels_last=True, **tiny))
    seed1 = finetune.run(finetune.FinetuneConfig.toy(output_dir=str(tmp_path / "seed1"), seed=1, **tiny))
    losses = [run_folder.read_log(tmp_path / n / "log.csv")["train_loss"] for n in ("fp32", "bf16")]
    assert np.max(np.abs(losses[1] - losses[0]) / losses[0]) < 0.05
    noise = max(abs(fp32["best_val_dice_percent"] - seed1["best_val_dice_percent"]), 2.0)
    assert abs(bf16["best_val_dice_percent"] - fp32["best_val_dice_percent"]) <= noise
    assert bf16["fast_path"] == {"amp": "bfloat16", "channels_last": {"model": True}}


# ----------------------------------------------------------------------------- inference on real images


def fine_tuned_models(model="unet_2_44"):
    """The study's fine-tuned models (results/real_small) of one architecture, one per dataset: by default the
    smallest, since bf16 on a CPU without bf16 units is slow (HRNet takes minutes per test split)."""
    found = {}
    for path in sorted((REPO / "results/real_small").glob("seg-*/best_model.safetensors")):
        config = json.loads((path.parent / "config.json").read_text())
        if config["model"] == model:
            found.setdefault(config["dataset"], (path, config))
    return found


@pytest.mark.skipif(not REAL_NANO.is_dir(), reason="real nanoparticle sets not found")
def test_bf16_prediction_scores_like_fp32_on_real_images():
    """emlib.predict in bf16 (amp=True) vs fp32, the study's fine-tuned models on the real test splits at the scale
    they were trained at: the thresholded masks' Dice against the labels differs by less than 0.5 point."""
    from emlib import predict

    trained = fine_tuned_models()
    assert set(trained) == {"emps", "msa_segtrack"}, f"fine-tuned unet_2_44 models under results/real_small: {trained}"
    for dataset, (weights, config) in trained.items():
        model = models.load(weights).eval()
        test = catalog.segmentation_dataset(dataset, REAL_NANO / dataset, "test", downsample=config["downsample"])
        scores = {True: [], False: []}
        for index in range(0, len(test), max(1, len(test) // 8)):  # 8 images of each test split
            image, mask = test[index]
            for amp in scores:
                logits = torch.from_numpy(predict(model, image[0], standardize=None, amp=amp))
                scores[amp].append(dice_scores((logits > 0).float()[None, None], mask[None]).item())
        difference = 100 * abs(np.mean(scores[True]) - np.mean(scores[False]))
        assert difference < 0.5, f"{dataset}: bf16 and fp32 Dice differ by {difference:.2f} points"


# ----------------------------------------------------------------------------- the estimate, loader workers


def test_the_estimate_warns_of_a_long_run_and_names_the_flags(monkeypatch, capsys):
    clock = {"now": 0.0}
    monkeypatch.setattr(training.time, "perf_counter", lambda: clock["now"])
    estimate = training.RunEstimate(steps_per_epoch=200, total_steps=400, steps_done=0,
                                    smaller_flags=pretrain.SMALLER_RUN_FLAGS)
    for _ in range(5):
        clock["now"] += 100.0  # every step takes 100 s
        estimate.step()
    err = capsys.readouterr().err
    assert "100 s/step" in err and "5.6 h per epoch" in err and "11.1 h for the 400 steps" in err
    assert "warning" in err and "--toy" in err and "--max-steps" in err and "--batch-size" in err
    assert err.count("estimate:") == 1  # said once


def test_a_short_run_gets_an_estimate_and_no_warning(monkeypatch, capsys):
    clock = {"now": 0.0}
    monkeypatch.setattr(training.time, "perf_counter", lambda: clock["now"])
    estimate = training.RunEstimate(steps_per_epoch=10, total_steps=30, steps_done=0, smaller_flags="--toy")
    for _ in range(30):
        clock["now"] += 1.0
        estimate.step()
    err = capsys.readouterr().err
    assert "estimate: 1 s/step, 10 s per epoch" in err and "warning" not in err


def test_loader_workers_never_exceed_the_cores(monkeypatch, capsys):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert training.loader_workers(8) == 2 and "8 requested, 2 core(s)" in capsys.readouterr().err
    assert training.loader_workers(1) == 1 and training.loader_workers(0) == 0
