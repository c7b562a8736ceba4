"""The committed real-data study (results/real_small): schema and provenance of every run, and its sweep command
on the tiny grid of experiments/real_small.yaml."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emlib import results
from emlib.config import upgrade

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "results" / "real_small"
SPEC = ROOT / "experiments" / "real_small.yaml"
RUNS = sorted(p.parent for p in STUDY.glob("*/summary.json"))


@pytest.mark.skipif(not RUNS, reason="no finished runs committed under results/real_small")
@pytest.mark.parametrize("run", RUNS, ids=lambda p: p.name)
def test_committed_run_has_its_config_provenance_and_results(run):
    config, summary = json.loads((run / "config.json").read_text()), json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["commit"] and len(summary["commit"].split("+")[0]) == 40  # the code that made it
    assert summary["machine"]["cpu"] and summary["machine"]["torch_threads"] == 1 and summary["wall_s"] > 0
    assert not (run / "checkpoint.pt").exists()  # only what the result needs is committed
    if (run / "generator.safetensors").is_file():  # pretraining: real cellular EM, its split and its baseline
        card = upgrade(json.loads((run / "model_card.json").read_text()))
        assert summary["source"] == card["source"] == "real" and "cellular_em" in config["data_root"]
        assert summary["manifest_hash"] and (run / "manifest.json").is_file()
        # the curve and its training-free baseline are recorded (whether the generator beats the identity is a
        # result the book reports from them, not a property of the code)
        assert summary["final_val_l1"] == summary["val_l1"][-1][2] and 0 < summary["identity_val_l1"] < 1
    else:  # fine-tuning: results rows in the paper's schema, on real nanoparticle TEM
        assert summary["source"] == "real" and summary["data_sha256"]
        rows = results.read_rows(run / "results.csv")
        assert list(rows[0]) == results.SEGMENTATION_COLUMNS
        assert {r["source"] for r in rows} == {"real"} and {r["run_id"] for r in rows} == {run.name}
        assert (run / "best_model.safetensors").is_file()


@pytest.mark.slow
def test_the_study_command_runs_its_tiny_grid(tmp_path):
    """`python -m emlib sweep experiments/real_small.yaml --toy`: every run of the tiny grid finishes, and a second
    call skips them all (finished runs are never rerun)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "emlib", "sweep", str(SPEC), "--toy", "--runs-dir", str(tmp_path)]
    first = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    finished = sorted(p.parent.name for p in tmp_path.glob("*/summary.json"))
    assert len(finished) == 5 and any(name.startswith("pretrain-") for name in finished)
    again = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert again.returncode == 0 and "5 ok, 0 failed" in again.stdout
    assert (tmp_path / "results_segmentation.csv").is_file()


@pytest.mark.parametrize("name", sorted(__import__("emlib.inits").inits.PRETRAINED))
def test_study_generators_are_usable_by_name(name):
    from emlib import finetune, inits, models

    folder = ROOT / inits.PRETRAINED[name]
    if not (folder / "generator.safetensors").is_file():
        with pytest.raises(FileNotFoundError, match="does not hold"):
            inits.weights_path(name)
        pytest.skip(f"{folder} is not committed yet")
    assert inits.weights_path(name) == folder / "generator.safetensors"
    assert "small scale, real data" in inits.describe(folder)
    config = finetune.FinetuneConfig(dataset="emps", init=name)  # the model comes from the export
    assert config.model == name.split("/")[1].removesuffix("-l1")
    assert type(models.load(folder / "generator.safetensors")).__name__ == type(models.create(config.model)).__name__
