"""The package's shape: no import cycles, deferring is a leaf, procrastinate's private parts
are reached from backend/runtime/ alone."""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import backend

PACKAGE = Path(backend.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_modules(path: Path, known: set[str], this: str | None = None) -> set[str]:
    """The backend modules a file imports, at module level or inside functions alike (an
    import inside a function that closes a cycle is still a cycle), but not for type
    checking alone."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    this = this or module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and is_type_checking(node):
            for statement in node.orelse:
                visit(statement)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {name for name in found if name in known and name != this}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    known = set(files)
    return {name: imported_modules(path, known) for name, path in files.items()}


def test_backend_has_no_import_cycle() -> None:
    graph = import_graph()
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise AssertionError(f"import cycle: {cycle}") from None


def test_the_cycle_check_sees_a_cycle_closed_inside_a_function(tmp_path: Path) -> None:
    first = tmp_path / "first.py"
    first.write_text("from second import late\n")
    second = tmp_path / "second.py"
    second.write_text("def late():\n    import first\n")
    known = {"first", "second"}
    graph = {path.stem: imported_modules(path, known, path.stem) for path in (first, second)}
    assert graph == {"first": {"second"}, "second": {"first"}}


def test_deferring_is_a_leaf() -> None:
    """Application code that defers imports no task module, worker, API or process code."""
    script = (
        "import sys, backend.defer\n"
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('backend'))))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    heavy = ("backend.tasks", "backend.examples", "backend.api", "backend.process")
    assert [name for name in loaded if name.startswith(heavy)] == []
    assert "backend.runtime.worker" not in loaded


#: procrastinate's documented extension points, subclassed where they are declared.
PUBLIC_EXTENSION_POINTS = frozenset({"BaseRetryStrategy"})
#: procrastinate's public modules: its package, and the ones its reference documents.
PUBLIC_MODULES = frozenset(
    {"procrastinate", "procrastinate.exceptions", "procrastinate.jobs", "procrastinate.retry"}
)


def test_procrastinate_private_names_stay_in_runtime() -> None:
    """Subclassing procrastinate or importing its private names happens in runtime/ alone
    (besides its documented extension points, e.g. a custom retry strategy)."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "runtime" in path.relative_to(PACKAGE).parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        procrastinate_names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("procrastinate"):
                for alias in node.names:
                    procrastinate_names.add(alias.asname or alias.name)
                    if alias.name.startswith("_") or node.module not in PUBLIC_MODULES:
                        offenders.append(f"{path}: imports {node.module}.{alias.name}")
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and (isinstance(node.value, ast.Name) and node.value.id == "procrastinate")
            ):
                offenders.append(f"{path}: uses procrastinate.{node.attr}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for base in node.bases:
                    name = base.id if isinstance(base, ast.Name) else None
                    dotted = ast.unparse(base)
                    if name in PUBLIC_EXTENSION_POINTS:
                        continue
                    if name in procrastinate_names or dotted.startswith("procrastinate."):
                        offenders.append(f"{path}: {node.name} subclasses {dotted}")
    assert offenders == []
