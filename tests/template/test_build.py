"""`sam build` packages a function that imports, on the runtime and architecture it declares."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from cfnlint.decode import cfn_yaml

from tasks.registry import task_names
from tests.template.test_templates import ROOT, _sam

pytestmark = pytest.mark.template

# pyenv exposes python3.12/3.13 through this (LOCAL-AWS-NOTES): sam build needs the runtime's
# interpreter on PATH when it builds without a container.
PYENV_VERSIONS = "3.11.7:3.12.1:3.13.0"
ELF_MACHINE = {"arm64": 183, "x86_64": 62}


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sam-build")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYENV_VERSION", PYENV_VERSIONS)
        run = _sam("build", "--build-dir", str(out), "--cache-dir", str(out / ".cache"))
    assert run.returncode == 0, run.report()
    return out / "WorkerFunction"


def _function() -> dict[str, object]:
    template = cfn_yaml.load(str(ROOT / "template.yaml"))
    return dict(template["Resources"]["WorkerFunction"]["Properties"])


def test_built_function_imports_and_registers_every_plugin(build_dir: Path) -> None:
    """GIVEN the artifact sam build made for the template's runtime
    WHEN that Python imports the handler from it (as Lambda would, with nothing else on path)
    THEN the handler imports and every plugin registers."""
    runtime = str(_function()["Runtime"])  # e.g. python3.12
    code = (
        "import json, tasks.registry, handler.app;"
        "print(json.dumps([t.name for t in tasks.registry.all_tasks()]))"
    )
    env = {"PATH": os.environ["PATH"], "PYENV_VERSION": PYENV_VERSIONS, "AWS_REGION": "us-east-1"}
    done = subprocess.run(
        [
            runtime,
            "-I",
            "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); " + code,
            str(build_dir),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == list(task_names())


def test_native_extensions_match_the_functions_architecture(build_dir: Path) -> None:
    """GIVEN the function's architecture (arm64) WHEN the artifact's compiled extensions are read
    THEN each is an ELF object for that machine (sam build picked the right wheels)."""
    [architecture] = list(_function()["Architectures"])  # type: ignore[call-overload]
    extensions = list(build_dir.rglob("*.so"))

    machines = {int.from_bytes(p.read_bytes()[18:20], "little") for p in extensions}

    assert extensions, "expected at least one compiled extension (wrapt) in the artifact"
    assert machines == {ELF_MACHINE[architecture]}
