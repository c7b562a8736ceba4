"""The run's life, once for both loops (emlib.lifecycle), and each loop's config from a dict of fields
(make_config), which the command line and the sweep share."""
import json

import pytest
import torch

from emlib import cli, finetune, grid, lifecycle, pretrain, run_folder


def cli_config(kind: str, fields: dict, folder, toy: bool) -> dict:
    """The config `python -m emlib <kind> --config FILE --output-dir folder [--toy]` runs."""
    path = folder / "fields.json"
    path.write_text(json.dumps(fields))
    argv = [kind, "--config", str(path), "--output-dir", str(folder)] + (["--toy"] if toy else [])
    args = cli.build_parser(kind).parse_args(argv)
    return (pretrain if kind == "pretrain" else finetune).config_from_args(args).to_dict()


@pytest.mark.parametrize("kind, fields", [
    ("pretrain", {"generator": "unet_2_44", "epochs": 2}),  # a renamed field, as older specs spell it
    ("finetune", {"task": "denoising", "lr": 1e-3}),  # the task picks the toy preset's crop and dataset
    ("finetune", {"task": "segmentation", "dataset": "Au5nmV1", "label_fraction": 0.5}),
])
@pytest.mark.parametrize("toy", [False, True])
def test_the_sweep_builds_the_config_the_command_line_builds(tmp_path, kind, fields, toy):
    run = grid.GridRun("r0", kind, "pretrain" if kind == "pretrain" else "segmentation", dict(fields))
    built = grid.full_config(run, tmp_path, toy)
    assert built == cli_config(kind, fields, tmp_path, toy)
    assert not (tmp_path / "config.json").exists()  # no file written, none read back


def test_the_finetune_preset_follows_the_task():
    assert finetune.make_config({"task": "denoising"}, toy=True) == finetune.FinetuneConfig.toy(task="denoising")
    assert finetune.make_config({"task": "denoising"}).crop == finetune.FinetuneConfig(task="denoising").crop
    assert finetune.make_config({"task": "denoising", "crop": 32}, toy=True).crop == 32
    with pytest.raises(ValueError, match="unknown PretrainConfig field.*colour"):
        pretrain.make_config({"colour": "red"})


def test_a_bad_field_of_a_sweep_run_is_named(tmp_path):
    runs = [grid.GridRun("good", "pretrain", "pretrain", {"epochs": 1}), grid.GridRun("bad", "pretrain", "pretrain", {"colour": 1})]
    errors, missing = grid.check_configs(runs, toy=True)
    assert errors == ["bad: unknown PretrainConfig field(s): colour"] and missing == {}


def holders(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    return {"model": model, "optimizer": optimizer, "absent": None, "rng": lifecycle.RNG,
            "position": {"epoch": seed, "step": 10 * seed}, "history": [(seed, 0.5 * seed)]}


def test_a_checkpoint_restores_every_holder_in_place(tmp_path):
    config = pretrain.PretrainConfig.toy(output_dir=str(tmp_path))
    saved = holders(1)
    checkpoint = lifecycle.Checkpoint(tmp_path, config, saved, data="abc", fast_path={"dtype": "fp32"})
    checkpoint.save(type("Ctx", (), {"is_main": True})())
    expected_draw = torch.rand(3)
    assert list(checkpoint.state())[:6] == ["format", "config", "data", "fast_path", "data_content", "wall_s"]
    assert list(checkpoint.state())[6:] == list(saved)

    fresh = holders(2)
    position, history = fresh["position"], fresh["history"]
    lifecycle.Checkpoint(tmp_path, pretrain.PretrainConfig.toy(output_dir=str(tmp_path), lr=0.05), fresh, data="abc",
                         fast_path={"dtype": "fp32"}, ignore=("lr",)).restore()
    assert all(torch.equal(a, b) for a, b in zip(fresh["model"].state_dict().values(), saved["model"].state_dict().values()))
    assert fresh["position"] is position and position == {"epoch": 1, "step": 10}
    assert fresh["history"] is history and history == [(1, 0.5)]
    assert fresh["optimizer"].param_groups[0]["lr"] == 0.05  # lr may change on resume: the config's
    assert torch.equal(torch.rand(3), expected_draw)  # the random streams go on where they were

    with pytest.raises(ValueError, match="data"):
        lifecycle.Checkpoint(tmp_path, config, holders(3), data="other", fast_path={"dtype": "fp32"}).restore()
    with pytest.raises(run_folder.CheckpointError, match="no extra"):
        lifecycle.Checkpoint(tmp_path, config, {**holders(3), "extra": None}).restore()


def test_a_resumed_runs_wall_time_counts_the_time_before_the_resume(tmp_path):
    """summary.json's wall_s is the whole run's, not the last process's: the checkpoint carries the time so far."""
    config = pretrain.PretrainConfig.toy(output_dir=str(tmp_path))
    first = lifecycle.Checkpoint(tmp_path, config, holders(1))
    first.started -= 600.0  # as if the first process had run ten minutes before it was stopped
    first.save(type("Ctx", (), {"is_main": True})())
    resumed = lifecycle.Checkpoint(tmp_path, config, holders(2))
    assert resumed.wall_s() < 60
    resumed.restore()
    assert 600.0 <= resumed.wall_s() < 660.0


def test_a_finished_run_extended_from_a_checkpoint_without_its_time_counts_the_summarys(tmp_path):
    """Checkpoints written before they kept wall_s: a finished run's summary.json says how long it ran; an
    interrupted run's time before the resume is unknown (0)."""
    config = pretrain.PretrainConfig.toy(output_dir=str(tmp_path))
    lifecycle.Checkpoint(tmp_path, config, holders(1)).save(type("Ctx", (), {"is_main": True})())
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    del state["wall_s"]
    torch.save(state, tmp_path / "checkpoint.pt")
    resumed = lifecycle.Checkpoint(tmp_path, config, holders(2))
    resumed.restore()
    assert resumed.wall_s() < 60
    (tmp_path / "summary.json").write_text(json.dumps({"wall_s": 900.0}))
    resumed.restore()
    assert 900.0 <= resumed.wall_s() < 960.0
