"""The emulator's ListCommands applies Filters and pages its answer, as SSM does.

moto alone returns every command whatever the filters. Each test works in an account of its own
(AssumeRole into any account works in the emulator), so other tests' commands never show.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.exceptions import ClientError

from fanout.emulator import Emulator, assume_session

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient

pytestmark = pytest.mark.integration

Send = Callable[..., str]


@pytest.fixture
def session(emulator: Emulator) -> boto3.Session:
    """A session acting in an account no other test uses."""
    account = f"9{random.randrange(10**10, 10**11)}"
    return assume_session(emulator.endpoint_url, account, region="us-east-1")


@pytest.fixture
def ssm(emulator: Emulator, session: boto3.Session) -> SSMClient:
    client: SSMClient = session.client("ssm", endpoint_url=emulator.endpoint_url)
    return client


@pytest.fixture
def send(ssm: SSMClient) -> Send:
    def send_command(comment: str, document: str = "AWS-RunShellScript") -> str:
        command = ssm.send_command(
            DocumentName=document,
            InstanceIds=["i-0123456789abcdef0"],
            Parameters={"commands": ["uptime"]},
            Comment=comment,
        )["Command"]
        return command["CommandId"]

    return send_command


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def comments(page: dict[str, Any]) -> list[str]:
    return [c["Comment"] for c in page["Commands"]]


def requested(ssm: SSMClient) -> dict[str, datetime]:
    return {c["Comment"]: c["RequestedDateTime"] for c in ssm.list_commands()["Commands"]}


def test_invoked_after_keeps_the_commands_requested_at_or_after_the_time(
    ssm: SSMClient, send: Send
) -> None:
    """GIVEN three commands sent one after the other
    WHEN ListCommands filters InvokedAfter = the second one's RequestedDateTime
    THEN exactly those requested at or after it come back (the second included)."""
    for n in range(3):
        send(f"c{n}")
    times = requested(ssm)
    cut = times["c1"]

    page = ssm.list_commands(Filters=[{"key": "InvokedAfter", "value": iso(cut)}])

    assert set(comments(page)) == {c for c, t in times.items() if t >= cut}
    assert "c1" in comments(page)


def test_invoked_before_keeps_the_commands_requested_before_the_time(
    ssm: SSMClient, send: Send
) -> None:
    """GIVEN three commands WHEN InvokedBefore = the second's RequestedDateTime
    THEN exactly those requested strictly before it come back."""
    for n in range(3):
        send(f"c{n}")
    times = requested(ssm)

    page = ssm.list_commands(Filters=[{"key": "InvokedBefore", "value": iso(times["c1"])}])

    assert set(comments(page)) == {c for c, t in times.items() if t < times["c1"]}
    assert "c1" not in comments(page)


def test_document_status_and_stage_filters_combine(ssm: SSMClient, send: Send) -> None:
    """GIVEN a shell command and a PowerShell command (the emulator completes both: Success)
    WHEN filtered by DocumentName, by Status and by ExecutionStage
    THEN each filter keeps what it names, and filters combine with AND."""
    send("shell")
    send("powershell", document="AWS-RunPowerShellScript")

    def listed(*filters: tuple[str, str]) -> set[str]:
        page = ssm.list_commands(Filters=[{"key": k, "value": v} for k, v in filters])  # type: ignore[typeddict-item]
        return set(comments(page))

    assert listed(("DocumentName", "AWS-RunPowerShellScript")) == {"powershell"}
    assert listed(("Status", "Success")) == {"shell", "powershell"}
    assert listed(("Status", "Failed")) == set()
    assert listed(("ExecutionStage", "Complete")) == {"shell", "powershell"}
    assert listed(("ExecutionStage", "Executing")) == set()
    assert listed(("Status", "Success"), ("DocumentName", "AWS-RunShellScript")) == {"shell"}


def test_pages_of_max_results_cover_every_command_once_newest_first(
    ssm: SSMClient, send: Send
) -> None:
    """GIVEN five commands WHEN listed two at a time, following NextToken
    THEN pages of 2, 2 and 1, together every command once, newest first."""
    for n in range(5):
        send(f"c{n}")

    pages: list[list[str]] = []
    request: dict[str, Any] = {"MaxResults": 2}
    while True:
        page = ssm.list_commands(**request)
        pages.append(comments(page))
        if not page.get("NextToken"):
            break
        request["NextToken"] = page["NextToken"]

    assert [len(p) for p in pages] == [2, 2, 1]
    listed = [c for p in pages for c in p]
    times = requested(ssm)
    assert listed == sorted(times, key=lambda c: (times[c], c), reverse=True)


def test_an_unknown_filter_key_is_invalid_filter_key(ssm: SSMClient) -> None:
    """GIVEN a filter key SSM does not know WHEN ListCommands is called THEN InvalidFilterKey."""
    with pytest.raises(ClientError) as caught:
        ssm.list_commands(Filters=[{"key": "Colour", "value": "blue"}])  # type: ignore[typeddict-item]

    assert caught.value.response["Error"]["Code"] == "InvalidFilterKey"


def test_a_command_sent_by_instance_ids_runs_on_those_instances_only(
    emulator: Emulator, session: boto3.Session, ssm: SSMClient
) -> None:
    """GIVEN an account with two instances tagged Role=web
    WHEN a command is sent by InstanceIds to one, and another by the tag
    THEN the first names that instance only (moto alone added every instance of the account),
    the second both."""
    ec2 = session.client("ec2", endpoint_url=emulator.endpoint_url)
    image = ec2.describe_images(
        Owners=["amazon"], Filters=[{"Name": "name", "Values": ["amzn2-ami-hvm-*-x86_64-gp2"]}]
    )["Images"][0]
    reservation = ec2.run_instances(
        ImageId=image["ImageId"],
        MinCount=2,
        MaxCount=2,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Role", "Value": "web"}]}],
    )
    instances = sorted(i["InstanceId"] for i in reservation["Instances"])

    by_id = ssm.send_command(DocumentName="AWS-RunShellScript", InstanceIds=instances[:1])
    by_tag = ssm.send_command(
        DocumentName="AWS-RunShellScript", Targets=[{"Key": "tag:Role", "Values": ["web"]}]
    )

    def listed(command_id: str) -> list[str]:
        [command] = ssm.list_commands(CommandId=command_id)["Commands"]
        return sorted(command["InstanceIds"])

    assert listed(by_id["Command"]["CommandId"]) == instances[:1]
    assert listed(by_tag["Command"]["CommandId"]) == instances
