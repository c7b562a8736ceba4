"""Each run notebook's `parameters` cell names exactly its config's fields, then its declared display switches.

A run notebook builds its config from the cell (`Config(**{f.name: globals()[f.name] for f in
dataclasses.fields(Config)})`), so a config field missing from the cell would fail at that cell
of the notebook, and a stray name would be silently ignored. This test says so first, naming
the notebook and the field. The fields are read from the dataclasses themselves.
"""
import ast
import dataclasses
import importlib
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SWITCHES_MARKER = "# Display switches (not config fields):"
BUILDS_CONFIG = re.compile(r"dataclasses\.fields\((\w+)\.(\w+)\)")
RUN_NOTEBOOKS = sorted(p for p in NOTEBOOKS.glob("[0-9]*.py") if BUILDS_CONFIG.search(p.read_text()))


def parameters_cell(source: str, path: Path) -> str:
    """The text of the cell tagged `parameters` (jupytext percent format)."""
    cells = re.split(r"^# %%", source, flags=re.M)
    tagged = [c for c in cells if c.lstrip(" ").startswith('tags=["parameters"]')]
    if len(tagged) != 1:
        raise AssertionError(f"{path.name}: expected one cell tagged parameters, found {len(tagged)}")
    return tagged[0].split("\n", 1)[1]


def assigned_names(code: str) -> list:
    return [t.id for node in ast.parse(code).body if isinstance(node, ast.Assign) for t in node.targets
            if isinstance(t, ast.Name)]


def config_class(source: str):
    module, name = BUILDS_CONFIG.search(source).groups()
    return getattr(importlib.import_module(f"emlib.{module}"), name)


def test_there_are_run_notebooks():
    assert {p.stem for p in RUN_NOTEBOOKS} >= {"03_pretraining", "04_segmentation", "05_restoration"}


@pytest.mark.parametrize("path", RUN_NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_names_the_config_fields_then_the_display_switches(path):
    source = path.read_text()
    cell, cls = parameters_cell(source, path), config_class(source)
    if SWITCHES_MARKER not in cell:
        raise AssertionError(f"{path.name}: the parameters cell has no line {SWITCHES_MARKER!r} before its display "
                             "switches (put it there even when there are none)")
    config_part, switch_part = cell.split(SWITCHES_MARKER)
    fields, switches = assigned_names(config_part), assigned_names(switch_part)
    expected = [f.name for f in dataclasses.fields(cls)]
    missing, unknown = [f for f in expected if f not in fields], [f for f in fields if f not in expected]
    assert not missing, (f"{path.name}: the parameters cell lacks {cls.__name__} field(s) {missing}: add them above "
                         f"{SWITCHES_MARKER!r} with the notebook's value (new config fields must reach the notebooks)")
    assert not unknown, (f"{path.name}: {unknown} above {SWITCHES_MARKER!r} are not {cls.__name__} fields: remove "
                         "them, or move them below the marker as display switches")
    duplicated = sorted({f for f in fields if fields.count(f) > 1})
    assert not duplicated, f"{path.name}: the parameters cell sets {duplicated} twice"
    clashes = sorted(set(switches) & set(expected))
    assert not clashes, f"{path.name}: display switches {clashes} have the names of {cls.__name__} fields"


def test_a_new_config_field_fails_with_a_message_naming_it(monkeypatch):
    @dataclasses.dataclass
    class Grown:
        model: str = "unet_2_44"
        head: str = "reinit"

    source = ('# %% tags=["parameters"]\nmodel = "unet_2_44"\n' + SWITCHES_MARKER + '\nshow_widgets = True\n\n'
              "# %%\nconfig = pretrain.PretrainConfig(**{f.name: globals()[f.name] "
              "for f in dataclasses.fields(pretrain.PretrainConfig)})\n")
    notebook = Path("99_grown.py")
    monkeypatch.setattr(Path, "read_text", lambda self: source)
    monkeypatch.setattr(importlib.import_module("emlib.pretrain"), "PretrainConfig", Grown)
    with pytest.raises(AssertionError, match=r"lacks Grown field\(s\) \['head'\]"):
        test_parameters_cell_names_the_config_fields_then_the_display_switches(notebook)
