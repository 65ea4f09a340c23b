"""The house rules of ARCHITECTURE.md, checked on the source: the Python floors import only from
below, no module imports in a circle, and the activations are listed once (in the C++ header)."""
from __future__ import annotations

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "python" / "fusegrad"

# Lowest floor first; a module may import from its own floor and below, never above.
FLOORS = [
    ("fusegrad._cpu", "fusegrad._cuda", "fusegrad._cuda_emulated", "fusegrad._emulated", "fusegrad._backend", "fusegrad.random",
     "fusegrad.cuda"),
    ("fusegrad.ops", "fusegrad.distributed"),
    ("fusegrad.autograd",),
    ("fusegrad.tensor", "fusegrad._tensor"),
    ("fusegrad.nn",),
    ("fusegrad.optim", "fusegrad.quantization"),
    ("fusegrad.data", "fusegrad.io"),
    ("fusegrad.train", "fusegrad.models"),
    ("fusegrad.bench", "fusegrad.__main__", "fusegrad._train_cli", "fusegrad._info"),
]


def floor_of(module: str) -> int:
    for level, prefixes in enumerate(FLOORS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    raise AssertionError(f"{module} belongs to no floor: add it to FLOORS and ARCHITECTURE.md")


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> set:
    """The fusegrad modules `name` imports (at any depth of its code), each resolved to a module
    file where one exists, else to the package."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t.startswith("fusegrad") and t != "fusegrad")
    return found


def test_every_module_has_a_floor():
    for name in MODULES:
        if name != "fusegrad":
            floor_of(name)


def test_no_module_imports_from_a_higher_floor():
    upward = []
    for name in MODULES:
        if name == "fusegrad":  # the package's front door re-exports every floor
            continue
        for target in imports_of(name):
            if floor_of(target) > floor_of(name):
                upward.append(f"{name} -> {target}")
    assert not upward, "imports from a higher floor:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    graph = {name: {t for t in imports_of(name) if t in MODULES} for name in MODULES if name != "fusegrad"}
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in graph.get(node, ()):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for name in graph:
        if name not in state:
            visit(name)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


ACTIVATIONS = {"relu", "leaky_relu", "sigmoid", "tanh", "silu", "gelu", "gelu_tanh"}


def test_activations_are_listed_once():
    # The C++ table (cpp/activation/activation.h, FG_ACTIVATIONS) is the one list: no Python
    # literal may enumerate two or more activation names, and no C++/CUDA source spells a name
    # as a string (they come from the table's #name).
    lists = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        # __all__ lists the public functions of a module (ops.relu, F.relu ...), not activations.
        exports = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Assign)
                   and any(isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)}
        for node in ast.walk(tree):
            if id(node) in exports:
                continue
            if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)):
                items = node.keys if isinstance(node, ast.Dict) else node.elts
                names = {i.value for i in items if isinstance(i, ast.Constant) and i.value in ACTIVATIONS}
                if len(names) >= 2:
                    lists.append(f"{path.relative_to(ROOT)}:{node.lineno} {sorted(names)}")
    assert not lists, "activation names listed outside cpp/activation/activation.h:\n" + "\n".join(lists)
    pattern = re.compile(r'"(%s)"' % "|".join(sorted(ACTIVATIONS)))
    spelled = [f"{p.relative_to(ROOT)}:{i + 1}" for folder in ("cpp", "cuda") for p in (ROOT / folder).rglob("*")
               if p.suffix in (".h", ".cpp", ".cu", ".cuh")
               for i, line in enumerate(p.read_text().splitlines()) if pattern.search(line)]
    assert not spelled, "activation names spelled as strings in C++/CUDA:\n" + "\n".join(spelled)


@pytest.mark.parametrize("folder", ["cpp", "cuda", "python/fusegrad"])
def test_files_are_short(folder):
    # One file, one thing: nothing grows past ~500 lines.
    # (The emulator's selftest kernels are test code, like tests/, and are not held to it.)
    long = [f"{p.relative_to(ROOT)} ({n} lines)" for p in (ROOT / folder).rglob("*")
            if p.suffix in (".h", ".cpp", ".cu", ".cuh", ".py") and not p.name.startswith("selftest")
            and (n := len(p.read_text().splitlines())) > 520]
    assert not long, "files over ~500 lines:\n" + "\n".join(long)
