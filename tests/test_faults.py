"""Faults and bad input (issues 13 and 22): each test is a probe of a fault-injection pass.

A refused resume leaves the run folder as it was; no NaN/inf weights reach a file;
a corrupt checkpoint is one clear error; resume refuses other data; the CLI prints
`error: ...` with a meaningful exit status; torn log rows are skipped; messages name
the culprit; run folders are locked, not silently overwritten, and keep the umask.

Pretraining runs use a tiny TIFF folder (24 images of 40 x 40 px), 32 px crops and
a few steps, so that each run takes about a second on a CPU. The signal tests start
real processes (a run with loader workers, a sweep and its run) and take seconds each.
"""
import errno
import hashlib
import json
import os
import pickle
import re
import signal
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from safetensors.torch import save_file
from torch.utils.data import Subset

from emlib import cli, finite, models, pretrain, run_folder, training
from emlib.data import ensure_synthetic
from emlib.finetune import FinetuneConfig, registry_model, run
from emlib.runs import load_finetuned

REPO = Path(__file__).resolve().parents[1]



def write_cem_folder(folder, n=24, seed=0):
    """A CEM500K-like folder of smooth uint8 TIFF patches."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:40, :40] / 40
    for i in range(n):
        fx, fy, phase = rng.uniform(1, 4, 2).tolist() + [rng.uniform(0, 6)]
        image = 0.3 + 0.25 * np.sin(2 * np.pi * (fx * xx + fy * yy) + phase) + 0.05 * rng.standard_normal((40, 40))
        tifffile.imwrite(folder / f"patch{i:03d}.tif", (np.clip(image, 0, 1) * 255).astype(np.uint8))
    return folder


@pytest.fixture(scope="module")
def cem_folder(tmp_path_factory):
    return write_cem_folder(tmp_path_factory.mktemp("cem500k"))


def tiny(cem_folder, output_dir, **overrides):
    fields = dict(data_root=str(cem_folder), image_size=32, batch_size=2, epochs=1, steps_per_epoch=3, max_steps=2,
                  val_limit=2, output_dir=str(output_dir), deterministic=True)
    return pretrain.PretrainConfig.toy(**{**fields, **overrides})


def tiny_cli(cem_folder, output_dir, max_steps=2):
    """The command line of `tiny(cem_folder, output_dir, max_steps=max_steps)`."""
    return ["pretrain", "--toy", "--data-root", cem_folder, "--image-size", 32, "--batch-size", 2, "--epochs", 1,
            "--steps-per-epoch", 3, "--max-steps", max_steps, "--val-limit", 2, "--deterministic", "--output-dir", output_dir]


def snapshot(folder):
    """{name: sha256 of its bytes} of every file in a folder: what "untouched" means."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(cem_folder, tmp_path_factory):
    """A finished 2-step pretraining run; tests copy it before changing anything."""
    out = tmp_path_factory.mktemp("finished") / "run"
    pretrain.run(tiny(cem_folder, out))
    return out


def copy_run(source, target):
    target.mkdir(parents=True)
    for path in source.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


# ----------------------------------------------------------------------------- 1. a refused resume touches nothing


@pytest.mark.parametrize("overrides", [dict(model="unet_2_84"), dict(seed=3), dict(image_size=64)])
def test_refused_resume_leaves_the_run_folder_as_it_was(cem_folder, finished_run, tmp_path, overrides):
    out = copy_run(finished_run, tmp_path / "run")
    before = snapshot(out)
    with pytest.raises(ValueError, match="cannot resume"):
        pretrain.run(tiny(cem_folder, out, max_steps=3, **overrides), resume=True)
    assert snapshot(out) == before  # config.json not rewritten, summary.json still there


@pytest.fixture(scope="module")
def temimagenet(tmp_path_factory):
    """A TEMImageNet release folder of 24 samples, copied from the synthetic set."""
    source = Path(ensure_synthetic(os.environ.get("EMLIB_DATA") or REPO / "data" / "synthetic")) / "temimagenet"
    return copy_temimagenet(source, tmp_path_factory.mktemp("temimagenet"), 24)


def copy_temimagenet(source, target, n):
    """The first n sample ids of a TEMImageNet folder (every sub-folder)."""
    for folder in (p for p in source.iterdir() if p.is_dir()):
        (target / folder.name).mkdir(parents=True, exist_ok=True)
        for path in sorted(folder.iterdir())[:n]:
            (target / folder.name / path.name).write_bytes(path.read_bytes())
    return target


def tiny_finetune(data_root, output_dir, **overrides):
    fields = dict(task="denoising", data_root=str(data_root), epochs=1, epoch_size=4, batch_size=2, crop=32, eval_crop=32,
                  test=False, output_dir=str(output_dir), deterministic=True)
    return FinetuneConfig.toy(**{**fields, **overrides})


def test_refused_finetune_resume_keeps_the_finished_run_usable(temimagenet, tmp_path):
    out = tmp_path / "run"
    run(tiny_finetune(temimagenet, out))
    before = snapshot(out)
    with pytest.raises(ValueError, match="model: 'unet_2_44' -> 'unet_2_84'"):
        run(tiny_finetune(temimagenet, out, epochs=2, model="unet_2_84"), resume=True)
    assert snapshot(out) == before
    model, config = load_finetuned(out)
    assert config.model == "unet_2_44" and registry_model(model).name == "unet_2_44"


def test_load_finetuned_refuses_weights_of_another_architecture(tmp_path):
    config = FinetuneConfig.toy(model="unet_2_84", output_dir=str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    models.save_weights(models.create("unet_2_44"), tmp_path / "best_model.safetensors")  # same tensor shapes
    with pytest.raises(ValueError, match="unet_2_44, not unet_2_84"):
        load_finetuned(tmp_path)


# ----------------------------------------------------------------------------- 3. non-finite weights never escape


def test_checkpoint_with_nan_weights_is_refused_and_the_previous_one_kept(tmp_path):
    path = tmp_path / "checkpoint.pt"
    run_folder.save_checkpoint(path, {"model": {"w": torch.ones(3)}, "step": 1})
    bad = {"model": {"w": torch.tensor([1.0, float("nan"), float("inf")])}, "step": 2}
    with pytest.raises(FloatingPointError, match=r"model\.w holds 2 NaN/inf value\(s\) of 3.*lower lr") as info:
        run_folder.save_checkpoint(path, bad)
    assert isinstance(info.value, finite.NonFiniteWeightsError)
    assert run_folder.load_checkpoint(path)["step"] == 1


def test_a_diverging_update_never_reaches_a_checkpoint_or_the_export(cem_folder, tmp_path, monkeypatch):
    """The loss of step 3 is finite (computed before the update); the update makes a BatchNorm buffer inf."""
    real_step, calls = pretrain.gan_step, {"n": 0}

    def step_that_diverges(G, *args, **kwargs):
        losses = real_step(G, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            bn = next(m for m in training.unwrap_model(G).modules() if isinstance(m, torch.nn.BatchNorm2d))
            bn.running_var.fill_(float("inf"))
        return losses

    monkeypatch.setattr(pretrain, "gan_step", step_that_diverges)
    with pytest.raises(FloatingPointError, match="running_var"):
        pretrain.run(tiny(cem_folder, tmp_path, max_steps=3, checkpoint_every=1))
    state = run_folder.load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["position"]["step"] == 2 and not finite.nonfinite_tensors(state)
    assert not (tmp_path / "generator.safetensors").exists() and not (tmp_path / "summary.json").exists()


def test_export_with_nan_weights_is_refused_and_the_old_file_kept(tmp_path):
    path = tmp_path / "generator.safetensors"
    model = models.create("unet_2_44")
    models.save_weights(model, path)
    before = path.read_bytes()
    with torch.no_grad():
        next(model.parameters())[0].fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=str(path)):
        models.save_weights(model, path)
    assert path.read_bytes() == before


def test_weight_transfer_refuses_non_finite_tensors(tmp_path):
    source = models.create("unet_2_44")
    state = {k: v.clone().contiguous() for k, v in source.state_dict().items()}
    key = next(k for k in state if k.endswith("running_var"))
    state[key][0] = float("inf")
    path = tmp_path / "generator.safetensors"
    save_file(state, str(path), metadata={"name": "unet_2_44", "emlib": "{}"})
    with pytest.raises(FloatingPointError, match=rf"{key}.*{path}"):
        models.transfer_weights(models.create("unet_2_44"), path)


def test_lr_may_change_on_resume_and_the_optimiser_gets_it(cem_folder, tmp_path):
    pretrain.run(tiny(cem_folder, tmp_path, max_steps=2))
    pretrain.run(tiny(cem_folder, tmp_path, max_steps=3, lr=1e-5), resume=True)
    state = run_folder.load_checkpoint(tmp_path / "checkpoint.pt")
    assert [g["lr"] for g in state["opt_g"]["param_groups"] + state["opt_d"]["param_groups"]] == [1e-5, 1e-5]
    log = run_folder.read_log(tmp_path / "log.csv")
    assert log["step"].tolist() == [1, 2, 3] and log["lr"].tolist() == [2e-4, 2e-4, 1e-5]


# ----------------------------------------------------------------------------- 5. a corrupt checkpoint: one clear error


def corrupt_files(valid: bytes):
    class Payload:  # a pickled object: refused, never run
        def __reduce__(self):
            return (print, ("pwned",))

    def torch_bytes(obj):
        import io

        buffer = io.BytesIO()
        torch.save(obj, buffer)
        return buffer.getvalue()

    return {
        "empty": b"",
        "truncated": valid[: len(valid) // 2],
        "random bytes": np.random.default_rng(0).bytes(4096),
        "a tensor": torch_bytes(torch.ones(3)),
        "another structure": torch_bytes({"weights": torch.ones(3)}),
        "a pickle payload": pickle.dumps(Payload()),
    }


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch, reading the raw pickle
@pytest.mark.parametrize("kind", ["empty", "truncated", "random bytes", "a tensor", "another structure", "a pickle payload"])
def test_corrupt_checkpoint_is_one_error_naming_the_file(cem_folder, finished_run, tmp_path, kind):
    out = copy_run(finished_run, tmp_path / "run")
    checkpoint = out / "checkpoint.pt"
    checkpoint.write_bytes(corrupt_files((finished_run / "checkpoint.pt").read_bytes())[kind])
    before = snapshot(out)
    with pytest.raises(ValueError) as info:  # not torch's RuntimeError / EOFError / UnpicklingError
        pretrain.run(tiny(cem_folder, out, max_steps=3), resume=True)
    assert isinstance(info.value, run_folder.CheckpointError)
    message = str(info.value)
    assert str(checkpoint) in message and "without --resume" in message
    assert "weights_only" not in message
    assert snapshot(out) == before


# ----------------------------------------------------------------------------- 6. resume refuses other data


def test_resume_on_other_data_is_refused(cem_folder, tmp_path):
    pretrain.run(tiny(cem_folder, tmp_path / "run"))
    half = write_cem_folder(tmp_path / "half", n=12)
    before = snapshot(tmp_path / "run")
    with pytest.raises(ValueError, match="the data differs|has changed"):  # the checkpoint's or the manifest's check
        pretrain.run(tiny(half, tmp_path / "run", max_steps=3), resume=True)
    assert snapshot(tmp_path / "run") == before
    assert pretrain.run(tiny(cem_folder, tmp_path / "run", max_steps=3), resume=True)["steps"] == 3


def test_finetune_resume_on_other_data_is_refused(temimagenet, tmp_path):
    run(tiny_finetune(temimagenet, tmp_path / "run"))
    fewer = copy_temimagenet(temimagenet, tmp_path / "fewer", 18)
    before = snapshot(tmp_path / "run")
    with pytest.raises(ValueError, match="the data differs"):
        run(tiny_finetune(fewer, tmp_path / "run", epochs=2), resume=True)
    assert snapshot(tmp_path / "run") == before
    moved = copy_temimagenet(temimagenet, tmp_path / "moved", 24)  # the same data elsewhere: fine
    assert run(tiny_finetune(moved, tmp_path / "run", epochs=2), resume=True)["epochs"] == 2


def test_data_fingerprint_sees_items_order_and_subsets_through_wrappers():
    class Items(torch.utils.data.Dataset):
        def __init__(self, sources):
            self.sources = sources

        def __len__(self):
            return len(self.sources)

        def __getitem__(self, index):
            return index

    class Wrapper(torch.utils.data.Dataset):  # like a crop / augmentation wrapper
        def __init__(self, dataset):
            self.dataset = dataset

        def __len__(self):
            return len(self.dataset)

        def __getitem__(self, index):
            return self.dataset[index]

    base = run_folder.data_fingerprint([Wrapper(Items(["a", "b", "c"])), Items(["d"])])
    assert base == run_folder.data_fingerprint([Wrapper(Items(["a", "b", "c"])), Items(["d"])])
    assert base != run_folder.data_fingerprint([Wrapper(Items(["b", "a", "c"])), Items(["d"])])  # reordered
    assert base != run_folder.data_fingerprint([Wrapper(Items(["a", "b"])), Items(["d"])])  # fewer
    assert base != run_folder.data_fingerprint([Wrapper(Items(["a", "b", "c"])), Items(["e"])])  # other val set
    full = Items(["a", "b", "c"])
    assert run_folder.data_fingerprint([Subset(full, [0, 2])]) != run_folder.data_fingerprint([Subset(full, [0, 1])])


# ----------------------------------------------------------------------------- 7. the CLI: one line, an exit status


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.err


def test_cli_prints_one_error_line_and_exits_2_for_bad_input(cem_folder, tmp_path, capsys):
    code, err = run_cli(capsys, "pretrain", "--toy", "--data-root", cem_folder, "--output-dir", tmp_path, "--seed", "-1")
    assert code == 2 and err.strip() == "error: seed must be >= 0, got -1"
    code, err = run_cli(capsys, "pretrain", "--toy", "--data-root", tmp_path / "missing", "--output-dir", tmp_path)
    assert code == 2 and err.startswith("error: data_root folder not found") and "Traceback" not in err
    with pytest.raises(ValueError, match="seed"):  # --traceback: the exception itself
        cli.main(["pretrain", "--toy", "--seed", "-1", "--traceback"])


def test_cli_exits_1_for_a_run_failure(cem_folder, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    with run_folder.lock_run_folder(out):
        code, err = run_cli(capsys, "pretrain", "--toy", "--data-root", cem_folder, "--output-dir", out)
    assert code == 1 and err.startswith("error: ") and "in use by another run" in err

    def bug(*args, **kwargs):
        raise KeyError("generator")

    monkeypatch.setattr(pretrain, "run", bug)  # an error nobody meant: its type, and where to look
    code, err = run_cli(capsys, "pretrain", "--toy", "--output-dir", out)
    assert code == 1 and err.strip() == "error: KeyError: 'generator' (run again with --traceback for the full traceback)"


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_run_exits_128_plus_the_signal(cem_folder, tmp_path, monkeypatch, capsys, signum, code):
    real_step = pretrain.gan_step

    def step_then_signal(*args, **kwargs):
        losses = real_step(*args, **kwargs)
        os.kill(os.getpid(), signum)
        return losses

    monkeypatch.setattr(pretrain, "gan_step", step_then_signal)
    assert run_cli(capsys, *tiny_cli(cem_folder, tmp_path, max_steps=3))[0] == code
    assert run_folder.load_checkpoint(tmp_path / "checkpoint.pt")["position"]["step"] == 1
    summary = pretrain.run(tiny(cem_folder, tmp_path, max_steps=3), resume=True)  # the API returns, never exits
    assert summary["status"] == "interrupted" and summary["signal"] == signal.Signals(signum).name


# ----------------------------------------------------------------------------- 8. torn log rows


def write_torn_log(path):
    path.write_text("step,loss,lr\n1,0.5,0.1\n2,0.4,0.1\n3,0.3")  # a crash in the middle of row 3


def test_torn_last_log_row_is_dropped_on_resume(tmp_path):
    path = tmp_path / "log.csv"
    write_torn_log(path)
    logger = run_folder.CSVLogger(path, ["step", "loss", "lr"], resume_step=5)
    logger.log({"step": 3, "loss": 0.25, "lr": 0.1})
    assert path.read_text().splitlines() == ["step,loss,lr", "1,0.5,0.1", "2,0.4,0.1", "3,0.25,0.1"]
    path.write_text("step,loss,lr\n1,0.5,0.1\n2,")  # torn inside the step column
    run_folder.CSVLogger(path, ["step", "loss", "lr"], resume_step=5)
    assert run_folder.read_log(path)["step"].tolist() == [1]


def test_read_log_skips_unparsable_rows(tmp_path):
    path = tmp_path / "log.csv"
    write_torn_log(path)
    assert run_folder.read_log(path)["step"].tolist() == [1, 2]
    path.write_text("step,loss,lr\n1,0.5,0.1\n2,0.4,0.1\n3,0.3,0.1e")
    assert run_folder.read_log(path)["loss"].tolist() == [0.5, 0.4]


def test_torn_results_row_is_dropped_on_resume(tmp_path):
    path = tmp_path / "validation.csv"
    path.write_text("epoch,l1\n1,0.5\n2,0.4\n3")  # a crash in the middle of row 3
    run_folder.keep_rows_up_to(path, "epoch", 5, ["epoch", "l1"])
    assert path.read_text().splitlines() == ["epoch,l1", "1,0.5", "2,0.4"]


# ----------------------------------------------------------------------------- 9. messages that name the culprit


@pytest.mark.parametrize("make", [pretrain.PretrainConfig.toy, FinetuneConfig.toy])
@pytest.mark.parametrize("overrides, match", [
    (dict(seed=-1), r"seed must be >= 0, got -1"),
    (dict(split_seed=-2), r"split_seed must be >= 0"),
    (dict(epochs="abc"), r"epochs must be an integer, got 'abc'"),
    (dict(lr=float("inf")), r"lr must be finite, got inf"),
    (dict(lr=float("nan")), r"lr must be finite"),
    (dict(lr="1e-3"), r"lr must be a number, got '1e-3'"),
    (dict(amp="false"), r"amp must be true, false or 'auto', got 'false'"),
    (dict(output_dir=5), r"output_dir must be a string, got 5"),
])
def test_bad_values_name_the_field_and_the_value(make, overrides, match):
    with pytest.raises(ValueError, match=match):
        make(**overrides)


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_malformed_config_json_names_the_file_and_line(tmp_path, capsys, command):
    path = tmp_path / "config.json"
    path.write_text('{\n  "epochs": 2,\n  "lr": 1e-3,,\n}\n')
    code, err = run_cli(capsys, command, "--toy", "--config", path, "--output-dir", tmp_path / "run")
    assert code == 2 and err.startswith(f"error: --config {path}: invalid JSON at line 3")
    path.write_text('["epochs", 2]')
    code, err = run_cli(capsys, command, "--toy", "--config", path, "--output-dir", tmp_path / "run")
    assert code == 2 and "expected a JSON object" in err and str(path) in err
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- 11. run folders


def test_a_second_run_into_a_locked_folder_is_refused(cem_folder, tmp_path):
    out = tmp_path / "run"
    with run_folder.lock_run_folder(out):
        with pytest.raises(run_folder.RunFolderLockedError, match=re.escape(f"{out} is in use by another run (process {os.getpid()};")):
            pretrain.run(tiny(cem_folder, out))
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # the refused run wrote nothing
    assert not out.exists()  # released, and the folder it created (empty) removed
    pretrain.run(tiny(cem_folder, out))
    assert not (out / ".lock").exists() and (out / "summary.json").exists()


def test_a_finished_run_is_not_overwritten_without_overwrite(cem_folder, finished_run, tmp_path, capsys):
    out = copy_run(finished_run, tmp_path / "run")
    before = snapshot(out)
    argv = tiny_cli(cem_folder, out, max_steps=1)
    code, err = run_cli(capsys, *argv)
    assert code == 2 and "holds a finished run" in err and "--overwrite" in err
    assert snapshot(out) == before
    with pytest.raises(ValueError, match="finished run"):
        pretrain.run(tiny(cem_folder, out), overwrite=False)
    assert run_cli(capsys, *argv, "--overwrite")[0] == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 1


def test_resume_without_a_checkpoint_says_so_and_starts_fresh(cem_folder, tmp_path, capsys):
    summary = pretrain.run(tiny(cem_folder, tmp_path / "run"), resume=True)
    assert summary["status"] == "finished" and summary["steps"] == 2
    assert f"resume: no checkpoint in {tmp_path / 'run'}; starting a new run" in capsys.readouterr().err


def test_run_files_get_the_umask_mode_and_stale_temp_files_go(cem_folder, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = out / ".checkpoint.pt.k2j3h4.tmp"
    stale.write_bytes(b"\0" * 1000)  # left by a run killed while writing its checkpoint
    old_mask = os.umask(0o027)
    try:
        pretrain.run(tiny(cem_folder, out))
    finally:
        os.umask(old_mask)
    assert not stale.exists()
    for name in ("config.json", "checkpoint.pt", "summary.json", "model_card.json", "generator.safetensors", "log.csv"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o640, name


def test_disk_full_during_a_checkpoint_says_so_and_keeps_the_previous_one(cem_folder, tmp_path, monkeypatch):
    real_save, calls = torch.save, {"n": 0}

    def save_on_a_full_disk(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] < 2:
            return real_save(obj, f, *args, **kwargs)
        f.write(b"part of a checkpoint")
        try:  # what torch.save does when the file's write fails with ENOSPC
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", save_on_a_full_disk)
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(OSError, match=re.escape(f"no space left on device while writing {path}; the previous checkpoint is kept")) as info:
        pretrain.run(tiny(cem_folder, tmp_path, max_steps=3, checkpoint_every=1))
    assert info.value.errno == errno.ENOSPC
    monkeypatch.setattr(torch, "save", real_save)
    assert run_folder.load_checkpoint(path)["position"]["step"] == 1
    assert not list(tmp_path.glob(".checkpoint.pt.*"))


# ============================================================================= issue 22: faults, round two

# ----------------------------------------------------------------------------- 1. only finished runs are aggregated


def write_results(run_dir, dice, finished):
    from emlib.results import SEGMENTATION_COLUMNS

    run_dir.mkdir(parents=True)
    run_folder.write_rows(run_dir / "results.csv", [{"dataset": "emps", "model": "U-Net_2_44", "init": "random", "epoch": 1,
                                                     "dice_percent": dice, "run_id": run_dir.name}], SEGMENTATION_COLUMNS)
    if finished:
        (run_dir / "summary.json").write_text(json.dumps({"status": "finished"}))


def test_aggregate_leaves_out_unfinished_runs_and_says_so(tmp_path, capsys):
    from emlib import sweep
    from emlib.results import read_rows

    write_results(tmp_path / "seg-done", 80.0, finished=True)
    write_results(tmp_path / "seg-diverged", 39.5, finished=False)
    assert sweep.aggregate(tmp_path) == {str(tmp_path / "results_segmentation.csv"): 1}
    assert [r["run_id"] for r in read_rows(tmp_path / "results_segmentation.csv")] == ["seg-done"]
    assert "left out 1 unfinished run(s) (no summary.json): seg-diverged" in capsys.readouterr().err


def test_a_finetune_run_diverging_in_epoch_1_scores_nothing(temimagenet, tmp_path, monkeypatch):
    """The losses stay finite; the update of step 2 (the epoch's last) makes a BatchNorm running_var inf."""
    from emlib import finetune

    real_optimizer, calls = finetune.make_optimizer, {"n": 0}

    def optimizer_that_diverges(config, model):
        optimizer = real_optimizer(config, model)
        real_step = optimizer.step

        def step(*args, **kwargs):
            result = real_step(*args, **kwargs)
            calls["n"] += 1
            if calls["n"] == 2:
                bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
                bn.running_var.fill_(float("inf"))
            return result

        optimizer.step = step
        return optimizer

    monkeypatch.setattr(finetune, "make_optimizer", optimizer_that_diverges)
    out = tmp_path / "run"
    with pytest.raises(FloatingPointError, match="running_var.*diverged in epoch 1: it is not scored.*there is no earlier checkpoint"):
        run(tiny_finetune(temimagenet, out, test=True))
    assert not (out / "validation.csv").exists() and not (out / "results.csv").exists()
    assert not (out / "checkpoint.pt").exists() and not (out / "summary.json").exists()


def test_a_non_finite_checkpoint_write_says_when_there_is_no_earlier_one(tmp_path):
    with pytest.raises(FloatingPointError, match="there is no earlier checkpoint"):
        run_folder.save_checkpoint(tmp_path / "checkpoint.pt", {"model": {"w": torch.tensor([float("nan")])}})


# ----------------------------------------------------------------------------- 2. split lists cannot leak


def write_segmentation_folder(root, stems, suffix=".png"):
    from PIL import Image

    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for stem in stems:
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(root / "images" / f"{stem}{suffix}")
        Image.fromarray(((rng.random((16, 16)) > 0.5) * 255).astype(np.uint8)).save(root / "masks" / f"{stem}.png")
    return root


@pytest.mark.parametrize("train, test, match", [
    ("im0\nim1\nim2\nim3\n", "im3\nim4\n", r"1 id\(s\) are listed in both .*train.csv and .*test.csv.*\['im3'\]"),
    ("im0\nim1\nim2\nim2\n", "im4\n", r"train.csv lists 1 id\(s\) more than once: \['im2'\]"),
])
def test_split_lists_that_overlap_or_repeat_ids_are_refused(tmp_path, train, test, match):
    from emlib.data import SegmentationFolder

    root = write_segmentation_folder(tmp_path, [f"im{i}" for i in range(5)])
    (root / "train.csv").write_text(train)
    (root / "test.csv").write_text(test)
    with pytest.raises(ValueError, match=match):
        SegmentationFolder(root, split="train")


def test_images_sharing_a_stem_are_named(tmp_path):
    from emlib.data import SegmentationFolder

    root = write_segmentation_folder(tmp_path, ["im0", "im1"])
    write_segmentation_folder(tmp_path, ["im0"], suffix=".tif")
    with pytest.raises(ValueError, match=r"images share a file stem.*\['im0.png', 'im0.tif'\]"):
        SegmentationFolder(root, split="train")


# ----------------------------------------------------------------------------- 3, 4. signals: loader workers, the sweep


def python_env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def wait_for_rows(path, n, process, timeout=120):
    """Wait until the CSV file `path` has n data rows (the run is training)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the process ended early with {process.returncode}"
        if path.is_file() and len(path.read_text().splitlines()) > n:
            return
        time.sleep(0.1)
    raise AssertionError(f"{path} did not get {n} rows in {timeout} s")


def test_sigterm_to_the_process_group_with_loader_workers_checkpoints(cem_folder, tmp_path):
    """What SLURM, docker stop and systemd do: SIGTERM to every process of the group, workers included."""
    import subprocess
    import sys

    out = tmp_path / "run"
    argv = [sys.executable, "-m", "emlib", *map(str, tiny_cli(cem_folder, out, max_steps=100_000)),
            "--epochs", "1000", "--workers", "2"]
    process = subprocess.Popen(argv, start_new_session=True, env=python_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_rows(out / "log.csv", 15, process)  # past the first epoch's end: fresh workers
        os.killpg(process.pid, signal.SIGTERM)
        output = process.communicate(timeout=120)[0]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 143, output[-2000:]
    assert "stopped by SIGTERM" in output and "killed by signal" not in output
    assert run_folder.load_checkpoint(out / "checkpoint.pt")["position"]["step"] >= 15


def test_loader_workers_ignore_stop_signals_and_run_the_given_init():
    seen = []
    init = training.worker_init(seen.append)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        init(3)
        assert [signal.getsignal(sig) for sig in previous] == [signal.SIG_IGN, signal.SIG_IGN] and seen == [3]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def write_sweep_spec(path, cem_folder, runs_dir, **config):
    import yaml

    fields = dict(data_root=str(cem_folder), image_size=32, batch_size=2, epochs=1000, val_limit=2, device="cpu",
                  amp=False, channels_last=False, workers=0, checkpoint_every=0, deterministic=True, **config)
    spec = {"runs_dir": str(runs_dir), "pretrain": {"models": ["unet_2_44"], "subsets": {"all": None}, "config": fields}}
    path.write_text(yaml.safe_dump(spec))
    return path


def test_sigterm_to_the_sweep_reaches_its_run_which_checkpoints(cem_folder, tmp_path):
    import subprocess
    import sys
    import time

    from emlib import sweep

    runs_dir = tmp_path / "runs"
    spec = write_sweep_spec(tmp_path / "spec.yaml", cem_folder, runs_dir)
    process = subprocess.Popen([sys.executable, "-m", "emlib", "sweep", str(spec)], env=python_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_dir = runs_dir / "pretrain-unet_2_44-all"
    try:
        wait_for_rows(run_dir / "log.csv", 3, process)
        process.send_signal(signal.SIGTERM)  # to the sweep only: it passes the signal on
        output = process.communicate(timeout=120)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, output[-2000:]
    assert "sweep stopped by SIGTERM" in output and "interrupted by SIGTERM (exit code 143)" in output
    rows = len((run_dir / "log.csv").read_text().splitlines())
    time.sleep(1.5)
    assert len((run_dir / "log.csv").read_text().splitlines()) == rows  # the run is not training on, orphaned
    assert not (run_dir / ".lock").exists() and not (runs_dir / ".lock").exists()
    assert run_folder.load_checkpoint(run_dir / "checkpoint.pt")["position"]["step"] >= 3
    assert run_folder.run_status(run_dir) == "unfinished"  # a rerun resumes it
    assert "stopped by SIGTERM" in (run_dir / "sweep.log").read_text()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's prctl")
def test_a_sweep_killed_by_sigkill_still_stops_its_run_which_checkpoints(cem_folder, tmp_path):
    """SIGKILL (the OOM killer, kill -9) cannot be forwarded: the run gets SIGTERM from the kernel instead."""
    import subprocess
    import time

    runs_dir = tmp_path / "runs"
    spec = write_sweep_spec(tmp_path / "spec.yaml", cem_folder, runs_dir)
    process = subprocess.Popen([sys.executable, "-m", "emlib", "sweep", str(spec)], env=python_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = runs_dir / "pretrain-unet_2_44-all"
    try:
        wait_for_rows(run_dir / "log.csv", 3, process)
        process.kill()
        process.wait(timeout=30)
        deadline = time.monotonic() + 120
        while (run_dir / ".lock").exists() and time.monotonic() < deadline:  # the run releases it as it stops
            time.sleep(0.2)
    finally:
        if process.poll() is None:
            process.kill()
    assert not (run_dir / ".lock").exists(), "the run trains on, orphaned"
    rows = len((run_dir / "log.csv").read_text().splitlines())
    time.sleep(1.5)
    assert len((run_dir / "log.csv").read_text().splitlines()) == rows
    assert run_folder.load_checkpoint(run_dir / "checkpoint.pt")["position"]["step"] >= 3
    assert run_folder.run_status(run_dir) == "unfinished"  # a rerun resumes it
    assert "stopped by SIGTERM" in (run_dir / "sweep.log").read_text()


def test_a_second_sweep_on_the_same_runs_folder_says_so_and_stops(tmp_path, monkeypatch, capsys):
    from emlib import sweep

    runs_dir = tmp_path / "runs"
    monkeypatch.setattr(sweep, "build_command", lambda *args, **kwargs: [])
    with run_folder.lock_run_folder(runs_dir, holder="sweep"):
        code, err = run_cli(capsys, "sweep", REPO / "experiments" / "paper.yaml", "--toy", "--runs-dir", runs_dir)
    assert code == 1 and f"{runs_dir} is in use by another sweep (process {os.getpid()}" in err
    assert not runs_dir.exists()  # nothing was run or written


# ----------------------------------------------------------------------------- 5. the sweep's config.json


def test_the_sweep_rewrites_a_torn_config_json_of_an_unfinished_run(tmp_path):
    from emlib import grid, sweep

    run = grid.expand_grid(grid.load_spec(REPO / "experiments" / "paper.yaml"), toy=True)[0]
    run_dir = tmp_path / run.run_id
    run_dir.mkdir()
    (run_dir / "config.json").write_text('{"model": "unet_2')  # torn by a crash
    argv, log = sweep.prepare(run, tmp_path, lambda run, run_dir, resume: ["true"])
    assert json.loads((run_dir / "config.json").read_text()) == run.config
    assert "did not parse" in Path(log).read_text()


# ----------------------------------------------------------------------------- 6. weights files


def broken_weights(path, kind):
    model = models.create("unet_2_44")
    if kind == "a pickle renamed":
        torch.save(model.state_dict(), path)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        models.save_weights(model, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "a malformed emlib field":
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
                  metadata={"name": "unet_2_44", "emlib": "{not json"})
    return path


@pytest.mark.parametrize("kind", ["a pickle renamed", "empty", "truncated", "a malformed emlib field"])
def test_a_broken_weights_file_is_one_error_naming_it(tmp_path, capsys, kind):
    path = broken_weights(tmp_path / "generator.safetensors", kind)
    with pytest.raises(models.WeightsFileError, match=re.escape(str(path))):
        models.load(path)
    code, err = run_cli(capsys, "finetune", "--toy", "--task", "denoising", "--init", path, "--output-dir", tmp_path / "run")
    assert code == 2 and str(path) in err and "Traceback" not in err and "SafetensorError" not in err


def test_export_of_a_run_with_a_broken_weights_file_names_it(temimagenet, tmp_path, capsys):
    out = tmp_path / "run"
    run(tiny_finetune(temimagenet, out, test=True))
    weights = broken_weights(out / "best_model.safetensors", "truncated")
    code, err = run_cli(capsys, "export", "bioimageio", out, "--out", tmp_path / "model.zip")
    assert code == 2 and str(weights) in err and "not a readable safetensors file" in err


def test_models_load_refuses_non_finite_tensors(tmp_path):
    state = {k: v.clone().contiguous() for k, v in models.create("unet_2_44").state_dict().items()}
    key = next(k for k in state if k.endswith("weight"))
    state[key].view(-1)[0] = float("nan")
    path = tmp_path / "generator.safetensors"
    save_file(state, str(path), metadata={"name": "unet_2_44", "emlib": "{}"})
    with pytest.raises(FloatingPointError, match=rf"{re.escape(key)}.*{re.escape(str(path))}"):
        models.load(path)


# ----------------------------------------------------------------------------- 7. a NaN checkpoint is refused on load


def test_resume_refuses_a_checkpoint_with_nan_tensors_before_anything_changes(cem_folder, finished_run, tmp_path):
    out = copy_run(finished_run, tmp_path / "run")
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    key = next(iter(state["generator"]))
    state["generator"][key].view(-1)[0] = float("nan")
    torch.save(state, out / "checkpoint.pt")  # another writer: save_checkpoint would refuse it
    before = snapshot(out)
    with pytest.raises(run_folder.CheckpointError, match=rf"holds NaN/inf: generator\.{re.escape(key)}"):
        pretrain.run(tiny(cem_folder, out, max_steps=3), resume=True)
    assert snapshot(out) == before


# ----------------------------------------------------------------------------- 8. sweep specs


@pytest.mark.parametrize("text, match", [
    (b"pretrain:\n  models: [unet_2_44\n  subsets: {a: 1}\n", r"invalid YAML at line \d+, column \d+"),
    (b"- pretrain: {}\n- toy: {}\n", r"expected a mapping of sections .* got a list"),
    (b"pretrain:\n  models: [caf\xe9]\n", r"is not a UTF-8 text file"),
])
def test_a_malformed_sweep_spec_is_one_line_naming_the_file(tmp_path, capsys, text, match):
    path = tmp_path / "spec.yaml"
    path.write_bytes(text)
    code, err = run_cli(capsys, "sweep", path, "--dry-run")
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(path) in err
    assert re.search(match, err), err


def test_dry_run_builds_every_run_config(cem_folder, tmp_path, capsys):
    import yaml

    spec = yaml.safe_load(write_sweep_spec(tmp_path / "spec.yaml", cem_folder, tmp_path / "runs").read_text())
    finetune = {"datasets": ["emps"], "models": ["unet_2_44"], "inits": ["random", "all"],
                "config": {"data_root": str(tmp_path / "no-such-data")}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**spec, "segmentation": finetune}))
    code, err = run_cli(capsys, "sweep", path, "--dry-run")  # a missing data_root: a warning in a dry run
    assert code == 0 and f"warning: data_root {tmp_path / 'no-such-data'} not found here (2 run(s)" in err
    code, err = run_cli(capsys, "sweep", path)  # and an error before anything runs
    assert code == 2 and "data_root not found" in err and not (tmp_path / "runs").exists()
    for section in ({**finetune, "config": {"bogus_field": 1}}, {**finetune, "datasets": ["NoSuchSet"], "config": {}}):
        path.write_text(yaml.safe_dump({**spec, "segmentation": section}))
        code, err = run_cli(capsys, "sweep", path, "--dry-run")
        assert code == 2 and "2 run(s) would fail at their start" in err
        assert "seg-" in err and ("bogus_field" in err or "NoSuchSet" in err)


# ----------------------------------------------------------------------------- 9. predict refuses NaN / empty images


@pytest.mark.parametrize("bad, match", [(float("nan"), "1 NaN or Inf pixel"), (float("inf"), "1 NaN or Inf pixel"), (None, "empty")])
def test_predict_refuses_non_finite_and_empty_images(bad, match):
    import emlib

    image = np.zeros((0, 0), np.float32) if bad is None else np.random.default_rng(0).random((40, 40)).astype(np.float32)
    if bad is not None:
        image[5, 7] = bad
    with pytest.raises(ValueError, match=match):
        emlib.predict(models.create("unet_2_44"), image)


# ----------------------------------------------------------------------------- 10. a TIFF memory bomb is never decoded


def test_a_tiff_whose_header_is_over_the_pixel_cap_is_not_decoded(tmp_path, monkeypatch):
    from emlib.data import images

    path = tmp_path / "bomb.tif"
    tifffile.imwrite(path, np.zeros((64, 64), np.uint8))
    monkeypatch.setattr(images, "MAX_PIXELS", 64 * 63)  # a 20000 x 20000 header against the real cap, in miniature

    def decode(*args, **kwargs):
        raise AssertionError("decoded before the size check")

    monkeypatch.setattr(tifffile.TiffFile, "asarray", decode)
    with pytest.raises(ValueError, match=re.escape(f"image {path} claims a shape of 64 x 64 = 4,096 values, over the limit")):
        images.read_raw(path)


# ----------------------------------------------------------------------------- 11. smaller faults


@pytest.mark.parametrize("change", ["data_root", "split_seed"])
def test_overwrite_replaces_a_finished_run_on_other_data(cem_folder, finished_run, tmp_path, capsys, change):
    out = copy_run(finished_run, tmp_path / "run")
    data_root = write_cem_folder(tmp_path / "other", n=12, seed=1) if change == "data_root" else cem_folder
    argv = [*tiny_cli(data_root, out), "--overwrite"] + (["--split-seed", 1] if change == "split_seed" else [])
    code, err = run_cli(capsys, *argv)
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n_files"] == (12 if change == "data_root" else 24) and manifest["seed"] == (1 if change == "split_seed" else 0)


def test_output_dir_naming_a_file_is_bad_input(cem_folder, tmp_path, capsys):
    path = tmp_path / "a_file"
    path.write_text("mine")
    code, err = run_cli(capsys, *tiny_cli(cem_folder, path))
    assert code == 2 and f"{path} is a file, not a folder" in err and path.read_text() == "mine"


def test_export_refuses_an_existing_out_without_overwrite(tmp_path, capsys):
    out = tmp_path / "model.zip"
    out.write_bytes(b"an earlier package")
    code, err = run_cli(capsys, "export", "bioimageio", tmp_path / "run", "--out", out)
    assert code == 2 and f"--out {out} exists" in err and "--overwrite" in err
    code, err = run_cli(capsys, "export", "bioimageio", tmp_path / "run", "--out", out, "--overwrite")
    assert code == 2 and "run folder not found" in err  # past the check: the run folder is the next problem
    assert out.read_bytes() == b"an earlier package"


def test_a_full_disk_at_start_names_the_file(cem_folder, tmp_path, monkeypatch):
    real_write = os.write

    def write_on_a_full_disk(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(run_folder.LOCK_NAME):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write_on_a_full_disk)
    out = tmp_path / "run"
    with pytest.raises(OSError, match=re.escape(f"no space left on device while writing {out / run_folder.LOCK_NAME}; "
                                                "the run did not start")):
        pretrain.run(tiny(cem_folder, out))
    assert not (out / run_folder.LOCK_NAME).exists()


def test_resume_on_data_with_the_same_names_but_other_pixels_is_refused(tmp_path):
    data_root = write_cem_folder(tmp_path / "data")
    out = tmp_path / "run"
    pretrain.run(tiny(data_root, out))
    size = (data_root / "patch005.tif").stat().st_size
    write_cem_folder(tmp_path / "data", seed=1)  # the same names and sizes, other pixels
    assert (data_root / "patch005.tif").stat().st_size == size
    before = snapshot(out)
    with pytest.raises(ValueError, match="the data differs"):
        pretrain.run(tiny(data_root, out, max_steps=3), resume=True)
    assert snapshot(out) == before
