"""Code digests: the code a rule's command runs, found by walking imports over the package's source.

Snakemake reruns a job when its shell command or its params change, but it cannot see the
Python a command imports. Each rule therefore carries the digest of exactly that code: the
command's function (``cmd_<rule>`` in its stage's ``commands.py``), the helpers of that module it
calls, and every module of the package it reaches through imports, module-level or inside a
function, relative or absolute, transitively (importing ``a.b.c`` also runs ``a/__init__.py`` and
``a/b/__init__.py``, so those count too). Third-party packages are not followed: their versions are
recorded by the provenance page.

What is hashed is the code, not its text: each module's syntax tree with docstrings removed and
without line numbers, so editing a comment, a docstring or blank lines reruns nothing, while a
one-token change in a function body reruns every rule whose command reaches that module.

A readout's arithmetic is imported by name at run time (:data:`nsdflow.readouts.registry.READOUTS`),
which no import statement shows; the DAG adds that module to the digest of the readout's fit jobs
(``extra``), so editing the MLP reruns the MLP's fits and not ridge's.
"""

from __future__ import annotations

import ast
import copy
import hashlib
from functools import lru_cache
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE = PACKAGE_DIR.name  # "nsdflow"
#: Where each stage's commands are defined (``cli`` holds the few that belong to no stage).
COMMAND_MODULES = tuple(f"{PACKAGE}.{stage}.commands" for stage in
                        ("data", "features", "readouts", "evaluate", "report", "submission")) + (f"{PACKAGE}.cli",)


def module_file(name: str) -> Path | None:
    """The source file of a module of the package (``nsdflow.a.b``), or None if it is not one."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _is_package(name: str) -> bool:
    path = module_file(name)
    return path is not None and path.name == "__init__.py"


@lru_cache(maxsize=None)
def _tree(name: str) -> ast.Module:
    path = module_file(name)
    if path is None:
        raise ValueError(f"{name} is not a module of {PACKAGE}")
    return ast.parse(path.read_text(), filename=str(path))


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


@lru_cache(maxsize=None)
def normalized_code(name: str) -> str:
    """A module's code as a canonical string: its syntax tree without docstrings or positions."""
    path = module_file(name)
    tree = _strip_docstrings(ast.parse(path.read_text(), filename=str(path)))
    return ast.dump(tree, include_attributes=False)


def _resolve(current: str, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names, relative to module ``current``."""
    if not node.level:
        return node.module or ""
    base = current.split(".") if _is_package(current) else current.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, tree: ast.AST | None = None) -> set[str]:
    """The package's modules that ``tree`` (default: module ``name``'s whole source) imports, at
    any depth of it; ``from m import x`` counts ``m``, and ``m.x`` when that is a module."""
    found: set[str] = set()
    for node in ast.walk(_tree(name) if tree is None else tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, node)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(t for t in targets if module_file(t) is not None)
    return found


def _with_parents(name: str) -> set[str]:
    """A module and the packages importing it runs (their ``__init__``)."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & {m for m in _all_modules()}


@lru_cache(maxsize=1)
def _all_modules() -> frozenset[str]:
    out = set()
    for path in PACKAGE_DIR.rglob("*.py"):
        rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.add(".".join(parts))
    return frozenset(out)


def closure(modules: set[str] | list[str]) -> set[str]:
    """Every module of the package that importing ``modules`` (and running what they import inside
    their functions) can execute."""
    todo = set()
    for m in modules:
        todo |= _with_parents(m)
    seen: set[str] = set()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        for imported in imports_of(m):
            todo |= _with_parents(imported) - seen
    return seen


def _top_level(tree: ast.Module) -> dict[str, ast.AST]:
    """The module's top-level definitions and imports, by the names they bind."""
    out: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out[node.name] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                out[(alias.asname or alias.name).split(".")[0]] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        out[n.id] = node
    return out


@lru_cache(maxsize=None)
def command_entry(command: str) -> tuple[str, str]:
    """``(module, function)`` of a command (``validate-data`` -> ``cmd_validate_data``)."""
    function = "cmd_" + command.replace("-", "_")
    for module in COMMAND_MODULES:
        if function in _top_level(_tree(module)):
            return module, function
    raise ValueError(f"no command {command!r}: no {function} in {', '.join(COMMAND_MODULES)}")


def _is_add(node: ast.AST, command: str | None = None) -> bool:
    """Whether a statement of a ``register`` function declares a command (``s = add("name", ...)``)."""
    call = node.value if isinstance(node, (ast.Assign, ast.Expr)) else None
    return (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "add" and call.args
            and isinstance(call.args[0], ast.Constant) and (command is None or call.args[0].value == command))


def _parser_nodes(register: ast.FunctionDef, command: str) -> list[ast.AST]:
    """The statements of ``register`` that declare ``command`` and its arguments (how its command
    line is parsed is part of what it runs; the other commands' declarations are not)."""
    out, inside = [], False
    for node in register.body:
        if _is_add(node):
            inside = _is_add(node, command)
        if inside:
            out.append(node)
    return out


def _entry_nodes(module: str, function: str) -> list[ast.AST]:
    """The command's function, the statements declaring its arguments, and the top-level names
    of its module they use, transitively (a helper it calls, an import it uses)."""
    defs = _top_level(_tree(module))
    command = function.removeprefix("cmd_").replace("_", "-")
    chosen, todo = [], [defs[function]]
    if "register" in defs:
        todo += _parser_nodes(defs["register"], command)
    while todo:
        node = todo.pop()
        if node in chosen:
            continue
        chosen.append(node)
        for n in ast.walk(node):
            if isinstance(n, ast.Name) and n.id in defs and defs[n.id] not in chosen and n.id != "add":
                todo.append(defs[n.id])
    return chosen


def command_modules(command: str, extra: tuple[str, ...] = ()) -> set[str]:
    """The modules a command's code reaches (its own module's parents included), plus ``extra``."""
    module, function = command_entry(command)
    reached: set[str] = set(extra) | _with_parents(module) - {module}
    for node in _entry_nodes(module, function):
        reached |= imports_of(module, node)
    return closure(reached)


@lru_cache(maxsize=None)
def code_digest(command: str, extra: tuple[str, ...] = ()) -> str:
    """A short hash of the code command ``command`` runs (see the module docstring).

    ``extra``: modules its code imports by name at run time (a readout's ``module:Class``).
    """
    module, function = command_entry(command)
    h = hashlib.sha256()
    for node in _entry_nodes(module, function):
        h.update(ast.dump(_strip_docstrings(copy.deepcopy(node)), include_attributes=False).encode())
    for name in sorted(command_modules(command, extra)):
        h.update(f"\n{name}\n".encode())
        h.update(normalized_code(name).encode())
    return h.hexdigest()[:16]
