"""The notebooks as Colab and papermill users meet them: the GPU when there is one, clean parameter cells."""
import dataclasses
import importlib.metadata
import logging
import re
import sys
import tomllib
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


def extra_closure(project: dict, extra: str) -> set:
    """The distribution names `pip install emlib[extra]` brings, following `emlib[...]` self-references."""
    names, todo, seen = set(), [extra], set()
    while todo:
        name = todo.pop()
        seen.add(name)
        for requirement in project["optional-dependencies"][name]:
            base = re.split(r"[\s<>=!~;@]", requirement, maxsplit=1)[0]
            if base.startswith("emlib["):
                todo += [e for e in base[6:-1].split(",") if e not in seen]
            else:
                names.add(base.split("[")[0])
    return names


def test_the_colab_install_brings_every_package_the_notebooks_import():
    """The install cell is `pip install emlib[book]`: what a notebook imports must come with it (chapter 4
    runs bioimageio.core, which once came only with the `export` extra, so Colab stopped at that cell)."""
    project = tomllib.loads((NOTEBOOKS.parent / "pyproject.toml").read_text())["project"]
    installed = {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0] for r in project["dependencies"]}
    installed |= extra_closure(project, "book")
    normalise = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
    installed = {normalise(n) for n in installed}
    provides = importlib.metadata.packages_distributions()
    missing = {}
    for path in sorted(NOTEBOOKS.glob("[0-9]*.py")):
        for module in re.findall(r"^\s*(?:import|from)\s+([A-Za-z_]\w*)", path.read_text(), flags=re.M):
            if module in sys.stdlib_module_names or module in ("emlib", "__future__"):
                continue
            distributions = {normalise(d) for d in provides.get(module, [module])}
            # a notebook import must be a direct requirement (bioimageio.core, not its dependency bioimageio.spec)
            if not distributions & installed and not any(n.startswith(normalise(module)) for n in installed):
                missing.setdefault(path.name, set()).add(module)
    assert not missing, f"imported by notebooks but not installed by emlib[book]: {missing}"
