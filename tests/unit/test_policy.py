"""Least privilege per job: session policies generated from the plugins, and the target role.

moto does not evaluate IAM policies, so a small evaluator (Allow/Deny, `*`/`?` wildcards,
case-insensitive actions) checks what a generated policy would allow.
"""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml

from handler.app import lambda_handler
from handler.policy import session_policy, target_role_statements
from tasks import all_tasks, get_task
from tests.unit.fakes import (
    TARGET_ACCOUNTS,
    ApiCalls,
    FakeLambdaContext,
    create_distribution,
    sqs_event,
    sqs_record,
    v1_body,
)

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "111111111111"
OTHER = "222222222222"


def _matches(patterns: Any, value: str, *, ignore_case: bool) -> bool:
    items = [patterns] if isinstance(patterns, str) else patterns
    if ignore_case:
        return any(fnmatchcase(value.lower(), p.lower()) for p in items)
    return any(fnmatchcase(value, p) for p in items)


def allows(policy: str, action: str, resource: str) -> bool:
    """IAM's rule for one policy: an explicit Deny wins, else some Allow must match."""
    statements = json.loads(policy)["Statement"]

    def hit(s: dict[str, Any]) -> bool:
        return _matches(s["Action"], action, ignore_case=True) and _matches(
            s["Resource"], resource, ignore_case=False
        )

    if any(s["Effect"] == "Deny" and hit(s) for s in statements):
        return False
    return any(s["Effect"] == "Allow" and hit(s) for s in statements)


CLOUDFRONT = get_task("cloudfront.invalidate")
SSM = get_task("ssm.send_command")
DIST_ARN = f"arn:aws:cloudfront::{ACCOUNT}:distribution/EDIST00001"
INSTANCE_ARN = f"arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/i-0123456789abcdef0"


@pytest.mark.parametrize(
    ("action", "resource", "allowed"),
    [
        ("cloudfront:CreateInvalidation", DIST_ARN, True),
        ("cloudfront:GetInvalidation", DIST_ARN, False),  # status reads with the operator's role
        ("cloudfront:ListInvalidations", DIST_ARN, False),
        ("cloudfront:DeleteDistribution", DIST_ARN, False),
        ("cloudfront:UpdateDistribution", DIST_ARN, False),
        ("cloudfront:CreateInvalidation", DIST_ARN.replace(ACCOUNT, OTHER), False),
        ("iam:CreateUser", "*", False),
        ("s3:GetObject", "arn:aws:s3:::bucket/key", False),
        ("ssm:SendCommand", f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/i-0123456789abcdef0", False),
    ],
)
def test_cloudfront_session_policy_allows_only_its_declared_calls(
    action: str, resource: str, allowed: bool
) -> None:
    """GIVEN the session policy of a cloudfront.invalidate job in one account
    WHEN a call is evaluated against it
    THEN only the plugin's actions on that account's distributions are allowed."""
    policy = session_policy(CLOUDFRONT, "aws", ACCOUNT)

    assert allows(policy, action, resource) is allowed


def test_resource_scoped_policy_confines_a_job_to_its_distribution() -> None:
    """GIVEN a session policy scoped to the call's parameters
    WHEN another distribution of the same account is targeted THEN it is denied."""
    policy = session_policy(CLOUDFRONT, "aws", ACCOUNT, params={"distribution_id": "EDIST00001"})

    assert allows(policy, "cloudfront:CreateInvalidation", DIST_ARN)
    assert not allows(policy, "cloudfront:CreateInvalidation", DIST_ARN[:-1] + "2")


@pytest.mark.parametrize(
    ("action", "resource", "allowed"),
    [
        ("ssm:SendCommand", "arn:aws:ssm:us-east-1::document/AWS-RunShellScript", True),
        ("ssm:SendCommand", INSTANCE_ARN, True),
        ("ssm:SendCommand", INSTANCE_ARN.replace(ACCOUNT, OTHER), False),
        ("ssm:ListCommands", "*", True),
        ("ssm:GetCommandInvocation", "*", False),
        (
            "ssm:StartSession",
            f"arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/i-0123456789abcdef0",
            False,
        ),
        ("ssm:PutParameter", f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/x", False),
        ("ssm:DeleteDocument", f"arn:aws:ssm:us-east-1:{ACCOUNT}:document/mine", False),
    ],
)
def test_ssm_session_policy_allows_only_its_declared_calls(
    action: str, resource: str, allowed: bool
) -> None:
    """GIVEN the session policy of an ssm.send_command job
    WHEN a call is evaluated THEN only SendCommand (on documents and this account's instances)
    and the read-only result calls are allowed."""
    policy = session_policy(SSM, "aws", ACCOUNT)

    assert allows(policy, action, resource) is allowed


def test_every_plugin_session_policy_fits_the_sts_limit() -> None:
    """GIVEN every registered plugin WHEN its session policy is generated
    THEN it is valid JSON under STS's 2,048-character limit and names exactly the actions the
    plugin declares for that account's role (a role that plays every role gets them all)."""
    for task in all_tasks():
        for role, access in task.access.items():
            policy = session_policy(task, "aws-us-gov", ACCOUNT, [role])
            assert len(policy) < 2048, task.name
            actions = {a for s in json.loads(policy)["Statement"] for a in s["Action"]}
            assert actions == set(access.all_actions), (task.name, role)
        every = session_policy(task, "aws-us-gov", ACCOUNT, list(task.access))
        actions = {a for s in json.loads(every)["Statement"] for a in s["Action"]}
        assert actions == set(task.iam_actions), task.name


def test_target_role_template_matches_the_plugins() -> None:
    """GIVEN target-role.yaml and the plugins' declarations
    WHEN the role's task statements are compared with `fanout policy`'s
    THEN they are identical (the template cannot drift from the code)."""
    template = cfn_yaml.load(str(ROOT / "target-role.yaml"))
    [policy] = template["Resources"]["TargetRole"]["Properties"]["Policies"]

    def plain(value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"Fn::Sub"}:
            return str(value["Fn::Sub"])
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    in_template = [
        {k: plain(v) for k, v in statement.items()}
        for statement in policy["PolicyDocument"]["Statement"]
    ]

    assert in_template == target_role_statements(all_tasks())


@pytest.mark.usefixtures("worker_env")
def test_every_assume_role_carries_the_plugins_session_policy(
    context: FakeLambdaContext, api_calls: ApiCalls
) -> None:
    """GIVEN a batch with CloudFront and SSM jobs in one account
    WHEN the handler assumes the target role
    THEN each AssumeRole request carries the session policy of the plugin it serves."""
    account = TARGET_ACCOUNTS[0]
    dist = create_distribution(account)
    api_calls.calls.clear()
    cloudfront = v1_body(
        "cloudfront.invalidate",
        [{"account": account, "params": {"distribution_id": dist, "paths": ["/"]}}],
    )
    ssm = v1_body(
        "ssm.send_command",
        [{"account": account}],
        params={"document_name": "AWS-RunShellScript", "instance_ids": ["i-0123456789abcdef0"]},
    )

    lambda_handler(sqs_event(sqs_record(cloudfront), sqs_record(ssm)), context)

    policies = sorted(call["Policy"] for call in api_calls.of("AssumeRole"))
    assert policies == sorted(
        [session_policy(CLOUDFRONT, "aws", account), session_policy(SSM, "aws", account)]
    )
