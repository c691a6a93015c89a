"""What ships with the function, and what its cold start imports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _requirements(lines: list[str]) -> set[str]:
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def test_sam_build_packages_exactly_the_declared_runtime_dependencies() -> None:
    """GIVEN pyproject.toml's dependencies and tracing extra
    WHEN compared with src/requirements.txt (what sam build installs)
    THEN they are the same requirement strings."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = set(project["dependencies"]) | set(project["optional-dependencies"]["tracing"])

    packaged = _requirements((ROOT / "src" / "requirements.txt").read_text().splitlines())

    assert packaged == declared


def _name(requirement: str) -> str:
    """The distribution name of a requirement string, normalised (PEP 503)."""
    name = re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_function_packages_none_of_the_cli_dependencies() -> None:
    """GIVEN the CLI's extra (click, rich, PyYAML: operator tools only)
    WHEN compared with the function's requirements and pyproject's core dependencies
    THEN none of them is there: `sam build` never ships the CLI's libraries."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    cli = {_name(r) for r in project["optional-dependencies"]["cli"]}
    packaged = {
        _name(r)
        for r in _requirements((ROOT / "src" / "requirements.txt").read_text().splitlines())
    }
    core = {_name(r) for r in project["dependencies"]}

    assert {"click", "rich", "pyyaml"} <= cli
    assert packaged & cli == set()
    assert core & cli == set()


def test_the_cold_start_imports_none_of_the_cli_libraries() -> None:
    """GIVEN a fresh interpreter WHEN the handler module is imported THEN click, rich and yaml
    are not loaded (the function must run without them)."""
    modules = _modules_after_import({"PATH": "/usr/bin:/bin", "AWS_REGION": "us-east-1"})

    assert not [m for m in modules if m.split(".")[0] in {"click", "rich", "yaml"}]


def _modules_after_import(env: dict[str, str]) -> list[str]:
    code = "import json, sys, handler.app; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    return list(json.loads(out.stdout))


def test_cold_start_imports_no_xray_sdk_boto3_or_plugins_unless_needed() -> None:
    """GIVEN a fresh interpreter without TRACING
    WHEN the handler module is imported (the Lambda cold start)
    THEN neither the X-Ray SDK, nor boto3, nor pydantic, nor any plugin module is loaded."""
    env = {"PATH": "/usr/bin:/bin", "AWS_REGION": "us-east-1"}

    modules = _modules_after_import(env)

    assert not [m for m in modules if m.startswith(("aws_xray_sdk", "boto3", "pydantic"))]
    assert not [
        m
        for m in modules
        if m.startswith("tasks.")
        and m not in {"tasks.base", "tasks.registry", "tasks.errors", "tasks.aws"}
    ]


def test_tracing_wraps_the_handler_only_when_enabled() -> None:
    """GIVEN TRACING=true WHEN the handler module is imported THEN the X-Ray SDK is loaded."""
    env = {"PATH": "/usr/bin:/bin", "AWS_REGION": "us-east-1", "TRACING": "true"}

    modules = _modules_after_import(env)

    assert "aws_xray_sdk" in modules
