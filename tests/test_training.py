"""The shared run machinery: checkpoints, RNG state, sampler position, logs, guards."""
import dataclasses
import os
import random
import signal
import time

import numpy as np
import pytest
import torch

from emlib import figures, finite, run_folder, session, training
from emlib.config import config_from_dict, config_to_dict
from emlib.intensity import FROM_CENTERED, TO_CENTERED, CenteredIntensities, from_centered, to_centered


def test_atomic_checkpoint_survives_a_crash_mid_write(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    run_folder.save_checkpoint(path, {"step": 1, "w": torch.ones(3)})

    def crash_mid_write(obj, f, *args, **kwargs):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        run_folder.save_checkpoint(path, {"step": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    state = run_folder.load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left


def test_load_checkpoint_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        run_folder.load_checkpoint(tmp_path / "nothere.pt")


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    gen = torch.Generator().manual_seed(7)
    session.seed_everything(3)
    torch.rand(5, generator=gen)
    state = session.capture_rng_state({"corruption": gen})
    run_folder.save_checkpoint(tmp_path / "c.pt", {"rng": state})
    expected = (random.random(), np.random.rand(), torch.rand(2), torch.rand(2, generator=gen))

    session.seed_everything(99)
    gen.manual_seed(99)
    session.restore_rng_state(run_folder.load_checkpoint(tmp_path / "c.pt")["rng"], {"corruption": gen})
    got = (random.random(), np.random.rand(), torch.rand(2), torch.rand(2, generator=gen))
    assert got[0] == expected[0] and got[1] == expected[1]
    assert torch.equal(got[2], expected[2]) and torch.equal(got[3], expected[3])


def test_resumable_sampler_continues_the_epoch_where_it_stopped():
    data = list(range(23))
    full = list(training.ResumableSampler(data, seed=5))
    sampler = training.ResumableSampler(data, seed=5)
    sampler.set_epoch(0, start_index=8)
    assert list(sampler) == full[8:] and len(sampler) == 23 - 8
    sampler.set_epoch(1)
    assert sorted(sampler) == data and list(sampler) != full  # a new order each epoch


def test_resumable_sampler_shards_across_ranks():
    data = list(range(20))
    shards = [list(training.ResumableSampler(data, num_replicas=2, rank=r, seed=1)) for r in range(2)]
    assert not set(shards[0]) & set(shards[1]) and sorted(shards[0] + shards[1]) == data


def test_csv_logger_on_resume_drops_rows_after_the_checkpoint(tmp_path):
    path = tmp_path / "log.csv"
    logger = run_folder.CSVLogger(path, ["step", "loss"])
    for step in range(1, 6):
        logger.log({"step": step, "loss": 1.0 / step})
    logger = run_folder.CSVLogger(path, ["step", "loss"], resume_step=3)
    logger.log({"step": 4, "loss": 0.0})
    log = run_folder.read_log(path)
    assert log["step"].tolist() == [1, 2, 3, 4] and log["loss"][-1] == 0.0
    run_folder.CSVLogger(path, ["step", "loss"])  # a fresh run starts a fresh file
    assert run_folder.read_log(path) == {}
    with pytest.raises(ValueError, match="bogus"):
        logger.log({"bogus": 1})


def test_config_differences_allow_growing_epochs_only():
    saved = {"model": "unet_2_44", "epochs": 2, "lr": 1e-3, "device": "cpu"}
    assert run_folder.config_differences(saved, dict(saved, epochs=5)) == []
    assert run_folder.config_differences(saved, dict(saved, device="cuda"), ignore=("device",)) == []
    diffs = run_folder.config_differences(saved, dict(saved, model="unet_3_96", epochs=1))
    assert [d.split(":")[0] for d in diffs] == ["epochs", "model"]
    with pytest.raises(ValueError, match="model: 'unet_2_44' -> 'hrnet_w18_small'"):
        run_folder.check_config_matches(saved, dict(saved, model="hrnet_w18_small"))
    old = {"generator": "unet_2_44", "epochs": 2, "lr": 1e-3, "device": "cpu"}  # a checkpoint from before the rename
    run_folder.check_config_matches(old, saved)


def test_config_dict_round_trip_rejects_unknown_fields():
    @dataclasses.dataclass
    class Config:
        lr: float = 1.0
        betas: tuple = (0.5, 0.9)

    data = config_to_dict(Config())
    assert data == {"lr": 1.0, "betas": [0.5, 0.9]}
    with pytest.raises(ValueError, match="learning_rate"):
        config_from_dict(Config, {"learning_rate": 1.0})


def test_check_finite_names_step_and_loss():
    finite.check_finite(3, d_loss=0.5)
    with pytest.raises(finite.NonFiniteLossError, match="g_l1 = nan at step 12"):
        finite.check_finite(12, d_loss=0.1, g_l1=float("nan"))


def test_stop_request_turns_sigterm_into_a_flag():
    before = signal.getsignal(signal.SIGTERM)
    with training.StopRequest() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_strip_module_prefix_and_unwrap():
    model = torch.nn.Linear(2, 2)
    wrapped = {"module." + k: v for k, v in model.state_dict().items()}
    torch.nn.Linear(2, 2).load_state_dict(training.strip_module_prefix(wrapped))
    assert training.unwrap_model(model) is model


def test_select_device_rejects_unknown_names():
    assert session.select_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="device"):
        session.select_device("tpu")


def test_plot_log_draws_one_line_per_column(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    path = tmp_path / "log.csv"
    logger = run_folder.CSVLogger(path, ["step", "d_loss", "g_l1"])
    for step in range(1, 4):
        logger.log({"step": step, "d_loss": 0.3, "g_l1": 1.0 / step})
    ax = figures.plot_log(path)
    assert [line.get_label() for line in ax.lines] == ["d_loss", "g_l1"]
    assert ax.lines[1].get_ydata().tolist() == pytest.approx([1.0, 0.5, 1 / 3])
    with pytest.raises(ValueError, match="epoch"):
        figures.plot_log(path, x="epoch")


def test_the_intensity_convention_round_trips_and_wraps_a_network():
    x = torch.tensor([0.0, 0.25, 1.0])
    assert to_centered(x).tolist() == [-1.0, -0.5, 1.0] and torch.equal(from_centered(to_centered(x)), x)
    gain, offset = TO_CENTERED
    assert torch.equal(x * gain + offset, to_centered(x))
    gain, offset = FROM_CENTERED
    assert torch.equal(to_centered(x) * gain + offset, x)
    identity = CenteredIntensities(torch.nn.Identity())
    assert torch.equal(identity(x), x) and not list(identity.parameters())


def test_progress_without_a_terminal_writes_a_line_every_few_steps(capsys):
    bar = training.progress_bar(200, "pretrain unet_2_44")
    for _ in range(200):
        bar.update(1)
    bar.close()
    err = capsys.readouterr().err
    assert "\r" not in err  # no carriage-return redraws in a log
    lines = [line for line in err.splitlines() if line.startswith("pretrain unet_2_44")]
    assert training.LOG_LINES <= len(lines) <= training.LOG_LINES + 3 and "200/200" in lines[-1]


def test_progress_without_a_terminal_stays_sparse_after_a_long_pause(capsys):
    """A pause longer than tqdm's maxinterval (an evaluation) must not switch the log to a line a step."""
    from tqdm._monitor import TMonitor

    bar = training.progress_bar(200, "finetune unet_2_44")
    bar.update(1)
    bar.last_print_t -= 3600  # as if the first evaluation had taken an hour
    monitor = TMonitor(type(bar), 0.01)
    time.sleep(0.2)  # the monitor looks at every open bar a few times
    monitor.exit()
    for _ in range(199):
        bar.update(1)
    bar.close()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("finetune unet_2_44")]
    assert len(lines) <= training.LOG_LINES + 3
