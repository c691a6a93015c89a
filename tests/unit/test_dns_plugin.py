"""tasks.dns: host names, the PowerShell script and what may enter it, the instance lookup, the
command on the directory host in the directory account, and recovery of a sent command."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.stub import ANY, Stubber

from handler import app
from handler.app import lambda_handler
from handler.envelope import parse_message, validate
from handler.exceptions import BadMessageError, InvalidParamsError, TaskFailedError, TransientError
from handler.policy import session_policy
from tasks.base import Call
from tasks.dns import DOCUMENT, powershell_script, render_host_name
from tasks.registry import get_task
from tasks.ssm import job_token
from tests.unit.fakes import (
    TARGET_ACCOUNTS,
    ApiCalls,
    FakeLambdaContext,
    client_in,
    dead_letters,
    one_job_call,
    sqs_event,
    sqs_record,
    v1_body,
)

TARGET = TARGET_ACCOUNTS[0]
DIRECTORY = TARGET_ACCOUNTS[2]  # 333333333333, as in the ASG rule's envelope
REGION = "us-east-1"
INSTANCE = "i-0123456789abcdef0"
DC = "i-0fedcba9876543210"
IP = ipaddress.IPv4Address("10.0.1.23")
COMMAND_ID = "9b8c1e5a-1111-2222-3333-444455556666"
TASK = get_task("dns.register_instance")
ROOT = Path(__file__).resolve().parents[2]


def params(**overrides: Any) -> dict[str, Any]:
    return {
        "instance_id": INSTANCE,
        "zone_name": "corp.example.com",
        "directory_account": DIRECTORY,
        "directory_instance_id": DC,
        **overrides,
    }


def make_call(p: Mapping[str, Any], *, region: str = REGION) -> Call:
    return one_job_call(
        "dns.register_instance", p, account=TARGET, region=region, request_id="asg-7bf73129"
    )


class FakeContext:
    """A TaskContext handing out stubbed clients by service, recording (service, account,
    region) of every request."""

    def __init__(self, **clients: Any) -> None:
        self._clients = clients
        self.account = TARGET
        self.region = REGION
        self.requested: list[tuple[str, str | None, str | None]] = []

    def client(self, service: str, *, account: str | None = None, region: str | None = None) -> Any:
        self.requested.append((service, account, region))
        return self._clients[service]


@pytest.fixture
def stubbed() -> Iterator[dict[str, tuple[Any, Stubber]]]:
    session = botocore.session.get_session()
    clients = {
        service: session.create_client(
            service,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        for service in ("ec2", "ssm")
    }
    stubbers = {service: Stubber(client) for service, client in clients.items()}
    for stubber in stubbers.values():
        stubber.activate()
    yield {service: (clients[service], stubbers[service]) for service in clients}
    for stubber in stubbers.values():
        stubber.assert_no_pending_responses()
        stubber.deactivate()


def describe_response(**instance: Any) -> dict[str, Any]:
    return {"Reservations": [{"Instances": [{"InstanceId": INSTANCE, **instance}]}]}


# --- host names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("ip-{ip_dashed}", "ip-10-0-1-23"),
        ("{instance_id}", INSTANCE),
        ("web-{ip_dashed}-{instance_id}", f"web-10-0-1-23-{INSTANCE}"),
    ],
)
def test_host_name_patterns_render_their_placeholders(pattern: str, expected: str) -> None:
    """GIVEN a host name pattern with {ip_dashed} and/or {instance_id}
    WHEN it is rendered for an instance
    THEN the placeholders are replaced by the dashed IP and the instance id."""
    assert render_host_name(pattern, instance_id=INSTANCE, ip=IP) == expected


@pytest.mark.parametrize(
    "pattern",
    ["{instance_id}-", "-{ip_dashed}", "a" * 50 + "{instance_id}", "{ip_dashed}.{instance_id}"],
    ids=["trailing-dash", "leading-dash", "longer-than-63", "two-labels"],
)
def test_a_pattern_that_does_not_render_to_one_dns_label_is_refused(pattern: str) -> None:
    """GIVEN a pattern whose result is not a single DNS label
    WHEN the plugin checks the params
    THEN InvalidParamsError is raised before any job runs."""
    with pytest.raises(InvalidParamsError):
        TASK.check(params(host_name_pattern=pattern), account=TARGET, region=REGION)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("zone_name", "corp.example.com'; Remove-DnsServerZone corp; '"),
        ("zone_name", "corp.example.com\n"),
        ("zone_name", "$(Invoke-Expression x).corp"),
        ("host_name_pattern", "{instance_id}$(whoami)"),
        ("host_name_pattern", "{instance_id.__class__}"),
        ("host_name_pattern", "web'"),
        ("instance_id", "i-0123456789abcdef0; whoami"),
        ("directory_instance_id", "i-0fedcba9876543210 -Force"),
    ],
)
def test_strings_that_could_escape_into_powershell_are_refused(field: str, value: str) -> None:
    """GIVEN params trying to smuggle PowerShell (quotes, $(...), newlines, format fields)
    WHEN the schema validates them, and (independently) the plugin's check
    THEN each of the two layers refuses them on its own."""
    bad = params(**{field: value})

    with pytest.raises(BadMessageError):
        validate(TASK.params_schema, bad, what="params")
    with pytest.raises(InvalidParamsError):
        TASK.check(bad, account=TARGET, region=REGION)


def test_the_script_refuses_unvalidated_values_even_when_called_directly() -> None:
    """GIVEN a zone or host name with a quote, passed straight to the script builder
    WHEN the script is rendered
    THEN InvalidParamsError is raised (no value reaches PowerShell unchecked)."""
    with pytest.raises(InvalidParamsError):
        powershell_script(zone="corp'; x; '", host="web", ip=IP, ttl_seconds=None)
    with pytest.raises(InvalidParamsError):
        powershell_script(zone="corp.example.com", host="we'b", ip=IP, ttl_seconds=None)


def test_the_script_adds_a_and_ptr_only_when_no_record_of_that_name_exists() -> None:
    """GIVEN a zone, host name, IP and TTL
    WHEN the script is rendered
    THEN it looks the name up quietly and only then runs Add-DnsServerResourceRecordA with
    -CreatePtr and the TTL; every value is a single-quoted literal."""
    script = "\n".join(
        powershell_script(zone="corp.example.com", host="ip-10-0-1-23", ip=IP, ttl_seconds=300)
    )

    lookup = script.index(
        "Get-DnsServerResourceRecord -ZoneName $zone -Name $name -ErrorAction SilentlyContinue"
    )
    guard = script.index("if ($existing) {")
    add = script.index(
        "Add-DnsServerResourceRecordA -ZoneName $zone -Name $name -IPv4Address $ip -CreatePtr "
        "-TimeToLive ([TimeSpan]::FromSeconds(300))"
    )
    assert lookup < guard < script.index("} else {") < add
    for line in ("$zone = 'corp.example.com'", "$name = 'ip-10-0-1-23'", "$ip = '10.0.1.23'"):
        assert line in script


# --- run (stubbed) -----------------------------------------------------------------------------


def test_run_sends_the_script_to_the_directory_host_in_the_directory_account(
    stubbed: dict[str, tuple[Any, Stubber]],
) -> None:
    """GIVEN the instance has private IP 10.0.1.23 and a directory region is given
    WHEN the plugin runs
    THEN DescribeInstances runs in the target account, and SendCommand of
    AWS-RunPowerShellScript on the directory host runs in the directory account and region,
    commented with the job token; the result is the command id with host, IP and zone."""
    ec2, ec2_stub = stubbed["ec2"]
    ssm, ssm_stub = stubbed["ssm"]
    call = make_call(params(directory_region="eu-west-1"))
    ec2_stub.add_response(
        "describe_instances",
        describe_response(PrivateIpAddress=str(IP), State={"Name": "running"}),
        expected_params={"InstanceIds": [INSTANCE]},
    )
    ssm_stub.add_response(
        "send_command",
        {"Command": {"CommandId": COMMAND_ID, "Status": "Pending"}},
        expected_params={
            "DocumentName": DOCUMENT,
            "InstanceIds": [DC],
            "Parameters": {
                "commands": powershell_script(
                    zone="corp.example.com", host="ip-10-0-1-23", ip=IP, ttl_seconds=None
                ),
                "executionTimeout": ANY,
            },
            "Comment": f"{job_token(call)} fanout dns ip-10-0-1-23.corp.example.com",
        },
    )
    ctx = FakeContext(ec2=ec2, ssm=ssm)

    result = TASK.run(ctx, call)

    assert ctx.requested == [("ec2", None, None), ("ssm", DIRECTORY, "eu-west-1")]
    assert result.resource_id == COMMAND_ID
    assert result.detail["fqdn"] == "ip-10-0-1-23.corp.example.com"
    assert result.detail["ip"] == "10.0.1.23"
    assert result.detail["zone"] == "corp.example.com"


def test_the_directory_region_defaults_to_the_target_region(
    stubbed: dict[str, tuple[Any, Stubber]],
) -> None:
    """GIVEN no directory_region, for a target in eu-central-1
    WHEN the plugin runs
    THEN the ssm client is in the directory account and eu-central-1."""
    ec2, ec2_stub = stubbed["ec2"]
    ssm, ssm_stub = stubbed["ssm"]
    ec2_stub.add_response("describe_instances", describe_response(PrivateIpAddress=str(IP)))
    ssm_stub.add_response("send_command", {"Command": {"CommandId": COMMAND_ID}})
    ctx = FakeContext(ec2=ec2, ssm=ssm)

    TASK.run(ctx, make_call(params(), region="eu-central-1"))

    assert ctx.requested[-1] == ("ssm", DIRECTORY, "eu-central-1")


def test_an_instance_without_a_private_ip_yet_is_retried_later(
    stubbed: dict[str, tuple[Any, Stubber]],
) -> None:
    """GIVEN the instance has no private IP address yet
    WHEN the plugin runs
    THEN TransientError (retryable) is raised and no command is sent."""
    ec2, ec2_stub = stubbed["ec2"]
    ec2_stub.add_response("describe_instances", describe_response(State={"Name": "pending"}))
    ctx = FakeContext(ec2=ec2)

    with pytest.raises(TransientError, match="no private IP"):
        TASK.run(ctx, make_call(params()))

    assert [service for service, _, _ in ctx.requested] == ["ec2"]


@pytest.mark.parametrize(
    "response",
    [
        {"Reservations": []},
        describe_response(PrivateIpAddress=str(IP), State={"Name": "terminated"}),
    ],
    ids=["not-found", "terminated"],
)
def test_a_missing_or_terminated_instance_is_a_permanent_error(
    stubbed: dict[str, tuple[Any, Stubber]], response: dict[str, Any]
) -> None:
    """GIVEN DescribeInstances finds no instance, or a terminated one
    WHEN the plugin runs
    THEN TaskFailedError (permanent) names the instance and no command is sent."""
    ec2, ec2_stub = stubbed["ec2"]
    ec2_stub.add_response("describe_instances", response)
    ctx = FakeContext(ec2=ec2)

    with pytest.raises(TaskFailedError, match=INSTANCE):
        TASK.run(ctx, make_call(params()))

    assert [service for service, _, _ in ctx.requested] == ["ec2"]


def test_find_previous_looks_for_the_job_token_in_the_directory_account(
    stubbed: dict[str, tuple[Any, Stubber]],
) -> None:
    """GIVEN a command in the directory account commented with this job's token
    WHEN the plugin looks for a previous attempt
    THEN ListCommands runs in the directory account and region, and the command is returned."""
    ssm, ssm_stub = stubbed["ssm"]
    call = make_call(params(directory_region="eu-west-1"))
    ssm_stub.add_response(
        "list_commands",
        {
            "Commands": [
                {
                    "CommandId": "00000000" + COMMAND_ID[8:],
                    "Comment": "[fanout:0000000000000000] x",
                },
                {"CommandId": COMMAND_ID, "Comment": f"{job_token(call)} fanout dns x"},
            ]
        },
    )
    ctx = FakeContext(ssm=ssm)

    previous = TASK.find_previous(ctx, call, since=datetime(2026, 1, 1, tzinfo=UTC))

    assert previous is not None
    assert previous.resource_id == COMMAND_ID
    assert ctx.requested == [("ssm", DIRECTORY, "eu-west-1")]


# --- declarations ------------------------------------------------------------------------------


def test_sendcommand_calls_share_the_directory_accounts_rate_key() -> None:
    """GIVEN a dns call for a target in one account, the directory in another
    WHEN its rate key is computed
    THEN it is the directory account's SendCommand key (shared with ssm.send_command there)."""
    call = make_call(params(directory_region="eu-west-1"))

    assert TASK.rate_key(call) == (DIRECTORY, "eu-west-1", "ssm:SendCommand")
    assert TASK.rate_key(call)[2] == get_task("ssm.send_command").rate.api


def test_session_policy_allows_only_the_powershell_document_and_the_directory_host() -> None:
    """GIVEN a call's params with an on-premises directory host (mi-...)
    WHEN the resource-scoped session policy of the directory account is built
    THEN SendCommand is allowed on AWS-RunPowerShellScript and that managed instance only,
    and the read-only calls on '*'."""
    managed = "mi-0123456789abcdef0"

    policy = json.loads(
        session_policy(TASK, "aws", DIRECTORY, ["directory"], params(directory_instance_id=managed))
    )

    scoped, unscoped = policy["Statement"]
    assert scoped["Action"] == ["ssm:SendCommand"]
    assert scoped["Resource"] == [
        f"arn:aws:ssm:*::document/{DOCUMENT}",
        f"arn:aws:ssm:*:{DIRECTORY}:managed-instance/{managed}",
    ]
    assert unscoped == {"Effect": "Allow", "Action": ["ssm:ListCommands"], "Resource": "*"}


@pytest.mark.parametrize("scoped", [True, False], ids=["resource-scope", "task-scope"])
def test_the_launching_account_may_only_describe_its_instances(scoped: bool) -> None:
    """GIVEN a job's session policy in the launching (target) account, narrowed to the call's
    params or not
    WHEN it is built
    THEN it allows DescribeInstances only: no SendCommand, which runs in the directory account.

    Regression (issue 9.6): the launching account was granted SendCommand of
    AWS-RunPowerShellScript on any of its instances, although it only needs DescribeInstances."""
    policy = json.loads(
        session_policy(TASK, "aws", TARGET, ["target"], params() if scoped else None)
    )

    assert policy["Statement"] == [
        {"Effect": "Allow", "Action": ["ec2:DescribeInstances"], "Resource": "*"}
    ]


def test_the_asg_rule_envelope_contract_parses_into_one_job() -> None:
    """GIVEN the envelope the EventBridge rule sends for an ASG launch (events/ sample)
    WHEN the worker parses it
    THEN it is one dns.register_instance job in the event's account and region, with exactly
    the contract's params."""
    event = json.loads((ROOT / "events" / "sqs-dns-register-instance.json").read_text())
    [record] = event["Records"]

    envelope = parse_message(record["body"], message_id="m", default_region="eu-west-1")

    [job] = envelope.jobs
    assert envelope.request_id.startswith("asg-")
    assert (job.task, job.account, job.region) == ("dns.register_instance", TARGET, REGION)
    assert set(job.params) == {
        "instance_id",
        "zone_name",
        "directory_account",
        "directory_instance_id",
        "host_name_pattern",
    }


# --- through the handler (moto in-process) -----------------------------------------------------


def launch_instance(account: str) -> tuple[str, str]:
    """An instance in ``account``; returns its id and private IP."""
    ec2 = client_in(account, "ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    [instance] = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"]
    return instance["InstanceId"], instance["PrivateIpAddress"]


def dns_body(instance_id: str, **extra: Any) -> str:
    return v1_body(
        "dns.register_instance",
        [{"account": TARGET, "region": REGION}],
        request_id="asg-7bf73129-1428-4cd3-a780-95db273d1602",
        params=params(instance_id=instance_id, host_name_pattern="{instance_id}", **extra),
    )


@pytest.mark.usefixtures("worker_env")
def test_the_handler_registers_a_launched_instance_on_the_directory_host(
    context: FakeLambdaContext,
) -> None:
    """GIVEN an instance launched in the target account
    WHEN the handler processes the ASG rule's envelope for it
    THEN the directory account has one PowerShell command on the directory host adding the
    instance's A record with its private IP, and the target account has none."""
    instance_id, ip = launch_instance(TARGET)

    response = lambda_handler(sqs_event(sqs_record(dns_body(instance_id))), context)

    assert response["batchItemFailures"] == []
    assert dead_letters() == []
    [command] = client_in(DIRECTORY, "ssm").list_commands()["Commands"]
    assert command["DocumentName"] == DOCUMENT
    assert command["InstanceIds"] == [DC]
    script = "\n".join(command["Parameters"]["commands"])
    assert f"$name = '{instance_id}'" in script
    assert f"$ip = '{ip}'" in script
    assert command["Comment"].startswith("[fanout:")
    assert client_in(TARGET, "ssm").list_commands()["Commands"] == []


@pytest.mark.usefixtures("worker_env")
def test_the_handler_dead_letters_an_instance_that_does_not_exist(
    context: FakeLambdaContext,
) -> None:
    """GIVEN an instance id unknown in the target account
    WHEN the handler processes the envelope
    THEN the target is dead-lettered with TaskFailedError and no command is sent."""
    response = lambda_handler(sqs_event(sqs_record(dns_body("i-00000000000000000"))), context)

    assert response["batchItemFailures"] == []
    [letter] = dead_letters()
    assert letter["fanout.error_class"] == "TaskFailedError"
    assert "i-00000000000000000" in letter["fanout.reason"]
    assert client_in(DIRECTORY, "ssm").list_commands()["Commands"] == []


def test_the_handler_refuses_a_directory_account_outside_the_allow_list(
    worker_env: dict[str, str],
    context: FakeLambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    api_calls: ApiCalls,
) -> None:
    """GIVEN a worker whose allow-list holds the target account but not the directory account
    WHEN the handler processes the envelope
    THEN the target is dead-lettered with AccountNotAllowedError, no role in the directory
    account is assumed and no command is sent."""
    monkeypatch.setenv("ALLOWED_ACCOUNT_IDS", TARGET)
    app.reset()
    instance_id, _ = launch_instance(TARGET)
    api_calls.calls.clear()

    response = lambda_handler(sqs_event(sqs_record(dns_body(instance_id))), context)

    assert response["batchItemFailures"] == []
    [letter] = dead_letters()
    assert letter["fanout.error_class"] == "AccountNotAllowedError"
    assert DIRECTORY in letter["fanout.reason"]
    assert all(DIRECTORY not in p["RoleArn"] for p in api_calls.of("AssumeRole"))
    assert api_calls.count("SendCommand") == 0
