"""Faults and bad input (issue 13): each test is a probe of the fault-injection pass.

A refused resume leaves the run folder as it was; no NaN/inf weights reach a file;
a corrupt checkpoint is one clear error; resume refuses other data; the CLI prints
`error: ...` with a meaningful exit status; torn log rows are skipped; messages name
the culprit; run folders are locked, not silently overwritten, and keep the umask.

Pretraining runs use a tiny TIFF folder (24 images of 40 x 40 px), 32 px crops and
a few steps, so that each run takes about a second on a CPU.
"""
import errno
import hashlib
import json
import os
import pickle
import re
import signal
import stat
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
