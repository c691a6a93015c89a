"""A first deploy without traps: every parameter explained and answerable with Enter, safe
samconfig defaults, a schedule whose runs are each their own request, the optional status role.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml

from handler.api import parse_message, status_role_actions
from tasks.registry import all_tasks
from tests.template.resolver import Resolved, resolve_template
from tests.template.schedule import Delivery, FakeClock, render

pytestmark = pytest.mark.template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = {name: ROOT / name for name in ("template.yaml", "target-role.yaml")}
SAMCONFIG = ROOT / "samconfig.toml"
WORKER_ROLE = "arn:aws:iam::999999999999:role/fanout-prod-WorkerExecutionRole-ABC"
OPERATORS = (
    "arn:aws:iam::999999999999:role/fanout-operator,"
    "arn:aws:iam::999999999999:role/aws-reserved/sso.amazonaws.com/*/AWSReservedSSO_Ops_*"
)
PURGE_TARGETS = json.dumps(
    [{"account": "111111111111", "params": {"distribution_id": "E2QWRUHEXAMPLE"}}]
)


def _load(name: str) -> dict[str, Any]:
    return dict(cfn_yaml.load(str(TEMPLATES[name])))


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return _load("template.yaml")


@pytest.fixture(scope="module")
def target_role() -> dict[str, Any]:
    return _load("target-role.yaml")


# ------------------------------------------------------------------ parameters


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_parameter_is_described(name: str) -> None:
    """GIVEN a template WHEN its parameters are read
    THEN each has a Description (the console and docs/deploy.md show it; the guided prompt
    does not, so the docs table is where a first deploy reads them)."""
    parameters = _load(name)["Parameters"]

    undescribed = [p for p, spec in parameters.items() if not str(spec.get("Description", ""))]

    assert undescribed == []


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_no_parameter_is_no_echo(name: str) -> None:
    """GIVEN a template WHEN its parameters are read
    THEN none is NoEcho: `sam deploy --guided` prompts a NoEcho parameter without its default,
    so an empty answer is asked again forever (nothing here is a secret)."""
    parameters = _load(name)["Parameters"]

    assert [p for p, spec in parameters.items() if spec.get("NoEcho")] == []


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_default_passes_its_own_constraints(name: str) -> None:
    """GIVEN a template WHEN every optional parameter is answered with Enter (its default)
    THEN each value passes its AllowedPattern (a guided deploy never fails on a default)."""
    parameters = _load(name)["Parameters"]

    refused = [
        p
        for p, spec in parameters.items()
        if spec["Type"] == "String"
        and "Default" in spec
        and "AllowedPattern" in spec
        and not re.fullmatch(spec["AllowedPattern"], str(spec.get("Default", "")))
    ]

    assert refused == []


def test_the_endpoint_variable_is_declared_and_empty(template: dict[str, Any]) -> None:
    """GIVEN the deployed stack WHEN the function's environment is resolved
    THEN AWS_ENDPOINT_URL is declared (so `sam local invoke --env-vars` can set it) and empty
    (boto3 then resolves each service's own endpoint: tests/unit/test_endpoint_variable.py)."""
    variables = resolve_template(template).properties("WorkerFunction")["Environment"]["Variables"]

    assert variables["AWS_ENDPOINT_URL"] == ""


# ------------------------------------------------------------------ samconfig.toml


def _overrides(environment: str) -> dict[str, str]:
    config = tomllib.loads(SAMCONFIG.read_text(encoding="utf-8"))
    text = config[environment]["deploy"]["parameters"]["parameter_overrides"]
    return dict(item.split("=", 1) for item in shlex.split(text))


@pytest.mark.parametrize("environment", ["default", "prod"])
def test_samconfig_offers_no_placeholder_as_if_real(environment: str) -> None:
    """GIVEN an environment of samconfig.toml WHEN its parameter_overrides are read
    THEN they name no account id or principal (placeholders become prompts' defaults), log at
    INFO, and create no schedule (a live schedule would need real targets)."""
    overrides = _overrides(environment)

    assert not [v for v in overrides.values() if re.search(r"\d{12}", v)], overrides
    assert overrides.get("LogLevel") == "INFO"
    assert not overrides.get("ScheduleTargets")


# ------------------------------------------------------------------ schedule


def _schedule_input(stack: Resolved) -> str:
    return str(stack.properties("Schedule")["Target"]["Input"])


def test_without_targets_there_is_no_schedule(template: dict[str, Any]) -> None:
    """GIVEN the default parameters (ScheduleTargets empty)
    WHEN the stack is resolved THEN no schedule exists: nothing runs against placeholders."""
    assert "Schedule" not in resolve_template(template).resources


def test_each_scheduled_run_is_its_own_request_and_a_retry_is_not(
    template: dict[str, Any],
) -> None:
    """GIVEN the nightly schedule (cron(0 3 * * ? *)) with one target, and a fake clock
    WHEN Scheduler's input is rendered for tonight's run, for a retry of it (another attempt,
    another execution id) and for the run a day later, and each is parsed by the worker
    THEN tonight and tomorrow are two requests, and the retry is tonight's request again."""
    stack = resolve_template(template, ScheduleTargets=PURGE_TARGETS)
    expression = stack.parameters["ScheduleExpression"]
    clock = FakeClock(datetime(2026, 1, 1, 12, 0, tzinfo=UTC))

    tonight = clock.next_run(expression)
    first = render(_schedule_input(stack), Delivery(tonight, attempt=1, execution_id="a1"))
    retry = render(_schedule_input(stack), Delivery(tonight, attempt=2, execution_id="b2"))
    clock.advance(timedelta(days=1))
    tomorrow = clock.next_run(expression)
    next_night = render(_schedule_input(stack), Delivery(tomorrow, execution_id="c3"))

    parsed = [
        parse_message(body, message_id=f"m-{n}", default_region="us-east-1")
        for n, body in enumerate((first, retry, next_night))
    ]
    assert tomorrow - tonight == timedelta(days=1)
    assert [p.request_id for p in parsed] == [
        "nightly-purge-2026-01-02T03:00:00Z",
        "nightly-purge-2026-01-02T03:00:00Z",
        "nightly-purge-2026-01-03T03:00:00Z",
    ]
    assert {(p.task, len(p.jobs)) for p in parsed} == {("cloudfront.invalidate", 1)}
    assert dict(parsed[0].jobs[0].params) == {
        "distribution_id": "E2QWRUHEXAMPLE",
        "paths": ["/*"],
    }


def test_the_schedule_input_names_the_scheduled_time_not_the_execution_id(
    template: dict[str, Any],
) -> None:
    """GIVEN the schedule's input template
    WHEN its Scheduler placeholders are listed
    THEN it uses exactly <aws.scheduler.scheduled-time>, in the request id (the execution id is
    per attempt: it would make every retry a new request)."""
    stack = resolve_template(template, ScheduleTargets=PURGE_TARGETS, ScheduleName="purge")

    placeholders = re.findall(r"<aws\.scheduler\.[a-z-]+>", _schedule_input(stack))

    assert placeholders == ["<aws.scheduler.scheduled-time>"]
    assert '"request_id":"purge-<aws.scheduler.scheduled-time>"' in _schedule_input(stack)


def test_the_schedule_sends_to_the_work_queue_as_its_role(template: dict[str, Any]) -> None:
    """GIVEN a schedule WHEN its target is resolved
    THEN it sends to the work queue through ScheduleRole, in the chosen state."""
    stack = resolve_template(template, ScheduleTargets=PURGE_TARGETS, ScheduleState="DISABLED")
    schedule = stack.properties("Schedule")

    assert schedule["Target"]["Arn"] == "<WorkQueue.Arn>"
    assert schedule["Target"]["RoleArn"] == "<ScheduleRole.Arn>"
    assert schedule["State"] == "DISABLED"


# ------------------------------------------------------------------ status role


def test_without_operators_target_role_yaml_has_no_status_role(
    target_role: dict[str, Any],
) -> None:
    """GIVEN target-role.yaml with its defaults WHEN resolved THEN only the target role exists."""
    stack = resolve_template(target_role, WorkerExecutionRoleArn=WORKER_ROLE)

    assert "StatusRole" not in stack.resources
    assert "StatusRoleArn" not in stack.outputs


def test_the_status_role_trusts_the_listed_operators_of_the_ops_account(
    target_role: dict[str, Any],
) -> None:
    """GIVEN operator principals (one an SSO wildcard)
    WHEN target-role.yaml is resolved
    THEN the status role trusts the worker's (ops) account only for those principals, at the
    target role's path, and allows exactly the plugins' status actions."""
    stack = resolve_template(
        target_role,
        WorkerExecutionRoleArn=WORKER_ROLE,
        StatusRolePrincipalArns=OPERATORS,
        RolePath="/fanout/",
    )
    role = stack.properties("StatusRole")
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    [policy] = role["Policies"]
    actions = [a for s in policy["PolicyDocument"]["Statement"] for a in s["Action"]]

    assert (role["RoleName"], role["Path"]) == ("OpsFanoutStatusRole", "/fanout/")
    assert trust["Principal"] == {"AWS": "arn:aws:iam::999999999999:root"}
    assert trust["Action"] == "sts:AssumeRole"
    assert trust["Condition"] == {"ArnLike": {"aws:PrincipalArn": OPERATORS.split(",")}}
    assert sorted(actions) == status_role_actions(all_tasks())
    assert stack.outputs["StatusRoleArn"] == "<StatusRole.Arn>"


def test_the_scheduled_purge_sample_is_what_the_schedule_delivers(
    template: dict[str, Any],
) -> None:
    """GIVEN events/sqs-scheduled-purge.json (the sample `fanout invoke` and sam local run)
    WHEN the schedule's input is rendered for the same target and 2026-01-02T03:00:00Z
    THEN the sample's body is exactly that (it cannot drift from the template)."""
    event = json.loads((ROOT / "events" / "sqs-scheduled-purge.json").read_text())
    [record] = event["Records"]
    stack = resolve_template(
        template, ScheduleTargets=json.dumps(json.loads(PURGE_TARGETS), separators=(",", ":"))
    )

    rendered = render(_schedule_input(stack), Delivery(datetime(2026, 1, 2, 3, 0, tzinfo=UTC)))

    assert record["body"] == rendered
