"""The sweep runner: grid expansion, dry run, skip / resume, failures, submitit.

Runs are executed by a fake command (a tiny Python script) so that the tests
exercise the runner's rules without training anything.
"""
import dataclasses
import json
import re
import sys
from pathlib import Path

import pytest

from emlib import cli, grid, sweep
from emlib.finetune import FinetuneConfig
from emlib.pretrain import PretrainConfig
from emlib.results import SEGMENTATION_COLUMNS, read_rows

SPEC = Path(__file__).resolve().parents[1] / "experiments" / "paper.yaml"

# Writes what a finished run writes, or fails when its run id is listed in FAIL.
FAKE_RUN = """
import csv, json, os, sys
run_dir, resume, fail = sys.argv[1], sys.argv[2] == "1", sys.argv[3].split(",")
run_id = os.path.basename(run_dir)
with open(os.path.join(os.path.dirname(run_dir), "calls.log"), "a") as f:
    f.write(f"{run_id} {int(resume)}\\n")
if run_id in fail:
    sys.exit(3)
config = json.load(open(os.path.join(run_dir, "config.json")))
columns = sys.argv[4].split(",")
if run_id.startswith("seg-"):
    with open(os.path.join(run_dir, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerow({**dict.fromkeys(columns, ""), "dataset": config["dataset"], "model": "U-Net_2_44",
                    "init": "random", "epoch": 1, "dice_percent": 50.0, "source": "synthetic", "run_id": run_id})
json.dump({"ok": True}, open(os.path.join(run_dir, "summary.json"), "w"))
"""


def fake_builder(fail=()):
    def build(run, run_dir, resume):
        return [sys.executable, "-c", FAKE_RUN, str(run_dir), "1" if resume else "0", ",".join(fail),
                ",".join(SEGMENTATION_COLUMNS)]
    return build


def calls(runs_dir):
    path = Path(runs_dir) / "calls.log"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def spec():
    return grid.load_spec(SPEC)


def test_paper_grid_has_30_pretraining_and_212_finetuning_runs(spec):
    runs = grid.expand_grid(spec)
    kinds = [(r.kind, r.task) for r in runs]
    assert kinds.count(("pretrain", "pretrain")) == 30
    assert kinds.count(("finetune", "segmentation")) == 200
    assert kinds.count(("finetune", "restoration")) == 12
    assert len({r.run_id for r in runs}) == len(runs)
    # Every pretrained init points at the generator of a pretraining run of the grid.
    ids = {r.run_id for r in runs if r.kind == "pretrain"}
    for run in runs:
        if run.depends_on:
            assert run.depends_on in ids
            assert run.config["init"] == str(Path("runs") / run.depends_on / "generator.safetensors")
    assert sum(r.config["init"] == "random" for r in runs if r.kind == "finetune") == 53


def test_seeds_and_label_fractions_multiply_finetuning_only(spec):
    runs = grid.expand_grid({**spec, "seeds": [0, 1, 2], "label_fractions": [0.25, 1.0]})
    assert sum(r.kind == "pretrain" for r in runs) == 30
    assert sum(r.task == "segmentation" for r in runs) == 200 * 3 * 2
    assert sum(r.task == "restoration" for r in runs) == 12 * 3


def test_grid_rejects_init_without_pretraining(spec):
    bad = {**spec, "segmentation": {**spec["segmentation"], "inits": ["random", "P1M"]}}
    with pytest.raises(ValueError, match="P1M"):
        grid.expand_grid(bad)


def test_dry_run_lists_runs_with_gpu_estimates_and_writes_nothing(tmp_path, capsys):
    code = cli.main(["sweep", str(SPEC), "--dry-run", "--runs-dir", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert code == 0
    assert "242 runs (30 pretraining, 212 fine-tuning)" in out
    assert "seg-Au2.2nm-hrnet_w44-p200k-s0" in out and "GPU hours" in out
    assert not (tmp_path / "runs").exists()


def test_toy_grid_is_small_and_has_no_gpu_settings(spec):
    runs = grid.expand_grid(spec, toy=True)
    assert 0 < len(runs) <= 8
    assert all("epochs" not in r.config and "data_root" not in r.config for r in runs)


def test_pretraining_runs_first_then_finished_runs_are_skipped(spec, tmp_path):
    runs_dir = tmp_path / "runs"
    runs = grid.expand_grid(spec, toy=True, runs_dir=runs_dir)
    outcomes = sweep.execute(runs, runs_dir, fake_builder())
    assert set(outcomes.values()) == {"finished"}
    order = [run_id for run_id, _ in calls(runs_dir)]
    n_pre = sum(r.kind == "pretrain" for r in runs)
    assert all(i.startswith("pretrain-") for i in order[:n_pre])
    assert json.loads((runs_dir / runs[0].run_id / "config.json").read_text()) == runs[0].config

    again = sweep.execute(runs, runs_dir, fake_builder())
    assert set(again.values()) == {"skipped (finished)"}
    assert len(calls(runs_dir)) == len(runs)  # nothing ran a second time

    written = sweep.aggregate(runs_dir)
    rows = read_rows(runs_dir / "results_segmentation.csv")
    assert written == {str(runs_dir / "results_segmentation.csv"): len(rows)}
    assert sorted(r["run_id"] for r in rows) == sorted(r.run_id for r in runs if r.run_id.startswith("seg-"))


def test_unfinished_run_is_resumed(spec, tmp_path):
    runs_dir = tmp_path / "runs"
    runs = grid.expand_grid(spec, toy=True, runs_dir=runs_dir)[:2]
    interrupted = runs_dir / runs[0].run_id
    interrupted.mkdir(parents=True)
    (interrupted / "checkpoint.pt").write_bytes(b"")
    (interrupted / "config.json").write_text('{"written": "by the run"}')
    sweep.execute(runs, runs_dir, fake_builder())
    assert calls(runs_dir) == [[runs[0].run_id, "1"], [runs[1].run_id, "0"]]
    # The run's own config.json is kept, not overwritten by the sweep.
    assert json.loads((interrupted / "config.json").read_text()) == {"written": "by the run"}


def test_failing_run_does_not_stop_the_others_and_blocks_its_dependents(spec, tmp_path, monkeypatch, capsys):
    runs_dir = tmp_path / "runs"
    failing = "pretrain-unet_2_44-p50k"
    monkeypatch.setattr(sweep, "build_command", lambda run, run_dir, resume, **_: fake_builder([failing])(run, run_dir, resume))
    code = cli.main(["sweep", str(SPEC), "--toy", "--runs-dir", str(runs_dir)])
    out = capsys.readouterr().out
    assert code == 1
    assert f"{failing}: failed (exit code 3" in out
    assert "seg-Au5nmV1-unet_2_44-p50k-s0: blocked" in out
    assert (runs_dir / "seg-Au5nmV1-unet_2_44-random-s0" / "summary.json").exists()
    assert (runs_dir / "restore-denoising-hrnet_w18_small-p50k-s0" / "summary.json").exists()


def test_only_selects_by_regex_and_adds_missing_pretraining(spec, tmp_path):
    runs = grid.expand_grid(spec)
    chosen = grid.select(runs, r"^seg-Au5nmV1-unet_2_44-p100k", tmp_path)
    assert [r.run_id for r in chosen] == ["pretrain-unet_2_44-p100k", "seg-Au5nmV1-unet_2_44-p100k-s0"]
    with pytest.raises(ValueError, match="--only"):
        grid.select(runs, "(", tmp_path)


def test_cli_command_follows_the_run_contract(spec, tmp_path):
    run = grid.expand_grid(spec)[0]
    argv = sweep.build_command(run, tmp_path / run.run_id, resume=True)
    assert argv[1:4] == ["-m", "emlib", "pretrain"]
    assert argv[argv.index("--config") + 1] == str(tmp_path / run.run_id / "config.json")
    assert argv[argv.index("--output-dir") + 1] == str(tmp_path / run.run_id)
    assert "--resume" in argv and "--toy" not in argv
    multi = sweep.build_command(dataclasses.replace(run, gpus=4), tmp_path, resume=False, toy=True)
    assert multi[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"] and "--toy" in multi


def test_papermill_command_passes_the_full_config_as_parameters(spec, tmp_path, monkeypatch):
    import yaml

    from emlib.finetune import FinetuneConfig

    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "04_segmentation.ipynb").write_text("{}")
    monkeypatch.setattr(sweep, "REPO_ROOT", tmp_path)
    run = next(r for r in grid.expand_grid(spec) if r.task == "segmentation" and r.config["init"] == "random")
    run_dir = tmp_path / "runs" / run.run_id
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(run.config))  # as sweep.prepare writes it before building
    argv = sweep.build_command(run, run_dir, resume=True, runner="papermill")
    assert argv[1:4] == ["-m", "papermill", str(tmp_path / "notebooks" / "04_segmentation.ipynb")]
    parameters = yaml.safe_load((run_dir / "parameters.yaml").read_text())
    config = {k: parameters.pop(k) for k in FinetuneConfig().to_dict()}
    assert config == {**FinetuneConfig(**{k: v for k, v in run.config.items()}).to_dict(), "output_dir": str(run_dir)}
    assert parameters == {**sweep.NOTEBOOK_SWITCHES, "resume": True}  # the notebook makes this run and no other


REAL_SMALL = Path(__file__).resolve().parents[1] / "experiments" / "real_small.yaml"


@pytest.mark.slow
def test_papermill_and_cli_runners_make_the_same_run(tmp_path):
    """One toy grid cell through both runners: the same config.json and the same results."""
    runs = [r for r in grid.expand_grid(grid.load_spec(REAL_SMALL), toy=True) if r.run_id == "seg-emps-unet_2_44-random-s0"]
    folders = {}
    for runner in ("cli", "papermill"):
        def build(run, run_dir, resume, runner=runner):
            return sweep.build_command(run, run_dir, resume, toy=True, runner=runner)
        outcomes = sweep.execute(runs, tmp_path / runner, build)
        folders[runner] = tmp_path / runner / runs[0].run_id
        assert outcomes[runs[0].run_id] == "finished", (folders[runner] / "sweep.log").read_text()[-3000:]
    configs = {name: json.loads((folder / "config.json").read_text()) for name, folder in folders.items()}
    assert configs["cli"].pop("output_dir") != configs["papermill"].pop("output_dir")
    assert configs["cli"] == configs["papermill"]
    rows = {name: read_rows(folder / "results.csv") for name, folder in folders.items()}
    assert rows["cli"] == rows["papermill"] and len(rows["cli"]) >= 1
    assert (folders["papermill"] / "notebook.ipynb").is_file()  # the executed notebook is the run's report
    summaries = {name: json.loads((folder / "summary.json").read_text()) for name, folder in folders.items()}
    assert summaries["cli"]["test_dice_percent"] == summaries["papermill"]["test_dice_percent"]


@pytest.mark.parametrize("spec_path", [SPEC, SPEC.parent / "real_small.yaml"])
def test_grid_coordinates_are_config_fields_by_name(spec_path):
    """The grid's config keys are fields of the run's config dataclass, with no renaming."""
    spec = grid.load_spec(spec_path)
    for kind, cls in (("pretrain", PretrainConfig), ("finetune", FinetuneConfig)):
        names = {f.name for f in dataclasses.fields(cls)}
        for toy in (False, True):
            for run in grid.expand_grid(spec, toy=toy):
                if run.kind == kind:
                    assert set(run.config) <= names, f"{run.run_id}: not fields of {cls.__name__}: {set(run.config) - names}"
    pretraining = [run.config for run in grid.expand_grid(spec) if run.kind == "pretrain"]
    assert all("model" in config and "subset" in config for config in pretraining)


def test_a_fields_renaming_is_refused(spec):
    spec = {**spec, "pretrain": {**spec["pretrain"], "fields": {"model": "generator"}}}
    with pytest.raises(ValueError, match="fields:"):
        grid.expand_grid(spec)


@pytest.mark.slow
def test_submitit_local_executor_runs_and_skips(spec, tmp_path):
    pytest.importorskip("submitit")
    runs_dir = tmp_path / "runs"
    runs = [r for r in grid.expand_grid(spec, toy=True, runs_dir=runs_dir) if "unet_2_44" in r.run_id]
    (runs_dir / runs[1].run_id).mkdir(parents=True)
    (runs_dir / runs[1].run_id / "summary.json").write_text("{}")
    outcomes = sweep.execute(runs, runs_dir, fake_builder([runs[2].run_id]), launcher="slurm", cluster="local",
                             slurm={"timeout_min": 5, "cpus_per_task": 1})
    assert outcomes[runs[0].run_id] == "finished"
    assert outcomes[runs[1].run_id] == "skipped (finished)"
    assert outcomes[runs[2].run_id].startswith("failed (exit code 3")
    assert (runs_dir / "_submitit").is_dir()


def test_paper_grid_reads_the_folders_the_readme_downloads_to_and_dry_run_marks_missing_ones(tmp_path, monkeypatch):
    readme = (SPEC.parents[1] / "README.md").read_text()
    runs = grid.expand_grid(grid.load_spec(SPEC), toy=False, runs_dir=tmp_path / "runs")
    roots = {run.config["data_root"] for run in runs}
    assert roots == {"data/real/cem500k", "data/real/au", "data/real/temimagenet"}
    for root in roots:
        assert f"--out {root}" in readme
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data/real/au").mkdir(parents=True)
    listing = grid.format_listing(runs, tmp_path / "runs").splitlines()
    marked = {line.split()[0] for line in listing if "NO DATA" in line}
    assert marked == {run.run_id for run in runs if run.config["data_root"] != "data/real/au"}
    assert "data/real/cem500k, data/real/temimagenet): download it first" in "\n".join(listing)


def finished_segmentation_run(root, name, val, **fields):
    folder = root / name
    folder.mkdir()
    config = {"task": "segmentation", "dataset": "emps", "model": "unet_2_44", "init": "random", "seed": 0,
              "label_fraction": 1.0, "head": "reinit", **fields}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "summary.json").write_text(json.dumps({"status": "finished", "metric": "dice_percent",
                                                     "best_val_dice_percent": val, "test_dice_percent": 0.0}))
    (folder / "best_model.safetensors").write_bytes(b"")
    return folder


def test_the_best_run_is_chosen_on_validation_among_the_main_design(tmp_path):
    """best_runs (the packaged models): best validation score, full labels only, never the head ablation."""
    chosen = finished_segmentation_run(tmp_path, "seg-a", 70.0)
    finished_segmentation_run(tmp_path, "seg-b", 60.0)
    finished_segmentation_run(tmp_path, "seg-a-head-transfer", 80.0, head="transfer")
    finished_segmentation_run(tmp_path, "seg-a-lf0.5", 90.0, label_fraction=0.5)
    assert sweep.best_runs(tmp_path) == {"emps": chosen}


def test_the_packages_are_the_best_runs_and_a_former_best_ones_is_removed(tmp_path, monkeypatch):
    exported = []
    monkeypatch.setattr(sweep.bioimageio, "export", lambda run, out: exported.append(run.name) or out.write_bytes(b"zip"))
    finished_segmentation_run(tmp_path, "seg-b", 60.0)
    packages = tmp_path / "bioimageio"
    packages.mkdir()
    (packages / "seg-b.zip").write_bytes(b"zip")  # the best run until seg-a finished
    (packages / "notes.zip").write_bytes(b"mine")  # not a run's package: left alone
    assert sweep.export_packages(tmp_path) == [packages / "seg-b.zip"] and exported == []  # kept, not re-exported
    finished_segmentation_run(tmp_path, "seg-a", 70.0)
    assert sweep.export_packages(tmp_path) == [packages / "seg-a.zip"] and exported == ["seg-a"]
    assert sorted(p.name for p in packages.iterdir()) == ["notes.zip", "seg-a.zip"]


def test_a_dataset_is_read_at_one_size_across_the_sections_so_its_baselines_fit_its_runs():
    section = {"datasets": ["emps", "msa_segtrack"], "models": {"unet_2_44": ["random"]}}
    spec = {"segmentation": [{**section, "config": {"data_root": "d", "downsample": 2}},
                             {**section, "datasets": ["msa_segtrack"], "config": {"data_root": "d"}}]}
    with pytest.raises(ValueError, match="read msa_segtrack with downsample 2 and 1"):
        grid.segmentation_data(spec)
    spec["segmentation"][1]["config"]["downsample"] = 2
    assert grid.segmentation_data(spec) == {"emps": ("d", 2), "msa_segtrack": ("d", 2)}


def test_a_finished_run_made_with_another_config_is_refused_not_skipped(tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    spec = grid.load_spec(REAL_SMALL)
    run = next(r for r in grid.expand_grid(spec, toy=True, runs_dir=runs_dir) if r.run_id.startswith("seg-"))
    run_dir = runs_dir / run.run_id
    run_dir.mkdir(parents=True)
    config = grid.full_config(run, run_dir, toy=True)
    (run_dir / "config.json").write_text(json.dumps({**config, "device": "cuda", "workers": 3}))  # where, not what
    (run_dir / "summary.json").write_text("{}")
    assert grid.changed_fields(run, run_dir, toy=True) == [] and grid.changed_runs([run], runs_dir, toy=True) == {}
    (run_dir / "config.json").write_text(json.dumps({**config, "amp": not config["amp"]}))  # another numeric mode
    assert grid.changed_runs([run], runs_dir, toy=True) == {run.run_id: [f"amp: {not config['amp']!r} -> {config['amp']!r}"]}
    (run_dir / "config.json").write_text(json.dumps({**config, "crop": 32}))
    assert grid.changed_runs([run], runs_dir, toy=True) == {run.run_id: ["crop: 32 -> 64"]}
    assert cli.main(["sweep", str(REAL_SMALL), "--toy", "--runs-dir", str(runs_dir), "--dry-run"]) == 0
    assert re.search(rf"{run.run_id}\s+changed", capsys.readouterr().out)
    assert cli.main(["sweep", str(REAL_SMALL), "--toy", "--runs-dir", str(runs_dir)]) == 2
    assert f"e.g. {run.run_id} (crop: 32 -> 64)" in capsys.readouterr().err
    assert json.loads((run_dir / "config.json").read_text())["crop"] == 32  # nothing was touched


def toy_spec_file(path, epochs, **config):
    """A one-run toy sweep spec (random unet_2_44 on the synthetic EMPS) with its epoch cap."""
    section = {"datasets": ["emps"], "models": {"unet_2_44": ["random"]},
               "config": {"epochs": epochs, "epoch_size": 4, "crop": 64, "downsample": 2, "eval_dense_epochs": 9, **config}}
    path.write_text(json.dumps({"seeds": [0], "pretrain": {"models": []}, "toy": {"seeds": [0], "segmentation": [section]}}))
    return path


def test_a_finished_run_whose_cap_rises_trains_on_from_its_checkpoint_as_if_started_under_the_new_cap(tmp_path, capsys):
    runs_dir, spec = tmp_path / "runs", tmp_path / "spec.yaml"
    run_dir = runs_dir / "seg-emps-unet_2_44-random-s0"
    sweep_args = ["sweep", str(spec), "--toy", "--runs-dir", str(runs_dir)]
    toy_spec_file(spec, 2)
    assert cli.main(sweep_args) == 0
    first = json.loads((run_dir / "summary.json").read_text())
    assert first["epochs"] == 2 and len(first["val_history"]) == 2

    toy_spec_file(spec, 3)
    assert cli.main(sweep_args + ["--dry-run"]) == 0
    assert re.search(r"seg-emps-unet_2_44-random-s0\s+extend", capsys.readouterr().out)
    assert cli.main(sweep_args) == 0
    extended = json.loads((run_dir / "summary.json").read_text())
    assert extended["epochs"] == 3 and json.loads((run_dir / "config.json").read_text())["epochs"] == 3
    assert extended["val_history"][:2] == first["val_history"] and len(extended["val_history"]) == 3
    assert extended["wall_s"] > first["wall_s"]  # the whole run's time, both parts
    assert [row["epoch"] for row in read_rows(run_dir / "validation.csv")] == ["1", "2", "3"]

    # Without its checkpoint the run cannot go on: the sweep refuses instead of reporting the old result.
    (run_dir / "checkpoint.pt").unlink()
    toy_spec_file(spec, 4)
    assert cli.main(sweep_args) == 2
    assert "(epochs: 3 -> 4)" in capsys.readouterr().err
    assert json.loads((run_dir / "summary.json").read_text()) == extended  # nothing was touched


def test_a_run_that_stopped_at_its_plateau_is_the_same_run_under_a_higher_cap(spec, tmp_path):
    runs_dir = tmp_path / "runs"
    run = next(r for r in grid.expand_grid(grid.load_spec(REAL_SMALL), toy=True, runs_dir=runs_dir)
               if r.run_id.startswith("seg-"))
    run = dataclasses.replace(run, config={**run.config, "epochs": 3})
    run_dir = runs_dir / run.run_id
    run_dir.mkdir(parents=True)
    config = grid.full_config(run, run_dir, toy=True)
    (run_dir / "config.json").write_text(json.dumps({**config, "epochs": config["epochs"] - 1}))
    (run_dir / "checkpoint.pt").write_bytes(b"")
    (run_dir / "summary.json").write_text(json.dumps({"stopped_at_plateau": False}))
    assert grid.run_change(run, run_dir, toy=True) == "extend"
    assert grid.extended_runs([run], runs_dir, toy=True) == {run.run_id}
    (run_dir / "summary.json").write_text(json.dumps({"stopped_at_plateau": True}))
    assert grid.run_change(run, run_dir, toy=True) == "same" and grid.changed_runs([run], runs_dir, toy=True) == {}
    (run_dir / "config.json").write_text(json.dumps({**config, "epochs": config["epochs"] + 1}))  # a lower cap
    assert grid.changed_runs([run], runs_dir, toy=True) == {run.run_id: [f"epochs: {config['epochs'] + 1} -> {config['epochs']}"]}
    (run_dir / "config.json").write_text(json.dumps({**config, "epochs": config["epochs"] - 1, "crop": 32}))
    assert grid.run_change(run, run_dir, toy=True) == "changed"  # longer, but also another run


def test_a_run_asked_for_a_mode_outright_is_the_run_that_resolved_auto_to_it(tmp_path):
    """The spec pins amp / channels_last (so that runs resume alike on any processor): a finished run whose
    config said "auto" is the same run if it resolved to that mode (its summary's fast_path), else changed; a
    resumed run is told the spec's mode, whatever its config.json says."""
    runs_dir = tmp_path / "runs"
    run = next(r for r in grid.expand_grid(grid.load_spec(REAL_SMALL), toy=True, runs_dir=runs_dir)
               if r.run_id.startswith("seg-"))
    run = dataclasses.replace(run, config={**run.config, "amp": False, "channels_last": False})
    run_dir = runs_dir / run.run_id
    run_dir.mkdir(parents=True)
    config = grid.full_config(run, run_dir, toy=True)
    (run_dir / "config.json").write_text(json.dumps({**config, "amp": "auto", "channels_last": "auto"}))
    fp32 = {"amp": None, "channels_last": {"model": False}}
    (run_dir / "summary.json").write_text(json.dumps({"fast_path": fp32}))
    assert grid.run_change(run, run_dir, toy=True) == "same"
    (run_dir / "summary.json").write_text(json.dumps({"fast_path": {**fp32, "amp": "bfloat16"}}))
    assert grid.changed_runs([run], runs_dir, toy=True) == {run.run_id: ["amp: 'auto' -> False"]}
    (run_dir / "summary.json").write_text(json.dumps({"fast_path": {**fp32, "channels_last": {"model": True}}}))
    assert grid.changed_runs([run], runs_dir, toy=True) == {run.run_id: ["channels_last: 'auto' -> False"]}

    (run_dir / "summary.json").unlink()
    (run_dir / "checkpoint.pt").write_bytes(b"")  # interrupted: resumed in the spec's mode
    argv = sweep.build_command(run, run_dir, resume=True, toy=True)
    assert argv[argv.index("--amp") + 1] == "false" and argv[argv.index("--channels-last") + 1] == "false"
    assert "--amp" not in sweep.build_command(run, run_dir, resume=False, toy=True)
