"""lambda.invoke, wafv2.update_ip_set and dns.register_instance through the local poller and
the real ``lambda_handler``, against the moto server.

Local fixtures (not in conftest.py, which other tests share):
- ``lambda_without_docker``: moto's Lambda runs functions in Docker, which is absent here; its
  Docker-less backend (``POST /moto-api/config``) answers Invoke with the payload, or with the
  answers queued through ``/moto-api/static/lambda-simple/response``. Restored afterwards.
- ``directory_allowed``: a third account holding the directory (DNS) host, added to the
  worker's ``ALLOWED_ACCOUNT_IDS``.
"""

from __future__ import annotations

import json
import os
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from fanout.emulator import Organisation
from fanout.poller import Handler, Poller, PollStats

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

pytestmark = pytest.mark.integration

DIRECTORY_ACCOUNT = "333333333333"  # not one of the seeded targets
DIRECTORY_HOST = "i-0fedcba9876543210"  # moto's SendCommand accepts any instance id


def moto_api(org: Organisation, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 - the local emulator's http URL
        f"{org.endpoint_url}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        text = response.read().decode()
    return json.loads(text) if text else {}


def poll(org: Organisation, sqs: SQSClient, worker: Handler) -> PollStats:
    return Poller(org.queue_url, handler=worker, sqs=sqs).run(until_empty=True, time_limit_s=30)


def send(sqs: SQSClient, org: Organisation, body: dict[str, Any]) -> None:
    sqs.send_message(QueueUrl=org.queue_url, MessageBody=json.dumps(body))


def dead_letter_attributes(
    org: Organisation, read_queue: Callable[[str], list[dict[str, Any]]]
) -> list[dict[str, str]]:
    return [
        {k: v["StringValue"] for k, v in m.get("MessageAttributes", {}).items()}
        for m in read_queue(org.dlq_url)
    ]


# --- lambda.invoke -----------------------------------------------------------------------------


@pytest.fixture
def lambda_without_docker(org: Organisation) -> Iterator[Callable[[str, str], None]]:
    """Docker-less Lambda in the emulator; yields ``answer(account, text)`` to queue a result."""
    previous = moto_api(org, "/moto-api/config", {})["lambda"]
    moto_api(org, "/moto-api/config", {"lambda": {"use_docker": False}})

    def answer(account: str, text: str) -> None:
        moto_api(
            org,
            "/moto-api/static/lambda-simple/response",
            {"results": [text], "account_id": account, "region": org.region},
        )

    yield answer
    moto_api(org, "/moto-api/config", {"lambda": previous})
    for account in org.account_ids:  # no answer left behind for another test
        _answers(org, account).clear()


def _answers(org: Organisation, account: str) -> list[str]:
    """The answer queue of an account's Docker-less Lambda (the emulator runs in-process)."""
    from moto.awslambda_simple.models import lambda_simple_backends  # noqa: PLC0415

    queue: list[str] = lambda_simple_backends[account][org.region].lambda_simple_results_queue
    return queue


def queued_answers(org: Organisation, account: str) -> list[str]:
    return list(_answers(org, account))


def test_lambda_invoke_runs_in_each_target_account(
    org: Organisation,
    sqs: SQSClient,
    worker: Handler,
    lambda_without_docker: Callable[[str, str], None],
    read_queue: Callable[[str], list[dict[str, Any]]],
) -> None:
    """GIVEN an answer waiting in each target account's Lambda
    WHEN a lambda.invoke message for both accounts goes through the poller and the handler
    THEN each account's answer was consumed (the invoke ran in that account, through its
    assumed role), the message is deleted, and nothing is dead-lettered."""
    marker = uuid.uuid4().hex
    for account in org.account_ids:
        lambda_without_docker(account, json.dumps({"warmed": account, "marker": marker}))
    send(
        sqs,
        org,
        {
            "version": 1,
            "task": "lambda.invoke",
            "targets": [{"account": a} for a in org.account_ids],
            "params": {"function_name": "cache-warmer", "payload": {"paths": ["/"]}},
        },
    )

    stats = poll(org, sqs, worker)

    assert (stats.deleted, stats.failures_reported, stats.timed_out) == (1, 0, False)
    assert [queued_answers(org, a) for a in org.account_ids] == [[], []]
    assert read_queue(org.dlq_url) == []


def test_lambda_invoke_of_a_function_arn_in_another_account_is_dead_lettered(
    org: Organisation,
    sqs: SQSClient,
    worker: Handler,
    lambda_without_docker: Callable[[str, str], None],
    read_queue: Callable[[str], list[dict[str, Any]]],
) -> None:
    """GIVEN a target in one account whose function ARN names the other (allowed) account
    WHEN the message goes through the poller and the handler
    THEN the target is dead-lettered with InvalidParamsError naming that account, and neither
    account's Lambda was invoked."""
    account, other = org.account_ids
    for each in org.account_ids:
        lambda_without_docker(each, "untouched")
    arn = f"arn:aws:lambda:{org.region}:{other}:function:cache-warmer"
    send(
        sqs,
        org,
        {
            "version": 1,
            "task": "lambda.invoke",
            "targets": [{"account": account, "params": {"function_name": arn}}],
        },
    )

    stats = poll(org, sqs, worker)

    assert (stats.deleted, stats.failures_reported) == (1, 0)
    [letter] = dead_letter_attributes(org, read_queue)
    assert letter["fanout.error_class"] == "InvalidParamsError"
    assert other in letter["fanout.reason"]
    assert [queued_answers(org, a) for a in org.account_ids] == [["untouched"], ["untouched"]]


# --- wafv2.update_ip_set -----------------------------------------------------------------------


def create_ip_set(org: Organisation, account: str, addresses: list[str]) -> dict[str, str]:
    waf = org.target_session(account).client("wafv2", endpoint_url=org.endpoint_url)
    name = f"blocked-{uuid.uuid4().hex[:8]}"
    summary = waf.create_ip_set(
        Name=name, Scope="REGIONAL", IPAddressVersion="IPV4", Addresses=addresses
    )["Summary"]
    return {"name": name, "id": summary["Id"], "scope": "REGIONAL"}


def read_ip_set(org: Organisation, account: str, ref: dict[str, str]) -> tuple[list[str], str]:
    waf = org.target_session(account).client("wafv2", endpoint_url=org.endpoint_url)
    response = waf.get_ip_set(Name=ref["name"], Scope=ref["scope"], Id=ref["id"])
    return sorted(response["IPSet"]["Addresses"]), response["LockToken"]


def test_wafv2_update_ip_set_applies_once_and_a_redelivery_changes_nothing(
    org: Organisation,
    sqs: SQSClient,
    worker: Handler,
    read_queue: Callable[[str], list[dict[str, Any]]],
) -> None:
    """GIVEN an IPv4 set in each target account
    WHEN a message adding 192.0.2.7 and removing 10.1.0.0/16 runs, and then runs again
    THEN each set holds exactly the expected CIDRs after the first run, and the second run
    leaves them untouched (same lock token: no UpdateIPSet)."""
    refs = {a: create_ip_set(org, a, ["10.0.0.1/32", "10.1.0.0/16"]) for a in org.account_ids}
    body = {
        "version": 1,
        "task": "wafv2.update_ip_set",
        "request_id": f"block-{uuid.uuid4().hex[:8]}",
        "targets": [
            {"account": a, "params": {"name": r["name"], "id": r["id"]}} for a, r in refs.items()
        ],
        "params": {"scope": "REGIONAL", "add": ["192.0.2.7"], "remove": ["10.1.0.0/16"]},
    }
    send(sqs, org, body)
    first = poll(org, sqs, worker)
    after_first = {a: read_ip_set(org, a, r) for a, r in refs.items()}

    send(sqs, org, {**body, "request_id": body["request_id"] + "-again"})
    second = poll(org, sqs, worker)

    assert (first.deleted, first.failures_reported, second.deleted) == (1, 0, 1)
    for account, ref in refs.items():
        addresses, lock_token = after_first[account]
        assert addresses == ["10.0.0.1/32", "192.0.2.7/32"]
        assert read_ip_set(org, account, ref) == (addresses, lock_token)
    assert read_queue(org.dlq_url) == []


def test_wafv2_adding_ipv6_to_an_ipv4_set_is_dead_lettered(
    org: Organisation,
    sqs: SQSClient,
    worker: Handler,
    read_queue: Callable[[str], list[dict[str, Any]]],
) -> None:
    """GIVEN an IPv4 set
    WHEN a message adds an IPv6 CIDR to it
    THEN the target is dead-lettered (permanent) with a reason naming IPV4, and the set is
    unchanged."""
    account = org.account_ids[0]
    ref = create_ip_set(org, account, ["10.0.0.1/32"])
    send(
        sqs,
        org,
        {
            "version": 1,
            "task": "wafv2.update_ip_set",
            "targets": [{"account": account}],
            "params": {**ref, "add": ["2001:db8::/32"]},
        },
    )

    stats = poll(org, sqs, worker)

    assert (stats.deleted, stats.failures_reported) == (1, 0)
    [letter] = dead_letter_attributes(org, read_queue)
    assert letter["fanout.error_class"] == "InvalidParamsError"
    assert "IPV4" in letter["fanout.reason"]
    assert read_ip_set(org, account, ref)[0] == ["10.0.0.1/32"]


# --- dns.register_instance ---------------------------------------------------------------------


@pytest.fixture
def directory_allowed(worker: Handler, monkeypatch: pytest.MonkeyPatch) -> str:
    """The worker's allow-list extended with the directory account (read on the next call)."""
    from handler import app  # noqa: PLC0415 - the worker's settings are re-read after reset

    allowed = f"{os.environ['ALLOWED_ACCOUNT_IDS']},{DIRECTORY_ACCOUNT}"
    monkeypatch.setenv("ALLOWED_ACCOUNT_IDS", allowed)
    app.reset()
    return DIRECTORY_ACCOUNT


def commands_in(org: Organisation, account: str) -> list[dict[str, Any]]:
    ssm = org.target_session(account).client("ssm", endpoint_url=org.endpoint_url)
    return list(ssm.list_commands()["Commands"])


def asg_envelope(org: Organisation, account: str, instance_id: str) -> dict[str, Any]:
    """What the template's EventBridge rule sends for an ASG launch (the plugin's contract)."""
    return {
        "version": 1,
        "task": "dns.register_instance",
        "request_id": f"asg-{uuid.uuid4()}",
        "targets": [{"account": account, "region": org.region}],
        "params": {
            "instance_id": instance_id,
            "zone_name": "corp.example.com",
            "directory_account": DIRECTORY_ACCOUNT,
            "directory_instance_id": DIRECTORY_HOST,
            "host_name_pattern": "{instance_id}",
        },
    }


def test_dns_register_instance_sends_the_script_to_the_directory_account(
    org: Organisation,
    sqs: SQSClient,
    worker: Handler,
    directory_allowed: str,
    read_queue: Callable[[str], list[dict[str, Any]]],
) -> None:
    """GIVEN a seeded instance in a target account and a directory account the worker allows
    WHEN the ASG rule's envelope for that instance goes through the poller and the handler
    THEN the directory account has a new AWS-RunPowerShellScript command on the directory host
    that adds the instance's A record with its private IP; nothing is dead-lettered."""
    account = org.account_ids[0]
    instance_id = org.target(account).instance_ids[0]
    ec2 = org.target_session(account).client("ec2", endpoint_url=org.endpoint_url)
    [reservation] = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    ip = reservation["Instances"][0]["PrivateIpAddress"]
    before = {c["CommandId"] for c in commands_in(org, directory_allowed)}
    send(sqs, org, asg_envelope(org, account, instance_id))

    stats = poll(org, sqs, worker)

    assert (stats.deleted, stats.failures_reported) == (1, 0)
    assert read_queue(org.dlq_url) == []
    [command] = [c for c in commands_in(org, directory_allowed) if c["CommandId"] not in before]
    assert command["DocumentName"] == "AWS-RunPowerShellScript"
    assert command["InstanceIds"] == [DIRECTORY_HOST]
    script = "\n".join(command["Parameters"]["commands"])
    assert f"$name = '{instance_id}'" in script
    assert f"$ip = '{ip}'" in script
    assert "-CreatePtr" in script


def test_dns_register_instance_refuses_a_directory_account_outside_the_allow_list(
    org: Organisation,
    sqs: SQSClient,
    worker: Handler,
    read_queue: Callable[[str], list[dict[str, Any]]],
) -> None:
    """GIVEN the worker's allow-list without the directory account
    WHEN the ASG rule's envelope goes through the poller and the handler
    THEN the target is dead-lettered with AccountNotAllowedError and no command is sent."""
    account = org.account_ids[0]
    before = len(commands_in(org, DIRECTORY_ACCOUNT))
    send(sqs, org, asg_envelope(org, account, org.target(account).instance_ids[0]))

    stats = poll(org, sqs, worker)

    assert (stats.deleted, stats.failures_reported) == (1, 0)
    [letter] = dead_letter_attributes(org, read_queue)
    assert letter["fanout.error_class"] == "AccountNotAllowedError"
    assert DIRECTORY_ACCOUNT in letter["fanout.reason"]
    assert len(commands_in(org, DIRECTORY_ACCOUNT)) == before
