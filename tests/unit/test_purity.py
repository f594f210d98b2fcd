"""The pure core performs no I/O and reads no clock: checked on the source (AST).

Covers every module under `extmm/domain/`, following imports of other `extmm` modules
transitively, so impurity cannot hide one module away.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "extmm"

FORBIDDEN_MODULES = frozenset(
    {
        # I/O and concurrency libraries
        "trio", "trio_websocket", "httpx", "x10", "loguru", "asyncio", "requests", "aiohttp",
        "websockets", "socket", "ssl", "select", "selectors", "http", "urllib",
        # the operating system, files, processes, threads, clocks
        "os", "sys", "io", "pathlib", "shutil", "tempfile", "subprocess", "signal",
        "threading", "multiprocessing", "concurrent", "time", "importlib",
    }
)
# What an extmm module outside the pure core (none today: the layer rules forbid it)
# may not import when the pure core imports it: it may read files, but not talk to the
# network, run an event loop or log.
FORBIDDEN_TRANSITIVELY = frozenset(
    {
        "trio", "trio_websocket", "httpx", "x10", "loguru", "asyncio", "requests", "aiohttp",
        "websockets", "socket", "ssl", "select", "selectors", "http", "urllib", "subprocess",
        "threading", "multiprocessing", "concurrent", "signal", "time",
    }
)
FORBIDDEN_CALLS = frozenset(
    {
        "time.time", "time.time_ns", "time.monotonic", "time.monotonic_ns", "time.perf_counter",
        "time.perf_counter_ns", "time.sleep", "datetime.now", "datetime.utcnow", "datetime.today",
        "date.today", "datetime.datetime.now", "datetime.datetime.utcnow", "datetime.date.today",
        "trio.current_time",
    }
)
FORBIDDEN_BUILTINS = frozenset({"open", "input", "print", "__import__", "breakpoint"})


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _resolve(module: str, level: int, importer: str, is_package: bool) -> str:
    """Absolute name of a (possibly relative) import inside `importer`."""
    if not level:
        return module
    parts = importer.split(".")
    # In a package's __init__, `.` is the package itself; in a plain module, its parent.
    keep = len(parts) - level + (1 if is_package else 0)
    return ".".join([*parts[:keep], module] if module else parts[:keep])


def impurities(
    source: str,
    module_name: str = "<source>",
    is_package: bool = False,
    strict: bool = True,
) -> tuple[list[str], list[str]]:
    """(problems, extmm modules imported) for one module's source; `strict` for the pure
    core itself, otherwise the looser rules for an extmm module it imports."""
    forbidden_modules = FORBIDDEN_MODULES if strict else FORBIDDEN_TRANSITIVELY
    problems: list[str] = []
    imported: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            checked = [alias.name for alias in node.names]
            targets = checked
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module or "", node.level, module_name, is_package)
            checked = [base]
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            checked = targets = []
            if isinstance(node, ast.Call):
                called = _dotted(node.func)
                if called in FORBIDDEN_CALLS or (
                    called and "datetime" in called and called.endswith((".now", ".utcnow", ".today"))
                ):
                    problems.append(f"line {node.lineno}: calls {called}()")
                elif strict and called in FORBIDDEN_BUILTINS:
                    problems.append(f"line {node.lineno}: calls builtin {called}()")
        problems += [f"line {node.lineno}: imports {name}" for name in checked if name.split(".")[0] in forbidden_modules]
        imported += [name for name in targets if name.split(".")[0] == "extmm"]
    return problems, imported


def _module_file(name: str) -> Path | None:
    relative = Path(*name.split("."))
    for candidate in (ROOT / relative.with_suffix(".py"), ROOT / relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None  # `from extmm.x import name` where name is not a module


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def pure_roots() -> list[Path]:
    return sorted((PACKAGE / "domain").rglob("*.py"))


def scan(roots: list[Path]) -> dict[str, list[str]]:
    """Problems per module, over `roots` and every extmm module they import (transitively)."""
    found: dict[str, list[str]] = {}
    pure = {_module_name(path) for path in roots}
    pending = [(name, path, name) for name, path in ((_module_name(path), path) for path in roots)]
    seen: set[str] = set()
    while pending:
        name, path, chain = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        problems, imported = impurities(
            path.read_text(encoding="utf-8"),
            name,
            is_package=path.name == "__init__.py",
            strict=name in pure,
        )
        if problems:
            found[chain] = problems
        for target in imported:
            # Importing extmm.a.b also runs the __init__ of extmm and extmm.a.
            parts = target.split(".")
            for depth in range(1, len(parts) + 1):
                prefix = ".".join(parts[:depth])
                file = _module_file(prefix)
                if file is not None and prefix not in seen:
                    pending.append((prefix, file, f"{chain} -> {prefix}"))
    return found


def test_there_is_a_pure_core_to_check():
    names = {p.name for p in pure_roots()}
    assert {"__init__.py", "units.py", "pnl.py", "orders.py"} <= names


def test_pure_core_imports_no_io_and_reads_no_clock():
    found = scan(pure_roots())
    report = "\n".join(f"{chain}: {problem}" for chain, problems in found.items() for problem in problems)
    assert not found, "impure code in the pure core:\n" + report


def test_pure_core_loads_no_io_library_at_runtime():
    """Belt and braces: import every pure module in a fresh interpreter and look."""
    modules = [_module_name(p) for p in pure_roots()]
    third_party = sorted({"trio", "trio_websocket", "httpx", "x10", "loguru", "asyncio", "aiohttp", "websockets", "requests"})
    code = textwrap.dedent(
        f"""
        import importlib, sys
        for name in {modules!r}:
            importlib.import_module(name)
        print(",".join(sorted(m for m in {third_party!r} if m in sys.modules)))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == ""


# -- the checker itself ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, expected",
    [
        ("import trio", "imports trio"),
        ("import trio_websocket as tw", "imports trio_websocket"),
        ("from httpx import AsyncClient", "imports httpx"),
        ("from x10.signing.order_object import create_order_object", "imports x10.signing.order_object"),
        ("from loguru import logger", "imports loguru"),
        ("import os.path", "imports os.path"),
        ("import sys", "imports sys"),
        ("import math, os", "imports os"),
        ("import socket", "imports socket"),
        ("import asyncio", "imports asyncio"),
        ("from pathlib import Path", "imports pathlib"),
        ("import time\nx = time.time()", "imports time"),
        ("from datetime import datetime\nx = datetime.now()", "calls datetime.now()"),
        ("import datetime\nx = datetime.datetime.utcnow()", "calls datetime.datetime.utcnow()"),
        ("def f(now):\n    return time.monotonic()", "calls time.monotonic()"),
        ("def f():\n    return open('x').read()", "calls builtin open()"),
        ("m = __import__('trio')", "calls builtin __import__()"),
        ("def f():\n    import trio\n    return trio", "imports trio"),
    ],
)
def test_checker_catches(source, expected):
    problems, _ = impurities(source, "extmm.domain.bad")
    assert any(expected in p for p in problems), problems


def test_checker_accepts_pure_code_and_follows_extmm_imports():
    source = textwrap.dedent(
        """
        from __future__ import annotations
        import enum, math
        from decimal import Decimal
        import attrs
        from datetime import timedelta
        from extmm.domain.units import Side
        from . import book
        from .volatility import Ewma
        """
    )
    problems, imported = impurities(source, "extmm.domain.quoting")
    assert problems == []
    assert {"extmm.domain.units", "extmm.domain.book", "extmm.domain.volatility"} <= set(imported)
    _, from_package = impurities("from . import units\nfrom .. import markets", "extmm.domain", is_package=True)
    assert {"extmm.domain.units", "extmm.markets"} <= set(from_package)


def test_checker_finds_impurity_one_import_away(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "extmm" / "domain").mkdir(parents=True)
    (tmp_path / "extmm" / "__init__.py").write_text("")
    (tmp_path / "extmm" / "domain" / "__init__.py").write_text("")
    (tmp_path / "extmm" / "domain" / "model.py").write_text("from extmm import helpers\n")
    (tmp_path / "extmm" / "helpers.py").write_text("import json, pathlib\nimport httpx\nprint(open('f').read())\n")
    found = scan([tmp_path / "extmm" / "domain" / "model.py"])
    assert found == {"extmm.domain.model -> extmm.helpers": ["line 2: imports httpx"]}
