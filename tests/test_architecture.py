"""The package's shape, checked on its source: imports point one way (no cycle among zerograd's
modules, imports inside functions included), a function imports only optional or heavy
libraries, no module imports another's private names, and no source file is over 500 lines.

The order of the layers itself is import-linter's contract in pyproject.toml (`make lint`);
docs/architecture.md explains both.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "zerograd"
PACKAGE = "zerograd"
MAX_LINES = 500
# Files over MAX_LINES, each with the reason it may be for now (a debt with a date, not a precedent).
OVERSIZED: dict[str, str] = {}  # file -> why it may stay over the limit for now
# What a function may import: optional extras and heavy libraries that commands not using them
# should not pay for, and torch's distributed machinery (only a DDP run needs it).
LAZY_LIBRARIES = ("matplotlib", "optuna", "onnx", "onnxruntime", "onnxscript", "torch.utils.tensorboard", "mlflow",
                  "torch.distributed", "torch.nn.parallel", "torch.utils.data.distributed", "pandas", "pyarrow",
                  "IPython")  # IPython: only in a notebook, where the kernel has loaded it
# zerograd's modules that import one of those (or Starlette and uvicorn) when they load: the CLI
# and the run's reporters import them inside the function that needs them, so `zerograd train`
# never loads matplotlib before it plots. Such an import must still point down the layers.
LAZY_MODULES = ("zerograd.reporting.plots", "zerograd.reporting.report", "zerograd.serve")
# Modules whose functions may import any zerograd module (still down the layers): the command line,
# whose `cmd_*` handlers import what they use, so `zerograd --help`, `zerograd recipes` and a mistyped
# flag answer without importing torch (tests/test_cli_startup.py). Nothing else gets this pass.
LAZY_IMPORTERS = ("zerograd.cli",)


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the zerograd module or library imported
    names: tuple[str, ...]  # what `from target import ...` takes (empty for `import target`)
    in_function: bool
    line: int
    type_only: bool = False  # under `if TYPE_CHECKING:`, never run


def module_files() -> dict[str, Path]:
    modules = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = module_files()


def resolve(name: str) -> str:
    """The zerograd module an import of `name` loads (`zerograd.runs.CONFIG` -> `zerograd.runs`)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports_of(module: str) -> list[Import]:
    path = MODULES[module]
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool, type_only: bool = False) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, True, type_only)
                continue
            if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                visit(child, in_function, True)
                continue
            if isinstance(child, ast.Import):
                found.extend(Import(module, alias.name, (), in_function, child.lineno, type_only)
                             for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = module if is_package else module.rpartition(".")[0]
                    for _ in range(child.level - 1):
                        anchor = anchor.rpartition(".")[0]
                    base = f"{anchor}.{base}" if base else anchor
                for alias in child.names:  # `from zerograd import runs` imports the module zerograd.runs
                    full = f"{base}.{alias.name}"
                    target, names = (full, ()) if full in MODULES else (base, (alias.name,))
                    found.append(Import(module, target, names, in_function, child.lineno, type_only))
            visit(child, in_function, type_only)

    visit(ast.parse(path.read_text()), False)
    return found


ALL_IMPORTS = [i for module in MODULES for i in imports_of(module)]


def internal(imp: Import) -> bool:
    return imp.target == PACKAGE or imp.target.startswith(PACKAGE + ".")


def cycles(imports: list[Import]) -> list[list[str]]:
    """Every group of modules that import each other, directly or through others (Tarjan)."""
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in imports:
        if internal(imp) and resolve(imp.target) != imp.source:
            edges[imp.source].add(resolve(imp.target))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in edges[node]:
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in MODULES:
        if node not in index:
            connect(node)
    return groups


def test_the_modules_import_each_other_one_way_only() -> None:
    assert cycles(ALL_IMPORTS) == []


def test_a_cycle_would_be_found() -> None:
    """The check itself: errors.py importing the CLI (inside a function) closes a cycle."""
    back = Import("zerograd.errors", "zerograd.cli", (), True, 1)
    assert any({"zerograd.errors", "zerograd.cli"} <= set(group) for group in cycles([*ALL_IMPORTS, back]))


def test_functions_import_only_optional_or_heavy_libraries() -> None:
    allowed = tuple(f"{name}." for name in LAZY_LIBRARIES)
    lazy = [i for i in ALL_IMPORTS if i.in_function]
    wrong = [f"{i.source}:{i.line} imports {i.target}" for i in lazy
             if not (i.target in LAZY_LIBRARIES or i.target.startswith(allowed) or i.target in LAZY_MODULES
                     or (i.source in LAZY_IMPORTERS and internal(i)))]
    assert wrong == []


def test_the_command_line_loads_no_torch_before_a_command_runs() -> None:
    """What cli.py imports when it loads (followed through every zerograd module it reaches) never
    imports torch: the reason its handlers may import lazily (the running check is in
    tests/test_cli_startup.py)."""
    seen, todo, heavy = set(), ["zerograd.cli"], []
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for imp in (i for i in ALL_IMPORTS if i.source == module and not i.in_function and not i.type_only):
            if internal(imp):
                todo.append(resolve(imp.target))
            elif imp.target == "torch" or imp.target.startswith("torch.") or imp.target.startswith("safetensors"):
                heavy.append(f"{module}:{imp.line} imports {imp.target}")
    assert heavy == []


def test_lazy_modules_really_import_something_heavy() -> None:
    """A module on the LAZY_MODULES list must earn its place: it imports an optional or heavy
    library (or another lazy module) when it loads."""
    heavy = (*LAZY_LIBRARIES, "starlette", "uvicorn", *LAZY_MODULES)
    for module in LAZY_MODULES:
        top = [i.target for i in ALL_IMPORTS if i.source == module and not i.in_function]
        assert any(t == h or t.startswith(h + ".") for t in top for h in heavy if h != module), module


def test_no_module_imports_the_private_names_of_another() -> None:
    wrong = [f"{i.source}:{i.line} imports {name} from {i.target}" for i in ALL_IMPORTS if internal(i)
             for name in i.names if name.startswith("_") and not name.startswith("__") and i.target != i.source]
    aliases = {(i.source, name) for i in ALL_IMPORTS if internal(i) and not i.names
               for name in (i.target.rpartition(".")[2],)}
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.attr.startswith("_")
                    and not node.attr.startswith("__") and (module, node.value.id) in aliases):
                wrong.append(f"{module}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert wrong == []


def test_no_source_file_is_over_500_lines() -> None:
    sizes = {str(path.relative_to(SRC)): len(path.read_text().splitlines()) for path in SRC.rglob("*.py")}
    assert {name: lines for name, lines in sizes.items() if lines > MAX_LINES and name not in OVERSIZED} == {}
    stale = [name for name in OVERSIZED if sizes.get(name, 0) <= MAX_LINES]
    assert stale == [], "these files are back under the limit: take them off OVERSIZED"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_says_what_it_holds(module: str) -> None:
    """The first thing a newcomer reads in a module: its docstring."""
    tree = ast.parse(MODULES[module].read_text())
    assert ast.get_docstring(tree), f"{module} has no module docstring"
