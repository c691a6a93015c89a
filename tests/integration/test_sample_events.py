"""The sample events in ``events/sqs-*.json`` run unchanged against the emulator.

``seed_organisation(stable_ids=True)`` creates what they name with the ids they use
(distributions E2QWRUHEXAMPLE / E1B2C3D4EXAMPLE, instances, WAF IP sets, Lambda functions and
alias); each event goes through the real ``lambda_handler`` as ``sam local invoke`` would pass it.

Lambda is the one service the emulator cannot make faithful here: moto runs a function's code
only in Docker. These tests use moto's Docker-less mode (Invoke answers with the payload and
does not run, or even look up, the function), so ``sqs-lambda-invoke.json`` shows the worker's
path, not the function's; the seeded function and alias are checked to exist.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fanout.emulator import (
    DEFAULT_TARGET_ACCOUNTS,
    Emulator,
    Organisation,
    create_queues,
    seed_organisation,
)
from fanout.poller import LocalLambdaContext

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EVENTS = sorted((ROOT / "events").glob("sqs-*.json"))
A, B, DIRECTORY = DEFAULT_TARGET_ACCOUNTS


def moto_config(endpoint_url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 - the local emulator's http URL
        f"{endpoint_url}/moto-api/config",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        text = response.read().decode()
    return dict(json.loads(text)) if text else {}


@pytest.fixture(scope="module")
def stable(emulator: Emulator) -> Iterator[Organisation]:
    """All three target accounts seeded with the events' ids, a ledger and queues of its own.

    Docker-less Lambda is switched on before seeding: moto keeps those functions apart.
    """
    previous = moto_config(emulator.endpoint_url, {})["lambda"]
    moto_config(emulator.endpoint_url, {"lambda": {"use_docker": False}})
    suffix = uuid.uuid4().hex[:12]
    org = seed_organisation(
        emulator.endpoint_url,
        DEFAULT_TARGET_ACCOUNTS,
        ledger_table=f"ledger-{suffix}",
        stable_ids=True,
    )
    queues = create_queues(
        emulator.endpoint_url, name=f"events-{suffix}", dlq_name=f"events-dlq-{suffix}"
    )
    yield org.with_queues(queues)
    moto_config(emulator.endpoint_url, {"lambda": previous})


@pytest.fixture
def handler(stable: Organisation, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in stable.handler_environment(log_level="WARNING").items():
        monkeypatch.setenv(name, value)
    from handler import app  # noqa: PLC0415 - reads the environment set above

    app.reset()
    yield app.lambda_handler
    app.reset()


def client(org: Organisation, account: str, service: str, region: str = "us-east-1") -> Any:
    session = org.target_session(account, session_name="test-verify")
    return session.client(service, endpoint_url=org.endpoint_url, region_name=region)


def invalidated(org: Organisation, account: str, distribution_id: str) -> set[str]:
    cloudfront = client(org, account, "cloudfront")
    listing = cloudfront.list_invalidations(DistributionId=distribution_id)["InvalidationList"]
    paths: set[str] = set()
    for item in listing.get("Items", []):
        batch = cloudfront.get_invalidation(DistributionId=distribution_id, Id=item["Id"])
        paths.update(batch["Invalidation"]["InvalidationBatch"]["Paths"].get("Items", []))
    return paths


def commands(org: Organisation, account: str) -> list[dict[str, Any]]:
    return list(client(org, account, "ssm").list_commands()["Commands"])


def ip_set(org: Organisation, account: str, ip_set_id: str) -> set[str]:
    waf = client(org, account, "wafv2")
    found = waf.get_ip_set(Name="blocked-clients", Scope="CLOUDFRONT", Id=ip_set_id)
    return set(found["IPSet"]["Addresses"])


def ledger_states(org: Organisation, request_id: str) -> list[str]:
    assert org.ledger_table is not None
    ddb = org.ops_session().client("dynamodb", endpoint_url=org.endpoint_url)
    items = ddb.query(
        TableName=org.ledger_table,
        KeyConditionExpression="pk = :r",
        ExpressionAttributeValues={":r": {"S": request_id}},
        ConsistentRead=True,
    )["Items"]
    # Job items only: the request's own record lives under ``sk = "#request"``.
    return [item["state"]["S"] for item in items if not item["sk"]["S"].startswith("#")]


def check_cloudfront_invalidate(org: Organisation) -> None:
    assert {"/index.html", "/img/*"} <= invalidated(org, A, "E2QWRUHEXAMPLE")
    assert {"/index.html", "/img/*"} <= invalidated(org, B, "E1B2C3D4EXAMPLE")


def check_legacy_entries(org: Organisation) -> None:
    assert {"/images/cat.jpg", "/images/dog.jpg"} <= invalidated(org, A, "E2QWRUHEXAMPLE")
    assert "/images/cat.jpg" in invalidated(org, B, "E1B2C3D4EXAMPLE")


def check_mixed_bad(org: Organisation) -> None:
    assert {"/index.html", "/img/*"} <= invalidated(org, A, "E2QWRUHEXAMPLE")
    sqs = org.ops_session().client("sqs", endpoint_url=org.endpoint_url)
    letters = sqs.receive_message(QueueUrl=org.dlq_url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in letters] == ["not json {"]


def check_ssm_send_command(org: Organisation) -> None:
    # The event's instance only: other tests send commands in this account too.
    [command] = [c for c in commands(org, A) if "i-0123456789abcdef0" in c.get("InstanceIds", [])]
    assert command["InstanceIds"] == ["i-0123456789abcdef0"]
    assert command["Comment"].endswith("uptime check")


def check_lambda_invoke(org: Organisation) -> None:
    # Docker-less moto does not run the function: check what could be seeded faithfully.
    assert client(org, A, "lambda").get_function(FunctionName="cache-warmer")
    alias = client(org, B, "lambda", "eu-west-1").get_alias(
        FunctionName="cache-warmer", Name="live"
    )
    assert alias["AliasArn"] == "arn:aws:lambda:eu-west-1:222222222222:function:cache-warmer:live"


def check_wafv2_update_ip_set(org: Organisation) -> None:
    for account, ip_set_id in ((A, "111111111111"), (B, "222222222222")):
        addresses = ip_set(org, account, f"a1b2c3d4-5678-90ab-cdef-{ip_set_id}")
        assert "192.0.2.0/24" in addresses
        assert any(a.startswith("198.51.100.7") for a in addresses)
        assert "203.0.113.0/24" not in addresses  # seeded, then removed by the event


def check_dns_register_instance(org: Organisation) -> None:
    # Other tests send PowerShell commands to this account too: this one names the event's host.
    [command] = [
        c
        for c in commands(org, DIRECTORY)
        if "$name = 'i-0123456789abcdef0'" in c.get("Parameters", {}).get("commands", [])
    ]
    assert command["DocumentName"] == "AWS-RunPowerShellScript"
    assert command["InstanceIds"] == ["i-0fedcba9876543210"]


def check_scheduled_purge(org: Organisation) -> None:
    assert "/*" in invalidated(org, A, "E2QWRUHEXAMPLE")


CHECKS: dict[str, Callable[[Organisation], None]] = {
    "sqs-cloudfront-invalidate": check_cloudfront_invalidate,
    "sqs-legacy-entries": check_legacy_entries,
    "sqs-mixed-bad": check_mixed_bad,
    "sqs-ssm-send-command": check_ssm_send_command,
    "sqs-lambda-invoke": check_lambda_invoke,
    "sqs-wafv2-update-ip-set": check_wafv2_update_ip_set,
    "sqs-dns-register-instance": check_dns_register_instance,
    "sqs-scheduled-purge": check_scheduled_purge,
}


def test_every_sample_event_has_a_check() -> None:
    """GIVEN the sample events WHEN listed THEN each has an effect check below (a new one too)."""
    assert sorted(p.stem for p in EVENTS) == sorted(CHECKS)


@pytest.mark.parametrize("path", EVENTS, ids=[p.stem for p in EVENTS])
def test_a_sample_event_runs_unchanged_and_every_job_succeeds(
    path: Path, stable: Organisation, handler: Callable[..., Any]
) -> None:
    """GIVEN the emulator seeded with stable ids
    WHEN the sample event is passed, unchanged, to the real handler
    THEN no record fails, every job of its requests is recorded succeeded, and the effect the
    event asks for is there in the target accounts."""
    event = json.loads(path.read_text())
    context = LocalLambdaContext.create(
        function_name="fanout",
        region="us-east-1",
        account=stable.ops_account,
        timeout_s=60,
        memory_mb=512,
    )

    response = handler(event, context)

    assert response["batchItemFailures"] == []
    for record in event["Records"]:
        try:
            body = json.loads(record["body"])
        except ValueError:
            continue  # the poison record: dead-lettered, checked below
        request_id = body.get("request_id", record["messageId"])
        states = ledger_states(stable, request_id)
        assert states, f"no job recorded for {request_id}"
        assert set(states) == {"succeeded"}, (request_id, states)
    CHECKS[path.stem](stable)


def test_seeding_again_reuses_the_stable_resources(stable: Organisation) -> None:
    """GIVEN an emulator seeded with stable ids WHEN account 111111111111 is seeded again
    THEN it gets the same fixed ids, and each exists once (moto would keep two under one id)."""
    again = seed_organisation(
        stable.endpoint_url, (A,), ledger_table=None, stable_ids=True, instances_per_account=1
    )

    target = again.target(A)
    assert target.distribution_ids[0] == "E2QWRUHEXAMPLE"
    assert target.instance_ids == ("i-0123456789abcdef0",)
    distributions = client(stable, A, "cloudfront").list_distributions()["DistributionList"]
    assert [d["Id"] for d in distributions["Items"]].count("E2QWRUHEXAMPLE") == 1
    reservations = client(stable, A, "ec2").describe_instances(
        Filters=[{"Name": "instance-id", "Values": ["i-0123456789abcdef0"]}]
    )["Reservations"]
    assert sum(len(r["Instances"]) for r in reservations) == 1
