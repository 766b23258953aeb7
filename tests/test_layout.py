"""The package's architecture, checked: imports flow one way through the layers below, no two modules import each
other (no import cycle at all), and main.py, --help and config validation read the one list of tasks.

Imports are read from the source with `ast` (every `import` / `from ... import`, also inside functions), so a lazy
import inside a function cannot hide an upward dependency.
"""
import ast
import subprocess
import sys

import pytest

from conftest import ROOT

# lowest first; a module may import its own layer and the layers below it, never a layer above
LAYERS = [
    ["yolo.boxes", "yolo.branching"],
    ["yolo.config", "yolo.config_checks"],
    ["yolo.data", "yolo.models", "yolo.assign", "yolo.anchors", "yolo.loss", "yolo.postprocess", "yolo.metrics",
     "yolo.metrics_curves", "yolo.box_quality", "yolo.viz"],
    ["yolo.engine"],
    ["yolo.research"],  # evolution, RSA, the tree search, merge / peel: built on the engine, apart from training
    ["yolo.tasks"],
    ["yolo.api", "yolo.cli"],  # the Python API and the command line (yolo-lab, main.py): the commands' callers
]


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path):
    """The yolo.* modules a file imports, resolved to absolute dotted names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module
            # `from . import x` / `from .pkg import mod` may name submodules: count them as imports too
            found.add(stem)
            found.update(f"{stem}.{alias.name}" for alias in node.names)
    modules = {module_name(p) for p in (ROOT / "yolo").rglob("*.py")}
    return {name for name in found if name in modules}


def layer_of(module):
    for index, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_layout.py")


def import_graph():
    return {module_name(p): imported_modules(p) for p in sorted((ROOT / "yolo").rglob("*.py"))}


def test_every_module_has_a_layer():
    for module in import_graph():
        if module != "yolo":
            layer_of(module)


def test_no_module_imports_a_higher_layer():
    upward = [f"{m} (layer {layer_of(m)}) imports {d} (layer {layer_of(d)})"
              for m, deps in import_graph().items() if m != "yolo" for d in deps if d != "yolo"
              and layer_of(d) > layer_of(m)]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    graph = import_graph()
    # a package's __init__ is imported by its submodules' imports of it; only edges between modules count
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if dep == node or dep == node.rpartition(".")[0]:
                continue
            if state.get(dep) == "open":
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_the_check_catches_an_upward_import(tmp_path, monkeypatch):
    """The layer rule must be able to fail: a model module importing the engine is reported."""
    fake = tmp_path / "yolo" / "models" / "bad.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from ..engine import trainer\n")
    (tmp_path / "yolo" / "engine").mkdir()
    (tmp_path / "yolo" / "engine" / "trainer.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    graph = import_graph()
    assert "yolo.engine.trainer" in graph["yolo.models.bad"]
    with pytest.raises(AssertionError, match="yolo.models.bad"):
        test_no_module_imports_a_higher_layer()


def test_every_task_has_a_module_with_run_and_help_lists_them_all():
    from yolo import tasks

    for name in tasks.TASKS:
        module = ROOT / "yolo" / "tasks" / f"{tasks.MODULE_OF.get(name, name)}.py"
        assert module.is_file(), module
        assert "\ndef run(cfg" in module.read_text(), f"{module} has no run(cfg)"
    out = subprocess.run([sys.executable, "main.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for name in tasks.TASKS:
        assert f"  {name} " in out.stdout


def test_an_unknown_task_is_a_clear_error():
    out = subprocess.run([sys.executable, "main.py", "--task", "trian"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode != 0 and "did you mean 'train'" in out.stderr and "Traceback" not in out.stderr


def test_task_names_are_checked_against_the_registry():
    from yolo.tasks import check_task_name

    check_task_name("train")
    with pytest.raises(ValueError, match="config field 'task' = 'dance' is not a command; choose one of train"):
        check_task_name("dance")


def test_every_head_is_built_in_models_heads():
    """build_head (every head, the plain 1x1 one included) and the hand-made tower live in yolo/models/heads.py;
    search_cell.py and search_ops.py hold only the searched head's parts; the detector asks heads.py."""
    def defined(path):
        tree = ast.parse((ROOT / path).read_text())
        return {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}

    assert {"build_head", "Tower3x3", "TowerHead"} <= defined("yolo/models/heads.py")
    for path in ("yolo/models/search_cell.py", "yolo/models/search_ops.py"):
        assert not {"build_head", "Tower3x3", "TowerHead"} & defined(path), path
    assert "yolo.models.heads" in imported_modules(ROOT / "yolo" / "models" / "detector.py")
