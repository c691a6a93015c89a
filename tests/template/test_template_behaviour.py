"""What template.yaml deploys for given parameter values: security boundary and operations.

Each test resolves the template's conditions and intrinsic functions for one set of parameters
(tests/template/resolver.py; resources appear as ``<LogicalId>`` / ``<LogicalId.Attribute>``)
and checks one behaviour of the result: who may publish, which accounts the worker may enter,
the optional VPC attachment, the Auto Scaling launch rule, the alarms and the dashboard.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml

from handler.envelope import parse_message
from tests.template.resolver import PSEUDO_PARAMETERS, Resolved, ResolveError, resolve_template

pytestmark = pytest.mark.template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
SAMCONFIG = ROOT / "samconfig.toml"

OPS_ROLE = "arn:aws:iam::123456789012:role/ops-fanout-publisher"
SSO_ROLES = "arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/*/AWSReservedSSO_Ops_*"
DNS = {
    "DnsAutoRegisterGroupNames": "web-asg,api-asg",
    "DnsZoneName": "corp.example.com",
    "DnsDirectoryAccount": "333333333333",
    "DnsDirectoryInstanceId": "i-0fedcba9876543210",
}
VPC = {"SubnetIds": "subnet-0a1b2c3d,subnet-4e5f6a7b", "SecurityGroupIds": "sg-0123abcd"}
ASSUME_ACTIONS = ["sts:AssumeRole", "sts:SetSourceIdentity", "sts:TagSession"]
ENI_ACTIONS = {
    "ec2:CreateNetworkInterface",
    "ec2:DeleteNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DetachNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
}
EMF_METRICS = {
    "JobsSucceeded",
    "JobsFailed",
    "JobsDeferred",
    "JobsDeadLettered",
    "Throttles",
    "JobDuration",
}

# An "EC2 Instance Launch Successful" event as EventBridge delivers it (AWS documentation sample,
# group renamed to one of DNS's groups); the same file documents the trigger in events/.
ASG_LAUNCH_EVENT: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "events" / "eventbridge" / "asg-launch.json").read_text()
)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return dict(cfn_yaml.load(str(TEMPLATE)))


@pytest.fixture(scope="module")
def deploy(template: dict[str, Any]) -> Callable[..., Resolved]:
    def resolve(**parameters: str) -> Resolved:
        return resolve_template(template, **parameters)

    return resolve


def _statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    statements = document["Statement"]
    return list(statements) if isinstance(statements, list) else [statements]


def _by_sid(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for s in _statements(document)}


def _queue_policy(stack: Resolved) -> dict[str, dict[str, Any]]:
    return _by_sid(stack.properties("WorkQueuePolicy")["PolicyDocument"])


def _assume_statements(stack: Resolved) -> list[dict[str, Any]]:
    """Every statement granting sts:AssumeRole to the worker (inline or attached policy)."""
    documents = [p["PolicyDocument"] for p in stack.properties("WorkerExecutionRole")["Policies"]]
    documents += [
        r["Properties"]["PolicyDocument"]
        for r in stack.resources.values()
        if r["Type"] == "AWS::IAM::Policy" and "<WorkerExecutionRole>" in r["Properties"]["Roles"]
    ]
    return [
        s
        for d in documents
        for s in _statements(d)
        if s["Effect"] == "Allow" and "sts:AssumeRole" in s["Action"]
    ]


def _environment(stack: Resolved) -> dict[str, str]:
    return dict(stack.properties("WorkerFunction")["Environment"]["Variables"])


def _alarms(stack: Resolved) -> dict[str, dict[str, Any]]:
    return {
        name: dict(r["Properties"])
        for name, r in stack.resources.items()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    }


def _json_path(document: dict[str, Any], path: str) -> Any:
    value: Any = document
    for part in path.removeprefix("$.").split("."):
        value = value[part]
    return value


def _render_input(transformer: dict[str, Any], event: dict[str, Any]) -> str:
    """EventBridge's InputTransformer for string placeholders inside quotes: raw insertion."""
    rendered = transformer["InputTemplate"]
    for name, path in transformer["InputPathsMap"].items():
        rendered = rendered.replace(f"<{name}>", str(_json_path(event, path)))
    return str(rendered)


def _pattern_matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    """EventBridge matching for the subset the rule uses: exact values, nested objects."""
    for key, expected in pattern.items():
        if key not in event:
            return False
        if isinstance(expected, dict):
            if not isinstance(event[key], dict) or not _pattern_matches(expected, event[key]):
                return False
        elif event[key] not in expected:
            return False
    return True


def _asg_target(stack: Resolved) -> dict[str, Any]:
    (target,) = stack.properties("AsgLaunchRule")["Targets"]
    return dict(target)


# ------------------------------------------------------------------ publishers (work queue policy)


def test_without_publisher_list_no_statement_admits_other_principals(
    deploy: Callable[..., Resolved],
) -> None:
    """GIVEN no PublisherPrincipalArns and no ASG rule
    WHEN the work queue policy is resolved
    THEN it only denies (so only IAM-authorised principals of this account can send)."""
    statements = _queue_policy(deploy())

    assert {s["Effect"] for s in statements.values()} == {"Deny"}, statements
    assert "DenyUnlistedPublishers" not in statements


def test_only_listed_publishers_and_the_stack_own_principals_escape_the_deny(
    deploy: Callable[..., Resolved],
) -> None:
    """GIVEN two publisher ARNs (one an SSO wildcard)
    WHEN the work queue policy is resolved
    THEN sqs:SendMessage is denied to every non-service principal except those two, the
    ScheduleRole and the worker's execution role (which re-sends deferred targets)."""
    statement = _queue_policy(deploy(PublisherPrincipalArns=f"{OPS_ROLE},{SSO_ROLES}"))[
        "DenyUnlistedPublishers"
    ]

    assert (statement["Principal"], statement["Action"]) == ("*", "sqs:SendMessage")
    assert statement["Resource"] == "<WorkQueue.Arn>"
    assert statement["Condition"] == {
        "ArnNotLike": {
            "aws:PrincipalArn": [
                "<ScheduleRole.Arn>",
                "<WorkerExecutionRole.Arn>",
                OPS_ROLE,
                SSO_ROLES,
            ]
        },
        "BoolIfExists": {"aws:PrincipalIsAWSService": "false"},
    }


def test_asg_rule_is_the_only_service_allowed_to_send(deploy: Callable[..., Resolved]) -> None:
    """GIVEN the ASG launch rule is enabled
    WHEN the work queue policy is resolved
    THEN events.amazonaws.com may send only for the rule's ARN and any other service
    principal (or source) is denied."""
    statements = _queue_policy(deploy(**DNS))

    assert statements["AllowAsgLaunchRule"] == {
        "Sid": "AllowAsgLaunchRule",
        "Effect": "Allow",
        "Principal": {"Service": "events.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": "<WorkQueue.Arn>",
        "Condition": {"ArnEquals": {"aws:SourceArn": "<AsgLaunchRule.Arn>"}},
    }
    assert statements["DenyOtherServicePublishers"]["Condition"] == {
        "Bool": {"aws:PrincipalIsAWSService": "true"},
        "ArnNotEquals": {"aws:SourceArn": "<AsgLaunchRule.Arn>"},
    }


def test_without_asg_rule_every_service_principal_is_denied(
    deploy: Callable[..., Resolved],
) -> None:
    """GIVEN no ASG launch rule
    WHEN the work queue policy is resolved
    THEN sqs:SendMessage is denied to every AWS service principal."""
    statement = _queue_policy(deploy())["DenyOtherServicePublishers"]

    assert statement["Effect"] == "Deny"
    assert statement["Condition"] == {"Bool": {"aws:PrincipalIsAWSService": "true"}}


def test_both_queues_still_deny_insecure_transport(deploy: Callable[..., Resolved]) -> None:
    """GIVEN publishers and the ASG rule configured
    WHEN both queue policies are resolved
    THEN each still denies every sqs action without TLS."""
    stack = deploy(PublisherPrincipalArns=OPS_ROLE, **DNS)

    for name in ("WorkQueuePolicy", "DeadLetterQueuePolicy"):
        statement = _by_sid(stack.properties(name)["PolicyDocument"])["DenyInsecureTransport"]
        assert statement["Action"] == "sqs:*", name
        assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}, name


@pytest.mark.parametrize(
    "value",
    [
        f"{OPS_ROLE}, {OPS_ROLE}",  # a space would become part of the ARN
        'arn:aws:iam::123456789012:role/x"',
        "arn:aws:sqs:us-east-1:123456789012:queue",
        "123456789012",
    ],
)
def test_malformed_publisher_lists_are_refused_at_deploy(
    deploy: Callable[..., Resolved], value: str
) -> None:
    """GIVEN a PublisherPrincipalArns value that is not a list of IAM principal ARNs
    WHEN the stack is deployed
    THEN the parameter's AllowedPattern refuses it."""
    with pytest.raises(ResolveError, match="PublisherPrincipalArns"):
        deploy(PublisherPrincipalArns=value)


# ------------------------------------------------------------------ organisation allow-list


def test_allowed_ous_reach_the_worker_with_permission_to_walk_them(
    deploy: Callable[..., Resolved],
) -> None:
    """GIVEN AllowedOuIds
    WHEN the stack is resolved
    THEN the function gets ALLOWED_OU_IDS and its role may list OU children and accounts and
    nothing else."""
    ous = "ou-ab12-11111111,ou-ab12-22222222"
    stack = deploy(AllowedOuIds=ous)

    policy = stack.properties("WorkerOrganizationsPolicy")
    statements = _by_sid(policy["PolicyDocument"])

    assert _environment(stack)["ALLOWED_OU_IDS"] == ous
    assert policy["Roles"] == ["<WorkerExecutionRole>"]
    assert statements["WalkAllowedOus"]["Action"] == [
        "organizations:ListAccountsForParent",
        "organizations:ListChildren",
    ]
    assert statements["WalkAllowedOus"]["Resource"] == "arn:aws:organizations::*:ou/o-*/ou-*"
    assert set(statements) == {"WalkAllowedOus"}
    assert {s["Effect"] for s in statements.values()} == {"Allow"}


def test_organization_targeting_adds_read_only_listing_of_accounts_roots_and_tags(
    deploy: Callable[..., Resolved],
) -> None:
    """GIVEN OrganizationTargeting=true (messages may select targets by OU and account tag)
    WHEN the stack is resolved
    THEN the worker may walk OUs and roots, list accounts and read account tags, nothing else."""
    stack = deploy(AllowedAccountIds="111111111111", OrganizationTargeting="true")

    statements = _by_sid(stack.properties("WorkerOrganizationsPolicy")["PolicyDocument"])

    assert statements["WalkAllowedOus"]["Resource"] == [
        "arn:aws:organizations::*:ou/o-*/ou-*",
        "arn:aws:organizations::*:root/o-*/r-*",
    ]
    assert statements["ListAccountsForSelections"]["Action"] == "organizations:ListAccounts"
    assert statements["ReadAccountTagsForSelections"] == {
        "Sid": "ReadAccountTagsForSelections",
        "Effect": "Allow",
        "Action": "organizations:ListTagsForResource",
        "Resource": "arn:aws:organizations::*:account/o-*/*",
    }
    assert set(statements) == {
        "WalkAllowedOus",
        "ListAccountsForSelections",
        "ReadAccountTagsForSelections",
    }
    actions = [s["Action"] for s in statements.values()]
    flat = [a for action in actions for a in ([action] if isinstance(action, str) else action)]
    assert all(a.startswith("organizations:List") for a in flat)


def test_the_worker_may_read_the_alarms_of_its_own_account_and_region_only(
    deploy: Callable[..., Resolved],
) -> None:
    """GIVEN any deploy WHEN the stack is resolved THEN the worker's stop conditions (a
    request's alarms) are readable, and nothing else of CloudWatch but its metrics."""
    stack = deploy(AllowedAccountIds="111111111111")

    [policy] = [
        p
        for p in stack.properties("WorkerExecutionRole")["Policies"]
        if p["PolicyName"] == "fanout-worker"
    ]
    statement = _by_sid(policy["PolicyDocument"])["ReadStopConditionAlarms"]

    assert statement["Action"] == "cloudwatch:DescribeAlarms"
    assert statement["Resource"] == "arn:aws:cloudwatch:us-east-1:123456789012:alarm:*"


def test_without_ous_the_worker_gets_no_organizations_permission(
    deploy: Callable[..., Resolved],
) -> None:
    """GIVEN no AllowedOuIds
    WHEN the stack is resolved
    THEN ALLOWED_OU_IDS is empty and no organizations policy exists."""
    stack = deploy(AllowedAccountIds="111111111111")

    assert _environment(stack)["ALLOWED_OU_IDS"] == ""
    assert "WorkerOrganizationsPolicy" not in stack.resources


# ------------------------------------------------------------------ sts scope of the execution role


def test_allowed_accounts_scope_assume_role_to_those_accounts(
    deploy: Callable[..., Resolved],
) -> None:
    """GIVEN AllowedAccountIds and AllowAnyAccount=false
    WHEN the worker's sts statements are resolved
    THEN the only one requires aws:ResourceAccount to be an allowed account."""
    (statement,) = _assume_statements(deploy(AllowedAccountIds="111111111111,222222222222"))

    assert statement["Action"] == ASSUME_ACTIONS
    assert statement["Condition"] == {
        "StringEquals": {"aws:ResourceAccount": ["111111111111", "222222222222"]}
    }


@pytest.mark.parametrize(
    "parameters",
    [
        {"AllowedAccountIds": "111111111111", "AllowAnyAccount": "true"},
        {"AllowedAccountIds": "", "AllowAnyAccount": "false"},
        {"AllowedOuIds": "ou-ab12-11111111", "AllowAnyAccount": "true"},
    ],
    ids=["any-account", "no-list", "ous-but-any-account"],
)
def test_without_an_account_scope_only_the_role_name_bounds_assume_role(
    deploy: Callable[..., Resolved], parameters: dict[str, str]
) -> None:
    """GIVEN AllowAnyAccount=true, or no allow-list at all
    WHEN the worker's sts statements are resolved
    THEN there is one, scoped by the target role's name only (no condition)."""
    (statement,) = _assume_statements(deploy(**parameters))

    assert "Condition" not in statement
    assert statement["Resource"] == "arn:aws:iam::*:role/OpsFanoutTargetRole"


def test_allowed_ous_scope_assume_role_to_those_ous_and_their_children(
    deploy: Callable[..., Resolved],
) -> None:
    """GIVEN only AllowedOuIds
    WHEN the worker's sts statements are resolved
    THEN the only one requires the role's account to sit in one of the OUs, at any depth."""
    (statement,) = _assume_statements(deploy(AllowedOuIds="ou-ab12-11111111,ou-ab12-22222222"))

    patterns = statement["Condition"]["ForAnyValue:StringLike"]["aws:ResourceOrgPaths"]

    assert patterns == ["*/ou-ab12-11111111/*", "*/ou-ab12-22222222/*"]
    assert fnmatch.fnmatchcase(
        "o-a1b2c3d4e5/r-ab12/ou-ab12-22222222/ou-ab12-33333333/", patterns[1]
    )
    assert not any(
        fnmatch.fnmatchcase("o-a1b2c3d4e5/r-ab12/ou-ab12-44444444/", p) for p in patterns
    )


def test_allowed_accounts_and_ous_each_admit_a_target(deploy: Callable[..., Resolved]) -> None:
    """GIVEN both AllowedAccountIds and AllowedOuIds
    WHEN the worker's sts statements are resolved
    THEN one admits the listed accounts and another the OUs (IAM ORs statements)."""
    statements = _assume_statements(
        deploy(AllowedAccountIds="111111111111", AllowedOuIds="ou-ab12-11111111")
    )

    assert sorted(json.dumps(s["Condition"], sort_keys=True) for s in statements) == sorted(
        [
            json.dumps({"StringEquals": {"aws:ResourceAccount": ["111111111111"]}}),
            json.dumps(
                {"ForAnyValue:StringLike": {"aws:ResourceOrgPaths": ["*/ou-ab12-11111111/*"]}}
            ),
        ]
    )
    assert all(s["Action"] == ASSUME_ACTIONS for s in statements)


# ------------------------------------------------------------------ VPC option


def test_subnets_attach_the_function_with_eni_permissions_and_hardening(
    deploy: Callable[..., Resolved],
) -> None:
    """GIVEN SubnetIds and SecurityGroupIds
    WHEN the stack is resolved
    THEN the function is in the VPC, its role has the Lambda VPC managed policy, and the
    function's own code is denied the ENI actions (lambda:SourceFunctionArn = the function)."""
    stack = deploy(**VPC)
    function = stack.properties("WorkerFunction")
    (deny,) = _statements(stack.properties("WorkerVpcHardeningPolicy")["PolicyDocument"])
    region, account = PSEUDO_PARAMETERS["AWS::Region"], PSEUDO_PARAMETERS["AWS::AccountId"]

    assert function["VpcConfig"] == {
        "SubnetIds": ["subnet-0a1b2c3d", "subnet-4e5f6a7b"],
        "SecurityGroupIds": ["sg-0123abcd"],
    }
    assert stack.properties("WorkerExecutionRole")["ManagedPolicyArns"] == [
        "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
    ]
    assert deny["Effect"] == "Deny"
    assert set(deny["Action"]) == ENI_ACTIONS
    assert deny["Condition"] == {
        "ArnEquals": {
            "lambda:SourceFunctionArn": (
                f"arn:aws:lambda:{region}:{account}:function:{function['FunctionName']}"
            )
        }
    }


def test_without_subnets_nothing_of_the_vpc_option_is_deployed(
    deploy: Callable[..., Resolved],
) -> None:
    """GIVEN no SubnetIds
    WHEN the stack is resolved
    THEN the function has no VpcConfig, the role no managed policy, no hardening policy."""
    stack = deploy()

    assert "VpcConfig" not in stack.properties("WorkerFunction")
    assert "ManagedPolicyArns" not in stack.properties("WorkerExecutionRole")
    assert "WorkerVpcHardeningPolicy" not in stack.resources


@pytest.mark.parametrize(
    "parameters",
    [{"SubnetIds": VPC["SubnetIds"]}, {"SecurityGroupIds": VPC["SecurityGroupIds"]}],
    ids=["subnets-only", "security-groups-only"],
)
def test_half_a_vpc_configuration_is_refused(
    deploy: Callable[..., Resolved], parameters: dict[str, str]
) -> None:
    """GIVEN subnets without security groups, or the reverse
    WHEN the stack's Rules are evaluated
    THEN VpcNeedsSubnetsAndSecurityGroups fails."""
    assert deploy(**parameters).failed_rules == ("VpcNeedsSubnetsAndSecurityGroups",)


def test_function_uses_the_regional_sts_endpoint(deploy: Callable[..., Resolved]) -> None:
    """GIVEN the worker function
    WHEN its environment is resolved
    THEN AWS_STS_REGIONAL_ENDPOINTS is regional (an STS VPC endpoint serves only that)."""
    assert _environment(deploy())["AWS_STS_REGIONAL_ENDPOINTS"] == "regional"


# ------------------------------------------------------------------ ASG launch rule


def test_asg_rule_matches_launches_of_the_named_groups_only(
    deploy: Callable[..., Resolved],
) -> None:
    """GIVEN group names web-asg,api-asg
    WHEN the rule's pattern is applied to launch events
    THEN a successful launch in web-asg matches; another group or event type does not."""
    rule = deploy(**DNS).properties("AsgLaunchRule")
    pattern = rule["EventPattern"]
    other_group = {**ASG_LAUNCH_EVENT, "detail": {**ASG_LAUNCH_EVENT["detail"]}}
    other_group["detail"]["AutoScalingGroupName"] = "batch-asg"
    terminated = {**ASG_LAUNCH_EVENT, "detail-type": "EC2 Instance Terminate Successful"}

    assert (rule["EventBusName"], rule["State"]) == ("default", "ENABLED")
    assert _pattern_matches(pattern, ASG_LAUNCH_EVENT)
    assert not _pattern_matches(pattern, other_group)
    assert not _pattern_matches(pattern, terminated)


def test_asg_rule_renders_exactly_the_dns_register_envelope(
    deploy: Callable[..., Resolved],
) -> None:
    """GIVEN the rule's target and a launch event
    WHEN EventBridge's input transformation is applied
    THEN the body is exactly the agreed dns.register_instance envelope, no placeholder left."""
    target = _asg_target(deploy(**DNS, DnsHostNamePattern="{instance_id}"))

    body = _render_input(target["InputTransformer"], ASG_LAUNCH_EVENT)

    assert target["Arn"] == "<WorkQueue.Arn>"
    assert not re.search(r"<[A-Za-z0-9]+>", body), body
    assert json.loads(body) == {
        "version": 1,
        "task": "dns.register_instance",
        "request_id": "asg-3e3c153a-8339-4e30-8c35-687ebef853fe",
        "targets": [{"account": "111111111111", "region": "eu-west-1"}],
        "params": {
            "instance_id": "i-0b188560f0e4a2c1d",
            "zone_name": "corp.example.com",
            "directory_account": "333333333333",
            "directory_instance_id": "i-0fedcba9876543210",
            "host_name_pattern": "{instance_id}",
        },
    }


def test_asg_rule_envelope_is_accepted_by_the_worker(deploy: Callable[..., Resolved]) -> None:
    """GIVEN the body the rule produces for a launch event (default host name pattern)
    WHEN the worker parses it
    THEN it is one dns.register_instance job in the launch's account and region."""
    body = _render_input(_asg_target(deploy(**DNS))["InputTransformer"], ASG_LAUNCH_EVENT)

    envelope = parse_message(body, message_id="m-1", default_region="us-east-1")

    assert envelope.task == "dns.register_instance"
    assert envelope.request_id == "asg-3e3c153a-8339-4e30-8c35-687ebef853fe"
    ((account, region, params),) = [(j.account, j.region, dict(j.params)) for j in envelope.jobs]
    assert (account, region) == ("111111111111", "eu-west-1")
    assert params["host_name_pattern"] == "ip-{ip_dashed}"


def test_no_asg_rule_without_group_names(deploy: Callable[..., Resolved]) -> None:
    """GIVEN no DnsAutoRegisterGroupNames
    WHEN the stack is resolved
    THEN neither the rule nor its alarm exists."""
    stack = deploy()

    assert "AsgLaunchRule" not in stack.resources
    assert "AsgLaunchRuleFailedInvocationsAlarm" not in stack.resources


@pytest.mark.parametrize(
    "missing", ["DnsZoneName", "DnsDirectoryAccount", "DnsDirectoryInstanceId"]
)
def test_asg_rule_needs_its_zone_and_directory(
    deploy: Callable[..., Resolved], missing: str
) -> None:
    """GIVEN group names but one of zone, directory account, directory instance left empty
    WHEN the stack's Rules are evaluated
    THEN DnsRegistrationNeedsItsTarget fails."""
    assert deploy(**{**DNS, missing: ""}).failed_rules == ("DnsRegistrationNeedsItsTarget",)


@pytest.mark.parametrize(
    ("parameter", "value"),
    [
        ("DnsZoneName", 'corp.example.com","task":"x'),
        ("DnsZoneName", "corp\\example.com"),
        ("DnsHostNamePattern", "<instance>"),
        ("DnsHostNamePattern", 'ip-{ip_dashed}"'),
        ("DnsDirectoryInstanceId", "i-0fedcba9876543210<"),
        ("DnsAutoRegisterGroupNames", 'web-asg"'),
    ],
)
def test_dns_parameters_cannot_break_the_input_template(
    deploy: Callable[..., Resolved], parameter: str, value: str
) -> None:
    """GIVEN a DNS parameter carrying a quote, backslash or angle bracket
    WHEN the stack is deployed
    THEN its AllowedPattern refuses it (the InputTemplate inserts it verbatim)."""
    with pytest.raises(ResolveError, match=parameter):
        deploy(**{**DNS, parameter: value})


def test_work_queue_switches_to_sse_sqs_only_for_the_asg_rule(
    deploy: Callable[..., Resolved],
) -> None:
    """GIVEN the stack without and with the ASG rule
    WHEN the queues' encryption is resolved
    THEN the DLQ always uses alias/aws/sqs; the work queue too, except with the rule, where it
    uses SSE-SQS (EventBridge cannot use the AWS managed key)."""
    plain, with_rule = deploy(), deploy(**DNS)

    encryption = [
        {k: q.get(k) for k in ("KmsMasterKeyId", "SqsManagedSseEnabled")}
        for q in (
            plain.properties("WorkQueue"),
            with_rule.properties("WorkQueue"),
            plain.properties("DeadLetterQueue"),
            with_rule.properties("DeadLetterQueue"),
        )
    ]

    assert encryption == [
        {"KmsMasterKeyId": "alias/aws/sqs", "SqsManagedSseEnabled": None},
        {"KmsMasterKeyId": None, "SqsManagedSseEnabled": True},
        {"KmsMasterKeyId": "alias/aws/sqs", "SqsManagedSseEnabled": None},
        {"KmsMasterKeyId": "alias/aws/sqs", "SqsManagedSseEnabled": None},
    ]


# ------------------------------------------------------------------ alarms and dashboard


def test_alarms_watch_the_agreed_signals(deploy: Callable[..., Resolved]) -> None:
    """GIVEN the default stack
    WHEN its alarms are resolved
    THEN there is one per signal: DLQ not empty, work queue age, function errors and
    throttles, jobs dead-lettered (EMF), each breaching above its threshold."""
    alarms = _alarms(deploy())

    signals = {
        (a["Namespace"], a["MetricName"], a["Statistic"], str(a["Threshold"]))
        for a in alarms.values()
    }

    assert signals == {
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "Maximum", "0"),
        ("AWS/SQS", "ApproximateAgeOfOldestMessage", "Maximum", "900"),
        ("AWS/Lambda", "Errors", "Sum", "0"),
        ("AWS/Lambda", "Throttles", "Sum", "0"),
        ("Fanout", "JobsDeadLettered", "Sum", "0"),
    }
    assert {a["ComparisonOperator"] for a in alarms.values()} == {"GreaterThanThreshold"}
    assert alarms["DeadLetterQueueNotEmptyAlarm"]["Dimensions"] == [
        {"Name": "QueueName", "Value": "<DeadLetterQueue.QueueName>"}
    ]
    assert alarms["WorkQueueAgeAlarm"]["Dimensions"] == [
        {"Name": "QueueName", "Value": "<WorkQueue.QueueName>"}
    ]


def test_queue_age_alarm_threshold_is_the_parameter(deploy: Callable[..., Resolved]) -> None:
    """GIVEN QueueAgeAlarmSeconds=1800
    WHEN the queue age alarm is resolved
    THEN its threshold is 1800 seconds."""
    assert str(_alarms(deploy(QueueAgeAlarmSeconds="1800"))["WorkQueueAgeAlarm"]["Threshold"]) == (
        "1800"
    )


def test_dead_lettered_jobs_alarm_reads_the_worker_emf_metric(
    deploy: Callable[..., Resolved],
) -> None:
    """GIVEN the worker's Powertools configuration
    WHEN the JobsDeadLettered alarm is resolved
    THEN its namespace and service dimension are the function's metric namespace and service."""
    stack = deploy()
    environment, alarm = _environment(stack), _alarms(stack)["JobsDeadLetteredAlarm"]

    assert alarm["Namespace"] == environment["POWERTOOLS_METRICS_NAMESPACE"]
    assert alarm["Dimensions"] == [
        {"Name": "service", "Value": environment["POWERTOOLS_SERVICE_NAME"]}
    ]


def test_alarms_notify_only_when_an_email_is_given(deploy: Callable[..., Resolved]) -> None:
    """GIVEN the stack without and with AlarmEmail
    WHEN the alarms are resolved
    THEN without it no alarm has an action and no topic exists; with it every alarm
    notifies the topic, which the address is subscribed to."""
    quiet, loud = deploy(), deploy(AlarmEmail="ops-alerts@example.com", **DNS)

    assert not any("AlarmActions" in a for a in _alarms(quiet).values())
    assert "AlarmTopic" not in quiet.resources
    assert {json.dumps(a.get("AlarmActions")) for a in _alarms(loud).values()} == {
        json.dumps(["<AlarmTopic>"])
    }
    assert loud.properties("AlarmEmailSubscription") == {
        "TopicArn": "<AlarmTopic>",
        "Protocol": "email",
        "Endpoint": "ops-alerts@example.com",
    }


def test_alarm_topic_is_encrypted_with_a_key_cloudwatch_can_use(
    deploy: Callable[..., Resolved],
) -> None:
    """GIVEN AlarmEmail
    WHEN the topic, its key and its policy are resolved
    THEN the topic uses its own rotated key that cloudwatch.amazonaws.com may use, and the
    topic policy admits exactly this stack's alarms (their names start with the stack name)."""
    stack = deploy(AlarmEmail="ops-alerts@example.com", **DNS)
    key = stack.properties("AlarmTopicKey")
    key_statements = _by_sid(key["KeyPolicy"])
    (publish,) = _statements(stack.properties("AlarmTopicPolicy")["PolicyDocument"])
    source = publish["Condition"]["ArnLike"]["aws:SourceArn"]
    region, account = PSEUDO_PARAMETERS["AWS::Region"], PSEUDO_PARAMETERS["AWS::AccountId"]
    alarm_arns = [
        f"arn:aws:cloudwatch:{region}:{account}:alarm:{a['AlarmName']}"
        for a in _alarms(stack).values()
    ]

    assert stack.properties("AlarmTopic")["KmsMasterKeyId"] == "<AlarmTopicKey>"
    assert key["EnableKeyRotation"] is True
    assert key_statements["CloudWatchAlarmsPublishEncrypted"]["Principal"] == {
        "Service": "cloudwatch.amazonaws.com"
    }
    assert set(key_statements["CloudWatchAlarmsPublishEncrypted"]["Action"]) == {
        "kms:Decrypt",
        "kms:GenerateDataKey*",
    }
    assert publish["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert all(fnmatch.fnmatchcase(arn, source) for arn in alarm_arns), (source, alarm_arns)
    assert not fnmatch.fnmatchcase(f"arn:aws:cloudwatch:{region}:{account}:alarm:other", source)


def test_dashboard_body_is_json_with_every_agreed_metric(deploy: Callable[..., Resolved]) -> None:
    """GIVEN the dashboard
    WHEN its body is resolved and parsed
    THEN it is JSON showing queue depth and age, DLQ depth, the function's invocations, errors,
    throttles and duration, and the worker's EMF metrics (namespace Fanout, service=fanout)."""
    body = json.loads(deploy().properties("Dashboard")["DashboardBody"])

    shown = {
        (metric[0], metric[1], tuple(m for m in metric[2:] if isinstance(m, str)))
        for widget in body["widgets"]
        for metric in widget["properties"]["metrics"]
    }

    work, dlq = ("QueueName", "<WorkQueue.QueueName>"), ("QueueName", "<DeadLetterQueue.QueueName>")
    function = ("FunctionName", "<WorkerFunction>")
    expected = {
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", work),
        ("AWS/SQS", "ApproximateAgeOfOldestMessage", work),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", dlq),
        *{("AWS/Lambda", m, function) for m in ("Invocations", "Errors", "Throttles", "Duration")},
        *{("Fanout", m, ("service", "fanout")) for m in EMF_METRICS},
    }
    assert expected <= shown, expected - shown


# ------------------------------------------------------------------ samconfig.toml


@pytest.mark.parametrize("environment", ["default", "prod"])
def test_samconfig_overrides_deploy_cleanly(
    deploy: Callable[..., Resolved], environment: str
) -> None:
    """GIVEN an environment of samconfig.toml
    WHEN its parameter_overrides are applied to the template
    THEN every name is a parameter, every value passes its constraints and no Rule fails."""
    config = tomllib.loads(SAMCONFIG.read_text(encoding="utf-8"))
    overrides = config[environment]["deploy"]["parameters"]["parameter_overrides"]
    parameters = dict(item.split("=", 1) for item in shlex.split(overrides))

    assert deploy(**parameters).failed_rules == ()
