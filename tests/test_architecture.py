"""The import graph of emlib keeps ARCHITECTURE.md's layer rule: no cycle, and no module imports from a layer
above its own. The layers are read from ARCHITECTURE.md's numbered list, so the page and this test cannot drift."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "emlib"
# Imports the rule allows, each for a reason ARCHITECTURE.md gives (function-level imports, all of them).
EXCEPTIONS = {
    ("emlib", "emlib.tiling"): "the package's lazy `emlib.predict`, so that `import emlib` does not import torch",
    ("emlib.models.receptive_field", "emlib.models"): "receptive_field(name) builds the model by the registry, "
                                                      "which re-exports receptive_field",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str, path: Path, known) -> set:
    """The emlib modules `name` imports anywhere in its file (top level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return {m for m in found if m in known and m != name}


def graph() -> dict:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def layers() -> dict:
    """{module or package name: layer number} from ARCHITECTURE.md's list `N. title: name, name, ...`."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    block = text.split("<!-- layers -->")[1]
    out = {}
    for number, names in re.findall(r"^(\d+)\. [^:\n]+: ([^\n]+)$", block, flags=re.M):
        for name in names.split(","):
            out["emlib" if name.strip() == "emlib" else "emlib." + name.strip().strip("`")] = int(number)
    assert out, "ARCHITECTURE.md has no numbered layer list between <!-- layers --> markers"
    return out


def layer_of(module: str, table: dict) -> int:
    """A module's layer: its own entry, else its package's (emlib.data.au -> emlib.data)."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in table:
            return table[".".join(parts[:end])]
    raise AssertionError(f"{module} is in no layer of ARCHITECTURE.md: add it to the layer list")


def test_every_module_has_a_layer():
    table = layers()
    for module in modules():
        layer_of(module, table)
    stale = [name for name in table if name not in modules()]
    assert not stale, f"ARCHITECTURE.md lists modules that do not exist: {stale}"


def test_no_module_imports_from_a_higher_layer():
    table, upward = layers(), []
    for module, targets in graph().items():
        for target in sorted(targets):
            if (module, target) not in EXCEPTIONS and layer_of(target, table) > layer_of(module, table):
                upward.append(f"{module} (layer {layer_of(module, table)}) imports {target} "
                              f"(layer {layer_of(target, table)})")
    assert not upward, "imports against ARCHITECTURE.md's layers:\n" + "\n".join(upward)


def test_the_import_graph_has_no_cycle():
    edges = {m: {t for t in targets if (m, t) not in EXCEPTIONS} for m, targets in graph().items()}
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == "open":
                cycle = stack[stack.index(target):] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_the_checker_sees_relative_and_function_level_imports(tmp_path):
    known = {"emlib.models", "emlib.models.unet", "emlib.paper"}
    source = tmp_path / "hrnet.py"
    source.write_text("from .unet import UNet\n\ndef f():\n    from emlib import paper\n")
    assert imports("emlib.models.hrnet", source, known) == {"emlib.models.unet", "emlib.paper"}
