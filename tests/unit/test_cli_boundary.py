"""The operator CLI reaches the worker through ``handler.api`` only.

``handler.api`` is the worker's declared API for its tools: the lead reshapes everything behind
it, so a CLI module that imports another ``handler`` module would break silently. The one other
name allowed is ``handler.app``, the function's entry point (template.yaml's Handler), which the
local stand-ins for the Lambda runtime import as Lambda does.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "scripts" / "fanout"
ALLOWED = {"handler.api", "handler.app", "tasks", "tasks.registry"}
# Benchmarks that time or count the worker's own parts (B1's phases and event entries, B5's
# client cache): they measure the internals by design, and break loudly (mypy, the bench run)
# when those are reshaped.
MEASURES_INTERNALS = {
    "bench/b1_throughput.py": {
        "handler.dispatch",
        "handler.dynamo",
        "handler.event_sender",
        "handler.ledger_dynamodb",
        "handler.requests_dynamodb",
    },
    "bench/b5_overhead.py": {"handler.clients"},
}


def _worker_imports(path: Path) -> set[str]:
    """Every module of the worker (``handler``, ``tasks``) that ``path`` imports, at any depth
    (lazy and TYPE_CHECKING imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in {"handler", "tasks"}:  # from handler import api
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
    return {name for name in found if name.split(".")[0] in {"handler", "tasks"}}


def test_cli_modules_import_the_worker_only_through_handler_api() -> None:
    """GIVEN every module of scripts/fanout
    WHEN their imports are read
    THEN none imports a worker module other than handler.api (handler.app for the runtime
    stand-ins, the tasks registry's public names)."""
    imports = {
        path.relative_to(CLI).as_posix(): _worker_imports(path) for path in CLI.rglob("*.py")
    }

    allowed = {path: ALLOWED | MEASURES_INTERNALS.get(path, set()) for path in imports}
    offenders = {
        path: sorted(names - allowed[path])
        for path, names in imports.items()
        if names - allowed[path]
    }

    assert any("handler.api" in names for names in imports.values())  # the scan sees imports
    assert offenders == {}, "import these through handler.api (add the name there if missing)"


def test_the_scan_catches_a_private_worker_import(tmp_path: Path) -> None:
    """GIVEN a module importing handler.ledger in a function (as a lazy import would)
    WHEN its imports are read THEN handler.ledger is among them."""
    module = tmp_path / "bad.py"
    module.write_text(
        "def f():\n"
        "    from handler.ledger import DynamoDBLedger\n"
        "    from handler import envelope\n"
    )

    assert _worker_imports(module) == {"handler.ledger", "handler.envelope"}
