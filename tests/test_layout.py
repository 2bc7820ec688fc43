"""The packages import downwards only, and nothing installed imports experiments/.

    kerasbert_lite  <-  kerasbert  <-  training  <-  export  <-  experiments
    (TF-free runtime)   (layers)       (data, engine, CLI)  (exporters)  (results/ bookkeeping)

Each may import what is to its left, never what is to its right. Every import
statement counts, including those inside functions: a lazy import is still a
dependency (it is how the loop between the results table and the export
figures went unnoticed). The test reads the source with `ast`, so it imports
nothing and costs nothing.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Lowest first; where each package's folder sits.
LAYERS = {"kerasbert_lite": ROOT / "lite", "kerasbert": ROOT, "training": ROOT, "export": ROOT,
          "experiments": ROOT}
# The files a run folder holds, named only by their owner, `training.run_folder`.
RUN_FOLDER_FILES = {"config.json", "metrics.jsonl", "summary.json", "best.keras",
                    "learning_curves.png", "dev-outputs.npz", "test-outputs.npz", "latest.json",
                    "previous.json"}
RUN_FOLDER_OWNER = "training.run_folder"


def _modules():
    """{dotted module name: path} of every module of every package."""
    found = {}
    for package, base in LAYERS.items():
        for path in sorted((base / package).rglob("*.py")):
            parts = path.relative_to(base).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imports(name, path):
    """The modules of our packages that `name` imports anywhere in its source."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: from the module's own package
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                module = ".".join(package[:len(package) - node.level + 1] + ([module] if module
                                                                             else []))
            # `from pkg import sub` imports the submodule pkg.sub when there is one.
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module
                       for a in node.names]
        else:
            continue
        out.update(t for t in targets if t.split(".")[0] in LAYERS)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_the_packages_are_found():
    # Guards the glob: a moved folder must not leave the rules checking nothing.
    assert {"kerasbert.bert_backbone", "training.run", RUN_FOLDER_OWNER, "experiments.results",
            "kerasbert_lite.wordpiece"} <= set(MODULES)


@pytest.mark.parametrize("package", list(LAYERS))
def test_a_package_imports_only_the_packages_below_it(package):
    above = list(LAYERS)[list(LAYERS).index(package) + 1:]
    wrong = sorted(f"{name} imports {target}" for name, targets in GRAPH.items()
                   if name.split(".")[0] == package
                   for target in targets if target.split(".")[0] in above)
    assert not wrong, f"{package} may import only {list(LAYERS)[:list(LAYERS).index(package)]}"


def test_experiments_is_not_installed():
    setup = (ROOT / "setup.py").read_text()
    assert '"experiments' not in setup, "experiments/ is the repository's scripts, not a package"


def test_no_module_imports_itself_back():
    # Within a package too: the modules' imports form a tree-like order, no loop.
    state, loops = {}, []

    def visit(module, path):
        state[module] = "open"
        for target in sorted(GRAPH[module] & GRAPH.keys()):
            if state.get(target) == "open":
                loops.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert not loops, loops


def test_one_module_owns_the_run_folder_format():
    # A run folder's file names are written in one place, `training.run_folder`;
    # the trainer, export and experiments take them from there. (Docstrings
    # may describe the layout: only code constants count.)
    named = set()
    for name, path in MODULES.items():
        if name.split(".")[0] not in ("training", "export", "experiments") or \
                name == RUN_FOLDER_OWNER:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef))
                      and node.body and isinstance(node.body[0], ast.Expr)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in RUN_FOLDER_FILES and \
                    id(node) not in docstrings:
                named.add(f"{name}:{node.lineno} {node.value}")
    assert not named, sorted(named)
