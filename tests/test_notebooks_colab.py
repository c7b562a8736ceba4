"""The notebooks as Colab and papermill users meet them: the GPU when there is one, clean parameter cells."""
import dataclasses
import logging
from pathlib import Path

import jupytext
import pytest
import torch
from papermill.translators import PythonTranslator

from emlib import finetune, pretrain, session

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TRAINING = {"03_pretraining": pretrain.PretrainConfig, "04_segmentation": finetune.FinetuneConfig,
            "05_restoration": finetune.FinetuneConfig, "07_label_efficiency": finetune.FinetuneConfig}


def parameters_cell(name):
    notebook = jupytext.read(NOTEBOOKS / f"{name}.py")
    return next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))


def cell_values(name) -> dict:
    values = {}
    exec(parameters_cell(name).source, {}, values)
    return values


@pytest.mark.parametrize("name", sorted(p.stem for p in NOTEBOOKS.glob("[0-9]*.py")))
def test_papermill_reads_every_parameter(name, caplog):
    cell = parameters_cell(name)
    with caplog.at_level(logging.WARNING, logger="papermill"):
        found = {p.name for p in PythonTranslator.inspect(cell)}
    assert not [r.getMessage() for r in caplog.records if "Unable to parse" in r.getMessage()]
    assert found == set(cell_values(name))  # else papermill says "Passed unknown parameter" for the ones it missed


@pytest.mark.parametrize("name", sorted(TRAINING))
@pytest.mark.parametrize("gpu", [True, False])
def test_training_notebooks_use_the_gpu_when_there_is_one(name, gpu, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    values = cell_values(name)
    assert values["device"] == "auto"
    assert session.select_device(values["device"]).type == ("cuda" if gpu else "cpu")
    for field in ("amp", "channels_last", "deterministic"):
        values[field] = session.on_device(values[field], values["device"])
    assert (values["amp"], values["channels_last"], values["deterministic"]) == (gpu, gpu, not gpu)  # fp32 on CPU
    cls = TRAINING[name]
    config = cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)})
    assert config.amp is gpu


def test_on_device_keeps_explicit_values(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert session.on_device(True, "auto") is True and session.on_device("auto", "cpu") == "auto"
    assert session.on_device("cuda", "auto") is False and session.on_device("cpu", "cpu") is True
