"""Which public functions of volgan lack numpydoc ``Parameters`` / ``Returns`` sections.

A function counts as documented when its docstring has a ``Parameters`` section (if it takes arguments) and a
``Returns`` section (``Yields`` for a generator; neither when it is annotated ``-> None``). Prints the share and
the functions that lack a section, by module; exit status 1 when any does (a gate: tests/test_layout.py runs it),
0 otherwise.

    python scripts/check_docstrings.py
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "volgan"


def undocumented(path: Path) -> tuple[int, list[str]]:
    """The number of public module-level functions in ``path``, and the names of those lacking a section."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]
    missing = []
    for node in functions:
        doc = ast.get_docstring(node) or ""
        takes_arguments = any(a.arg not in ("self", "cls") for a in node.args.args + node.args.kwonlyargs)
        returns_none = node.returns is not None and ast.unparse(node.returns) == "None"
        documents_result = "Returns\n" in doc or "Yields\n" in doc
        if (takes_arguments and "Parameters\n" not in doc) or (not returns_none and not documents_result):
            missing.append(node.name)
    return len(functions), missing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="(kept for old scripts: the gaps are always listed)")
    parser.parse_args()
    total = done = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        count, missing = undocumented(path)
        total, done = total + count, done + count - len(missing)
        if missing:
            print(f"{path.relative_to(PACKAGE.parent)}: {', '.join(missing)}")
    print(f"{done} of {total} public functions have Parameters/Returns sections")
    return 0 if done == total else 1


if __name__ == "__main__":
    raise SystemExit(main())
