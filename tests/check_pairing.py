"""Check that every notebooks/NN_name.py (the source) and its NN_name.ipynb agree.

    python tests/check_pairing.py [NOTEBOOK_DIR]

Both files are read with jupytext; the cell types and sources must be equal
(outputs and metadata are not compared). A source without its .ipynb, or an
.ipynb without its source, is an error. Exits 1 with a message naming each
offending file and how to fix it.
"""
import sys
from pathlib import Path

import jupytext

FIX = "re-pair it: jupytext --sync {py}  (or regenerate the .ipynb from the .py and execute it)"


def cells(path):
    """(cell_type, source) of every cell; trailing whitespace is not significant."""
    notebook = jupytext.read(path)
    return [(cell.cell_type, cell.source.rstrip()) for cell in notebook.cells]


def first_difference(a, b):
    """Where two cell lists first differ, as a short message."""
    for i, ((type_a, src_a), (type_b, src_b)) in enumerate(zip(a, b)):
        if type_a != type_b:
            return f"cell {i + 1} is {type_a} in the .py, {type_b} in the .ipynb"
        if src_a != src_b:
            lines_a, lines_b = src_a.splitlines(), src_b.splitlines()
            n = next((j for j, (x, y) in enumerate(zip(lines_a, lines_b)) if x != y), min(len(lines_a), len(lines_b)))
            line_a = lines_a[n] if n < len(lines_a) else "<end>"
            line_b = lines_b[n] if n < len(lines_b) else "<end>"
            return f"cell {i + 1}, line {n + 1}: .py has {line_a[:80]!r}, .ipynb has {line_b[:80]!r}"
    return f"{len(a)} cells in the .py, {len(b)} in the .ipynb"


def check(notebook_dir: Path) -> list:
    """A list of problems (empty when every pair agrees)."""
    problems = []
    sources = {p.stem: p for p in notebook_dir.glob("*.py")}
    notebooks = {p.stem: p for p in notebook_dir.glob("*.ipynb")}
    for stem in sorted(set(sources) | set(notebooks)):
        py, ipynb = sources.get(stem), notebooks.get(stem)
        if ipynb is None:
            problems.append(f"{py}: no paired {stem}.ipynb; create it: jupytext --to ipynb {py}, then execute it")
        elif py is None:
            problems.append(f"{ipynb}: no paired {stem}.py source; create it: jupytext --to py:percent {ipynb}")
        elif (a := cells(py)) != (b := cells(ipynb)):
            problems.append(f"{py} and {ipynb} disagree ({first_difference(a, b)}); " + FIX.format(py=py))
    return problems


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    notebook_dir = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "notebooks"
    if not notebook_dir.is_dir():
        print(f"check_pairing: notebook folder not found: {notebook_dir}", file=sys.stderr)
        return 1
    problems = check(notebook_dir)
    for problem in problems:
        print(f"check_pairing: {problem}", file=sys.stderr)
    n = len(list(notebook_dir.glob("*.py")))
    print(f"check_pairing: {n} notebook sources checked, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
