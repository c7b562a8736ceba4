"""The Jupyter Book: its toc, a warning-free build of its pages, and failing cells failing the build.

The build here uses the committed notebook outputs (execution off) so that it
takes seconds; `make book` executes every notebook (`execute_notebooks: force`),
and the last test checks that a failing cell then fails the build.
"""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
JUPYTER_BOOK = Path(sys.executable).parent / "jupyter-book"
pytestmark = pytest.mark.skipif(not JUPYTER_BOOK.exists(), reason=f"jupyter-book is not installed at {JUPYTER_BOOK}")


def toc_files(toc: dict) -> list:
    """Every `file:` of a jupyter-book toc, root first, in reading order."""
    files = [toc["root"]]
    for part in toc.get("parts", [toc]):
        files += [chapter["file"] for chapter in part.get("chapters", [])]
    return files


def source_of(name: str):
    """The file a toc entry builds from (.md or .ipynb), or None."""
    return next((ROOT / f"{name}{ext}" for ext in (".md", ".ipynb") if (ROOT / f"{name}{ext}").exists()), None)


def build(source_dir, config, toc, out_dir):
    return subprocess.run([str(JUPYTER_BOOK), "build", str(source_dir), "--config", str(config), "--toc", str(toc),
                           "--path-output", str(out_dir), "-W", "-n", "--keep-going"],
                          capture_output=True, text=True, timeout=300)


def test_toc_lists_every_chapter_and_each_exists():
    files = toc_files(yaml.safe_load((ROOT / "_toc.yml").read_text()))
    assert files[0] == "book/intro" and files[-1] == "book/references"
    assert files.index("notebooks/06_paper_results") < files.index("book/reproduction_status")
    missing = [f for f in files if source_of(f) is None]
    assert not missing, f"_toc.yml lists pages with no .md/.ipynb yet: {missing}"


def test_book_builds_without_warnings_and_has_every_page(tmp_path):
    """Build every toc page that exists (at least intro, 06 and the book/ pages)
    with -W -n, execution off, and find each page in the HTML."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [f for f in toc_files(toc) if source_of(f) is not None]
    for required in ("book/intro", "notebooks/06_paper_results", "book/gpu", "book/references"):
        assert required in files, f"{required} has no source"
    subset = {"format": "jb-book", "root": files[0], "chapters": [{"file": f} for f in files[1:]]}
    (tmp_path / "_toc.yml").write_text(yaml.safe_dump(subset))
    config = (ROOT / "_config.yml").read_text()
    assert "execute_notebooks: force" in config
    (tmp_path / "_config.yml").write_text(config.replace("execute_notebooks: force", 'execute_notebooks: "off"'))

    result = build(ROOT, tmp_path / "_config.yml", tmp_path / "_toc.yml", tmp_path / "out")
    log = result.stdout + result.stderr
    assert result.returncode == 0, "book build failed or warned:\n" + "\n".join(
        line for line in log.splitlines() if re.search(r"WARNING|ERROR|Error", line))[-3000:]
    html = tmp_path / "out" / "_build" / "html"
    for name in files:
        page = html / f"{name}.html"
        assert page.exists(), f"{name} is in the toc but {page} was not built"
    results_page = (html / "notebooks/06_paper_results.html").read_text()
    assert results_page.count("<table") >= 6  # Markdown tables of the notebook render as tables
    assert "colab.research.google.com/github/emlib-book/emlib/blob/main/notebooks/06_paper_results.ipynb" in results_page
    assert "Conrad" in (html / "book/references.html").read_text()  # the bibliography resolved


def test_a_failing_cell_fails_the_build(tmp_path):
    """With the repository's execution settings, an error in a notebook cell is a build error."""
    (tmp_path / "intro.md").write_text("# Intro\n\nA page.\n")
    (tmp_path / "refs.bib").write_text("@misc{none, title = {None}, year = {2024}}\n")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Fails"),
                                               nbformat.v4.new_code_cell("raise RuntimeError('cell failed on purpose')")])
    notebook.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nbformat.write(notebook, tmp_path / "fails.ipynb")
    config = (ROOT / "_config.yml").read_text().replace("book/references.bib", "refs.bib")
    (tmp_path / "_config.yml").write_text(config)
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: fails\n")

    result = build(tmp_path, tmp_path / "_config.yml", tmp_path / "_toc.yml", tmp_path)
    assert result.returncode != 0
    assert "fails.ipynb" in result.stdout + result.stderr
    shutil.rmtree(tmp_path / "_build", ignore_errors=True)


def test_choices_table_agrees_with_the_code():
    """book/choices.md: every `value` in backticks equals its `where` expression; every `where` names real code."""
    import ast
    import importlib

    from emlib.finetune import FinetuneConfig
    from emlib.pretrain import PretrainConfig

    namespace = {"PretrainConfig": PretrainConfig, "FinetuneConfig": FinetuneConfig,
                 "emlib": importlib.import_module("emlib")}
    for module in ("emlib.data.augment", "emlib.data.segmentation_folder", "emlib.data.images", "emlib.models.unet",
                   "emlib.finetune", "emlib.pretrain", "emlib.metrics", "emlib.models"):
        importlib.import_module(module)
    rows = [line for line in (ROOT / "book" / "choices.md").read_text().splitlines()
            if line.startswith("| ") and not line.startswith(("| setting", "|---"))]
    checked = 0
    for row in rows:
        _, value, where, _ = [cell.strip() for cell in row.strip("|").split("|")]
        expression = re.fullmatch(r"`([^`]+)`", where)
        if expression is None or expression.group(1) == "sources":
            continue
        actual = eval(expression.group(1), namespace)  # names real code, or fails here
        literal = re.fullmatch(r"`([^`]+)`", value)
        if literal:
            assert ast.literal_eval(literal.group(1)) == actual, row
            checked += 1
    assert checked >= 15


def test_choices_quotes_the_head_ablation_as_the_study_measured_it():
    """The output-head row of book/choices.md quotes the study's head ablation (fresh minus carried head, first
    evaluation, per dataset): the numbers must be the committed runs', not an earlier study's."""
    from emlib import study

    groups = study.load_groups(ROOT / "results" / "real_small")
    row = next(line for line in (ROOT / "book" / "choices.md").read_text().splitlines()
               if line.startswith("| output head of a pretrained generator"))
    quoted = 0
    for carried in (g for g in groups if study.describe(g)["head"] == "transfer"):
        axes = study.describe(carried)
        fresh = study.find(groups, dataset=axes["dataset"], model=axes["model"], init=axes["init"],
                           label_fraction=axes["label_fraction"])
        first = study.compare(fresh, carried, "first")
        assert f"{axes['dataset']} {first['difference']:+.1f} ± {first['ci95']:.1f}" in row, axes["dataset"]
        quoted += 1
    assert quoted > 0, "the committed study has no head ablation"
