"""``fanout invoke EVENT`` (``make invoke``) and the ``sam local invoke`` kit (local/env-vars.json).

``fanout invoke`` runs the real handler in the poller's killable child process; without
``AWS_ENDPOINT_URL`` it starts an emulator of its own, so these tests run it as a command in a
fresh process, as a newcomer would on a fresh clone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml

from fanout.cli import main
from fanout.emulator import DEFAULT_TARGET_ACCOUNTS, Emulator, Organisation, seed_organisation
from fanout.poller import LocalLambdaContext

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ENV_VARS = ROOT / "local" / "env-vars.json"
CONTAINER_ENDPOINT = "http://host.docker.internal:5000"


def fanout_invoke(*args: str) -> subprocess.CompletedProcess[str]:
    """``fanout invoke`` in a fresh process without any emulator in its environment."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FANOUT_"))}
    return subprocess.run(
        [sys.executable, "-m", "fanout", "invoke", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        timeout=150,
        check=False,
    )


@pytest.mark.timeout(180)
def test_on_a_fresh_machine_it_starts_an_emulator_and_the_event_succeeds() -> None:
    """GIVEN no AWS_ENDPOINT_URL (a fresh clone) and events/sqs-mixed-bad.json
    WHEN ``fanout invoke EVENT -o json`` runs
    THEN it starts an embedded emulator, the handler reports no batch-item failure, the good
    record's request succeeded in the ledger, the poison record is dead-lettered, exit 0."""
    done = fanout_invoke("events/sqs-mixed-bad.json", "-o", "json")

    result = json.loads(done.stdout)
    assert done.returncode == 0, done.stderr
    assert (result["embedded_emulator"], result["outcome"], result["ok"]) == (True, "ok", True)
    assert result["response"] == {"batchItemFailures": []}
    poison, good = result["records"]
    assert poison["request_id"] is None
    assert "dead-lettered" in poison["note"]
    assert good["request_id"] == "mixed-batch-good"
    assert good["status"]["summary"] == {"succeeded": 1, "failed": 0, "pending": 0, "total": 1}
    assert "fanout: note: no AWS_ENDPOINT_URL: ran against an embedded emulator" in done.stderr


@pytest.mark.timeout(180)
def test_the_lambda_sample_says_plainly_what_it_proves() -> None:
    """GIVEN events/sqs-lambda-invoke.json and no Docker
    WHEN ``fanout invoke`` runs it (embedded emulator, Docker-less Lambda)
    THEN both targets succeed, and a note says the function's code did not run."""
    done = fanout_invoke("events/sqs-lambda-invoke.json")

    assert done.returncode == 0, done.stderr
    assert "cache-warmup-2025-01-01" in done.stdout
    assert "runs no code" in done.stderr
    assert "not that the function ran" in done.stderr


@pytest.mark.parametrize("event", ["eventbridge/asg-launch.json"])
def test_an_eventbridge_event_is_refused_with_where_it_belongs(
    event: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN the ASG launch event (an input of the EventBridge rule, not of the function)
    WHEN ``fanout invoke`` is given it
    THEN exit 2 with one line saying what it is and where its input is tested."""
    code = main(["invoke", str(ROOT / "events" / event)])

    err = capsys.readouterr().err
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "is an EventBridge event (EC2 Instance Launch Successful)" in err
    assert "docs/triggers.md" in err


def test_a_running_emulator_named_by_the_environment_is_used(
    aws_env: Organisation,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """GIVEN a running emulator in the environment (the env file of `fanout emulator`) and an
    SQS event for its first account's distribution
    WHEN ``fanout invoke EVENT --running -o json`` runs
    THEN the handler ran against that emulator and the request succeeded."""
    target = aws_env.targets[0]
    request_id = f"invoke-{uuid.uuid4().hex[:12]}"
    body = json.dumps(
        {
            "version": 1,
            "task": "cloudfront.invalidate",
            "request_id": request_id,
            "targets": [
                {
                    "account": target.account,
                    "params": {"distribution_id": target.distribution_ids[0]},
                }
            ],
            "params": {"paths": ["/invoke.html"]},
        }
    )
    template = json.loads((ROOT / "events" / "sqs-cloudfront-invalidate.json").read_text())
    record = {**template["Records"][0], "messageId": str(uuid.uuid4()), "body": body}
    path = tmp_path / "event.json"
    path.write_text(json.dumps({"Records": [record]}))

    code = main(["invoke", str(path), "--running", "-o", "json"])

    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (result["embedded_emulator"], result["endpoint_url"]) == (False, aws_env.endpoint_url)
    [only] = result["records"]
    assert (only["request_id"], only["ok"]) == (request_id, True)


# ------------------------------------------------------------------ sam local invoke kit


def _declared_variables() -> dict[str, Any]:
    template = cfn_yaml.load(str(ROOT / "template.yaml"))
    return dict(template["Resources"]["WorkerFunction"]["Properties"]["Environment"]["Variables"])


def _env_vars() -> dict[str, str]:
    return dict(json.loads(ENV_VARS.read_text())["WorkerFunction"])


def test_the_env_vars_file_sets_every_declared_variable() -> None:
    """GIVEN local/env-vars.json and the function's declared variables
    WHEN compared THEN the file sets each of them and nothing else (sam local invoke overrides
    only declared variables and passes the others as the template resolves them: logical ids
    such as WorkQueue, which is how the function failed in issue 13)."""
    assert sorted(_env_vars()) == sorted(_declared_variables())


@pytest.fixture
def default_organisation(emulator: Emulator) -> Organisation:
    """What ``fanout emulator`` seeds: default names, stable ids, all three accounts."""
    return seed_organisation(emulator.endpoint_url, DEFAULT_TARGET_ACCOUNTS, stable_ids=True)


def test_the_env_vars_file_is_what_fanout_emulator_gives_a_container(
    default_organisation: Organisation,
) -> None:
    """GIVEN the organisation `fanout emulator` seeds
    WHEN its worker environment is seen from a container (host.docker.internal:5000)
    THEN every variable the env-vars file sets has that value."""
    local = default_organisation.handler_environment(log_level="INFO")
    seen = {
        name: value.replace(default_organisation.endpoint_url, CONTAINER_ENDPOINT)
        for name, value in local.items()
    }

    file = _env_vars()
    shared = {name: file[name] for name in file if name in seen}

    assert set(shared) >= {
        "AWS_ENDPOINT_URL",
        "WORK_QUEUE_URL",
        "DEAD_LETTER_QUEUE_URL",
        "LEDGER_TABLE",
        "ALLOWED_ACCOUNT_IDS",
        "TARGET_ROLE_NAME",
    }
    assert shared == {name: seen[name] for name in shared}


@pytest.fixture
def container_handler(
    default_organisation: Organisation, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Any]]:
    """The handler with the env-vars file's environment, the container's address pointed back at
    this machine's emulator (what host.docker.internal resolves to), and SAM's credentials."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in _env_vars().items():
        monkeypatch.setenv(
            name, value.replace(CONTAINER_ENDPOINT, default_organisation.endpoint_url)
        )
    for name, value in {
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    from handler import app  # noqa: PLC0415 - reads the environment set above

    app.reset()
    yield app.lambda_handler
    app.reset()


def test_with_the_env_vars_file_the_sample_event_succeeds(
    container_handler: Callable[..., Any],
) -> None:
    """GIVEN the function's environment from local/env-vars.json (as sam local invoke would set
    it in the container, minus Docker's networking)
    WHEN events/sqs-cloudfront-invalidate.json is passed to the real handler
    THEN no record fails (issue 13: every record failed with the template's own values)."""
    event = json.loads((ROOT / "events" / "sqs-cloudfront-invalidate.json").read_text())
    context = LocalLambdaContext.create(
        function_name="fanout-worker",
        region="us-east-1",
        account="123456789012",
        timeout_s=60,
        memory_mb=256,
    )

    assert container_handler(event, context) == {"batchItemFailures": []}
