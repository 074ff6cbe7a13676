"""The tree shows the architecture (docs/ARCHITECTURE.md) and the imports keep to it.

Every import counts, the lazy ones inside functions included. Rules: no module imports itself
round a loop; across packages pipelines -> labeling -> c2fmae_data and model -> c2fmae_data;
inside a package a module imports its own unit (its sub-package, or itself for a top-level
module) or units of a LOWER layer of ``LAYERS``; Ray only in pipelines; a test module imports
no other test module (shared helpers live in tests/_*.py); no folder holds more than 12 modules;
every code sub-package says in its ``__init__`` docstring what it may import.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("c2fmae_data", "labeling", "pipelines", "model", "bench")
#: who may import whom across the top-level packages (tests may import anything)
CROSS = {"c2fmae_data": set(), "labeling": {"c2fmae_data"},
         "pipelines": {"labeling", "c2fmae_data"}, "model": {"c2fmae_data"},
         "bench": {"c2fmae_data", "labeling", "pipelines", "model", "tests"}}
#: per package, units from the bottom layer up; a unit is a sub-package or a top-level module
LAYERS = {
    "c2fmae_data": [["format"], ["loading"], ["tools"], ["label_eval"], ["cli", "__init__"]],
    "labeling": [["images", "compose", "listing", "overlap"], ["preflight"], ["detection"],
                 ["segmentation", "semantic"], ["presets"], ["labeler"], ["folder"],
                 ["cli", "__init__"]],
    "model": [["network"], ["pretraining"], ["finetuning"],
              ["pretrain", "finetune", "multigranular_ft", "evaluate", "export"], ["__init__"]],
    "pipelines": [["*"]],
    "bench": [["report"], ["data", "labelers", "training", "cluster"],
              ["demo", "pipeline", "__init__"]],
}
THIRD_PARTY_ONLY = {"ray": ("pipelines", "bench", "tests")}
MAX_MODULES = 12


def modules() -> "dict[str, Path]":
    out = {}
    for top in (*PACKAGES, "tests"):
        for p in sorted((REPO / top).rglob("*.py")):
            parts = p.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


MODULES = modules()


def imports_of(name: str, path: Path) -> "set[str]":
    """Modules (of this project, or top-level names of others) that ``name`` imports."""
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            subs = {f"{base}.{a.name}" for a in node.names} & MODULES.keys()
            found |= subs or {base}
    return {m if m in MODULES else m.split(".")[0] for m in found} - {name}


GRAPH = {m: imports_of(m, p) for m, p in MODULES.items()}


def unit_of(module: str) -> "tuple[str, str]":
    parts = module.split(".")
    return parts[0], (parts[1] if len(parts) > 1 else "__init__")


def layer(package: str, unit: str) -> int:
    for i, units in enumerate(LAYERS[package]):
        if unit in units or units == ["*"]:
            return i
    raise AssertionError(f"{package}.{unit} is in no layer of LAYERS: add it (and to the docs)")


def violations() -> "list[str]":
    bad = []
    for src, deps in GRAPH.items():
        top, unit = unit_of(src)
        for dst in deps:
            dtop = dst.split(".")[0]
            if dtop in THIRD_PARTY_ONLY and top not in THIRD_PARTY_ONLY[dtop]:
                bad.append(f"{src} imports {dtop}")
            if top == "tests" and dst.startswith("tests.") and dst.split(".")[1].startswith("test"):
                bad.append(f"{src} -> {dst}: shared test helpers live in tests/_*.py")
            if dst not in MODULES or top == "tests":
                continue
            if dtop != top:
                if dtop not in CROSS.get(top, set()):
                    bad.append(f"{src} -> {dst}: {top} may not import {dtop}")
                continue
            dunit = unit_of(dst)[1]
            if LAYERS[top] == [["*"]]:   # a flat package: one unit, the loop check covers it
                continue
            if dunit != unit and layer(top, dunit) >= layer(top, unit):
                bad.append(f"{src} -> {dst}: {top}.{unit} may not import {top}.{dunit}")
    return bad


def cycles() -> "list[list[str]]":
    state, found = {}, []

    def visit(u, stack):
        state[u] = 1
        stack.append(u)
        for v in sorted(GRAPH[u] & MODULES.keys()):
            if state.get(v) == 1:
                found.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v, stack)
        stack.pop()
        state[u] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [])
    return found


def test_no_import_circles_anywhere():
    assert cycles() == []


def test_imports_run_one_way():
    assert violations() == []


def test_the_rules_catch_a_wrong_import(monkeypatch):
    monkeypatch.setitem(GRAPH, "c2fmae_data.format.schema", GRAPH["c2fmae_data.format.schema"]
                        | {"c2fmae_data.loading.dataset", "ray"})
    monkeypatch.setitem(GRAPH, "model.finetune", GRAPH["model.finetune"] | {"model.pretrain"})
    monkeypatch.setitem(GRAPH, "labeling.images", GRAPH["labeling.images"] | {"labeling.folder"})
    bad = violations()
    assert "c2fmae_data.format.schema imports ray" in bad
    assert any(b.startswith("c2fmae_data.format.schema -> c2fmae_data.loading") for b in bad)
    assert any(b.startswith("model.finetune -> model.pretrain") for b in bad)
    assert cycles()       # labeling.folder imports labeling.images: now a loop


@pytest.mark.parametrize("folder", sorted({p.parent for p in MODULES.values()}),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_no_folder_holds_more_than_twelve_modules(folder):
    mods = [p for p in folder.glob("*.py") if p.name != "__init__.py"]
    assert len(mods) <= MAX_MODULES, f"{folder}: {len(mods)} modules"


@pytest.mark.parametrize("package", sorted(m for m, p in MODULES.items() if p.name == "__init__.py"
                                           and m.count(".") == 1 and not m.startswith("tests")))
def test_each_sub_package_says_what_it_holds_and_may_import(package):
    doc = ast.get_docstring(ast.parse(MODULES[package].read_text())) or ""
    assert "May import" in doc, f"{package}/__init__.py: no 'May import' rule in its docstring"
    assert len(doc.split("May import")[0].strip()) > 40, f"{package}: say what it holds"


def test_architecture_doc_lists_every_sub_package_and_module():
    doc = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    for name, path in MODULES.items():
        if name.startswith("tests") or path.name == "__init__.py":
            continue
        assert path.stem in doc, f"docs/ARCHITECTURE.md does not show {name}"
    for name, path in MODULES.items():
        if path.name == "__init__.py" and name.count(".") == 1 and not name.startswith("tests"):
            assert f"{name.split('.')[1]}/" in doc, f"docs/ARCHITECTURE.md lacks {name}/"
