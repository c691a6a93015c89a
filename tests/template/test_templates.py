"""Template tests: the SAM template, the target-role template and the sample events.

The external tools (SAM CLI, cfn-lint) live in their own virtualenv (`make setup` creates
`.tools/sam`); FANOUT_SAM / FANOUT_CFN_LINT point at them. A missing tool is a failure, never a
skip: these checks guard the deployment. Each tool runs once per template (module fixtures).
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml

pytestmark = pytest.mark.template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
TARGET_ROLE = ROOT / "target-role.yaml"
EVENTS_DIR = ROOT / "events"
TOOLS_BIN = ROOT / ".tools" / "sam" / "bin"
TOOL_TIMEOUT_SECONDS = 180
COMMAND_NOT_FOUND = 127

# Records whose body is deliberately not a valid message: (event file, messageId).
DELIBERATELY_BAD_RECORDS = {("sqs-mixed-bad.json", "e91b5a26-7f3c-4d08-a6e4-5c2d1b9f7e05")}

FUNCTION_ENVIRONMENT = {
    "TARGET_ROLE_NAME",
    "TARGET_ROLE_PATH",
    "EXTERNAL_ID",
    "ALLOWED_ACCOUNT_IDS",
    "ALLOWED_OU_IDS",
    "ALLOW_ANY_ACCOUNT",
    "DEAD_LETTER_QUEUE_URL",
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
    "LOG_LEVEL",
    "WORK_QUEUE_URL",
    "LEDGER_TABLE",
    "MAX_ATTEMPTS",
    "EVENT_BUS_NAME",
    "RESULTS_BUCKET",
    "AWS_STS_REGIONAL_ENDPOINTS",
    "TRACING",
    "AWS_ENDPOINT_URL",  # empty in AWS; the local kit points it at the emulator
}
TARGET_ROLE_ARN = {"Fn::Sub": "arn:${AWS::Partition}:iam::*:role${TargetRolePath}${TargetRoleName}"}


@dataclass(frozen=True)
class ToolRun:
    """Outcome of one external tool invocation, printable in an assertion message."""

    command: str
    returncode: int
    output: str

    def report(self) -> str:
        return f"$ {self.command}\n(exit {self.returncode})\n{self.output}"


def _tool(env_var: str, name: str) -> Path:
    configured = os.environ.get(env_var)
    return Path(configured) if configured else TOOLS_BIN / name


def _run(env_var: str, name: str, *args: str) -> ToolRun:
    tool = _tool(env_var, name)
    command = " ".join([str(tool), *args])
    if not tool.is_file():
        return ToolRun(
            command,
            COMMAND_NOT_FOUND,
            f"{name} not found at {tool}: run `make setup` or export {env_var}=/path/to/{name}",
        )
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "us-east-1"}
    completed = subprocess.run(
        [str(tool), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_SECONDS,
        check=False,
    )
    return ToolRun(command, completed.returncode, completed.stdout + completed.stderr)


def _sam(*args: str) -> ToolRun:
    return _run("FANOUT_SAM", "sam", *args)


def _cfn_lint(*args: str) -> ToolRun:
    return _run("FANOUT_CFN_LINT", "cfn-lint", *args)


# ------------------------------------------------------------------ tool runs (once each)


@pytest.fixture(scope="module")
def sam_validate_plain() -> ToolRun:
    # Plain validation runs the SAM translator, which catches unknown event properties that
    # the --lint path misses; samconfig.toml must not turn lint on for it.
    return _sam("validate", "-t", str(TEMPLATE))


@pytest.fixture(scope="module")
def sam_validate_lint_template() -> ToolRun:
    return _sam("validate", "--lint", "-t", str(TEMPLATE))


@pytest.fixture(scope="module")
def sam_validate_lint_target_role() -> ToolRun:
    return _sam("validate", "--lint", "-t", str(TARGET_ROLE))


@pytest.fixture(scope="module")
def cfn_lint_template() -> ToolRun:
    return _cfn_lint(str(TEMPLATE))


@pytest.fixture(scope="module")
def cfn_lint_target_role() -> ToolRun:
    return _cfn_lint(str(TARGET_ROLE))


# ------------------------------------------------------------------ parsed templates


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return dict(cfn_yaml.load(str(TEMPLATE)))


@pytest.fixture(scope="module")
def target_role() -> dict[str, Any]:
    return dict(cfn_yaml.load(str(TARGET_ROLE)))


@pytest.fixture(scope="module")
def worker_properties(template: dict[str, Any]) -> dict[str, Any]:
    function = template["Resources"]["WorkerFunction"]
    assert function["Type"] == "AWS::Serverless::Function"
    return dict(function["Properties"])


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _statements(policy_document: dict[str, Any]) -> list[dict[str, Any]]:
    return _as_list(policy_document["Statement"])


def _sqs_records() -> list[tuple[str, dict[str, Any]]]:
    records = []
    for path in sorted(EVENTS_DIR.glob("sqs-*.json")):
        event = json.loads(path.read_text(encoding="utf-8"))
        records.extend((path.name, record) for record in event["Records"])
    return records


# ------------------------------------------------------------------ external tools


def test_sam_validate_accepts_template(sam_validate_plain: ToolRun) -> None:
    """GIVEN template.yaml
    WHEN `sam validate` runs without lint (the SAM translator's own checks)
    THEN it succeeds."""
    assert sam_validate_plain.returncode == 0, sam_validate_plain.report()


def test_sam_validate_lint_accepts_template(sam_validate_lint_template: ToolRun) -> None:
    """GIVEN template.yaml
    WHEN `sam validate --lint` runs
    THEN it succeeds."""
    assert sam_validate_lint_template.returncode == 0, sam_validate_lint_template.report()


def test_sam_validate_lint_accepts_target_role(sam_validate_lint_target_role: ToolRun) -> None:
    """GIVEN target-role.yaml
    WHEN `sam validate --lint` runs
    THEN it succeeds."""
    assert sam_validate_lint_target_role.returncode == 0, sam_validate_lint_target_role.report()


def test_cfn_lint_reports_nothing_on_template(cfn_lint_template: ToolRun) -> None:
    """GIVEN template.yaml
    WHEN cfn-lint runs
    THEN it reports no error and no warning."""
    assert cfn_lint_template.returncode == 0, cfn_lint_template.report()


def test_cfn_lint_reports_nothing_on_target_role(cfn_lint_target_role: ToolRun) -> None:
    """GIVEN target-role.yaml
    WHEN cfn-lint runs
    THEN it reports no error and no warning."""
    assert cfn_lint_target_role.returncode == 0, cfn_lint_target_role.report()


# ------------------------------------------------------------------ template.yaml structure


def test_visibility_timeout_is_at_least_six_function_timeouts(template: dict[str, Any]) -> None:
    """GIVEN every allowed FunctionTimeoutSeconds
    WHEN the TimeoutSettings mapping is looked up
    THEN the queue's VisibilityTimeout is at least 6 x the timeout (and within the SQS max)."""
    allowed = template["Parameters"]["FunctionTimeoutSeconds"]["AllowedValues"]
    mapping = template["Mappings"]["TimeoutSettings"]

    visibility = {int(t): int(mapping[str(t)]["VisibilityTimeout"]) for t in allowed}

    assert all(6 * t <= v <= 43200 for t, v in visibility.items()), visibility


def test_work_queue_visibility_timeout_comes_from_the_mapping(template: dict[str, Any]) -> None:
    """GIVEN the work queue
    WHEN its VisibilityTimeout is read
    THEN it is the TimeoutSettings row of the FunctionTimeoutSeconds parameter."""
    queue = template["Resources"]["WorkQueue"]["Properties"]

    assert queue["VisibilityTimeout"] == {
        "Fn::FindInMap": [
            "TimeoutSettings",
            {"Ref": "FunctionTimeoutSeconds"},
            "VisibilityTimeout",
        ]
    }


def test_sqs_event_reports_batch_item_failures_with_bounded_concurrency(
    worker_properties: dict[str, Any],
) -> None:
    """GIVEN the worker's SQS event source
    WHEN its properties are read
    THEN it reports batch item failures and caps concurrency with ScalingConfig."""
    event = worker_properties["Events"]["WorkQueueEvent"]
    assert event["Type"] == "SQS"

    properties = event["Properties"]

    assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert properties["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "MaximumConcurrency"}


def test_execution_role_sts_statements_target_only_the_named_role(
    template: dict[str, Any],
) -> None:
    """GIVEN the worker's execution role and the policies attached to it
    WHEN their sts statements are read
    THEN no action is a wildcard and the only resource is the target-role ARN pattern."""
    resources = template["Resources"]
    documents = [
        p["PolicyDocument"] for p in resources["WorkerExecutionRole"]["Properties"]["Policies"]
    ]
    documents += [
        r["Properties"]["PolicyDocument"]
        for r in resources.values()
        if r["Type"] == "AWS::IAM::Policy"
        and {"Ref": "WorkerExecutionRole"} in r["Properties"]["Roles"]
    ]
    # A conditional statement (Fn::If) counts as both of its branches.
    statements = [
        branch
        for d in documents
        for s in _statements(d)
        for branch in (s["Fn::If"][1:] if "Fn::If" in s else [s])
        if isinstance(branch, dict) and "Action" in branch
    ]
    sts = [s for s in statements if any(a.startswith("sts:") for a in _as_list(s["Action"]))]

    assert sts, "no sts statement in WorkerExecutionRole"
    for statement in sts:
        assert all("*" not in action for action in _as_list(statement["Action"])), statement
        assert _as_list(statement["Resource"]) == [TARGET_ROLE_ARN], statement


def test_function_environment_is_exactly_the_configuration_names(
    worker_properties: dict[str, Any],
) -> None:
    """GIVEN the worker function
    WHEN its environment variables are read
    THEN they are exactly the configuration names of the contract."""
    variables = set(worker_properties["Environment"]["Variables"])

    assert variables == FUNCTION_ENVIRONMENT, variables ^ FUNCTION_ENVIRONMENT


# ------------------------------------------------------------------ target-role.yaml structure


def test_target_role_trusts_only_the_worker_execution_role(target_role: dict[str, Any]) -> None:
    """GIVEN the target role's trust policy
    WHEN its statements are read
    THEN every statement allows only the WorkerExecutionRoleArn parameter."""
    trust = target_role["Resources"]["TargetRole"]["Properties"]["AssumeRolePolicyDocument"]

    principals = [s["Principal"] for s in _statements(trust)]

    assert principals, "empty trust policy"
    assert all(p == {"AWS": {"Ref": "WorkerExecutionRoleArn"}} for p in principals), principals


def test_target_role_assume_role_requires_external_id_when_set(
    target_role: dict[str, Any],
) -> None:
    """GIVEN the target role's sts:AssumeRole statement
    WHEN its Condition is read
    THEN it is an Fn::If on HasExternalId requiring sts:ExternalId, otherwise no condition."""
    trust = target_role["Resources"]["TargetRole"]["Properties"]["AssumeRolePolicyDocument"]
    (assume,) = [s for s in _statements(trust) if "sts:AssumeRole" in _as_list(s["Action"])]

    condition_name, when_set, when_empty = assume["Condition"]["Fn::If"]

    assert condition_name == "HasExternalId"
    assert when_set == {"StringEquals": {"sts:ExternalId": {"Ref": "ExternalId"}}}
    assert when_empty == {"Ref": "AWS::NoValue"}


# ------------------------------------------------------------------ events/


def test_sample_sqs_bodies_are_known_message_shapes() -> None:
    """GIVEN every record of events/sqs-*.json except the deliberately bad ones
    WHEN its body is parsed as JSON
    THEN it is an envelope (version + task) or a legacy body (entries)."""
    records = [
        (name, record)
        for name, record in _sqs_records()
        if (name, record["messageId"]) not in DELIBERATELY_BAD_RECORDS
    ]
    assert records, f"no SQS records under {EVENTS_DIR}"

    for name, record in records:
        body = json.loads(record["body"])
        assert {"version", "task"} <= body.keys() or "entries" in body, (name, body)


def test_mixed_bad_event_has_exactly_one_unparseable_body() -> None:
    """GIVEN events/sqs-mixed-bad.json
    WHEN each record body is parsed as JSON
    THEN exactly the deliberately bad record fails."""
    unparseable = set()
    for name, record in _sqs_records():
        try:
            json.loads(record["body"])
        except json.JSONDecodeError:
            unparseable.add((name, record["messageId"]))

    assert unparseable == DELIBERATELY_BAD_RECORDS


def test_sample_sqs_message_ids_are_distinct_uuids() -> None:
    """GIVEN every record of events/sqs-*.json
    WHEN the messageIds are collected
    THEN each is a UUID and none repeats (a poller or ledger keys on it)."""
    ids = [record["messageId"] for _, record in _sqs_records()]

    assert all(str(uuid.UUID(i)) == i for i in ids), ids
    assert len(set(ids)) == len(ids), ids


def test_every_parameter_is_in_a_console_parameter_group(template: dict[str, Any]) -> None:
    """GIVEN template.yaml's parameters
    WHEN the console's ParameterGroups are read
    THEN each parameter appears in exactly one group (none hidden under "Other parameters")."""
    groups = template["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    grouped = [name for group in groups for name in group["Parameters"]]

    assert sorted(grouped) == sorted(template["Parameters"]), set(grouped) ^ set(
        template["Parameters"]
    )


def test_the_role_name_defaults_are_the_worker_s(
    template: dict[str, Any], target_role: dict[str, Any]
) -> None:
    """GIVEN the worker's default target role name (the CLI's and the emulator's default too)
    WHEN the two templates' role name parameters are read
    THEN both default to it: a stack deployed with defaults is the role the tools assume."""
    from handler.settings import DEFAULT_TARGET_ROLE_NAME  # noqa: PLC0415

    assert template["Parameters"]["TargetRoleName"]["Default"] == DEFAULT_TARGET_ROLE_NAME
    assert target_role["Parameters"]["RoleName"]["Default"] == DEFAULT_TARGET_ROLE_NAME
