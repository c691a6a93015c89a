"""Messages through the local poller and the real ``lambda_handler`` into the target accounts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from fanout.cli import main
from fanout.emulator import Organisation
from fanout.poller import Handler, Poller

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

pytestmark = pytest.mark.integration


def invalidated_paths(org: Organisation, account: str, distribution_id: str) -> set[str]:
    """Every path invalidated so far on a distribution, read in its own account."""
    session = org.target_session(account, session_name="test-verify")
    cloudfront = session.client("cloudfront", endpoint_url=org.endpoint_url)
    items = cloudfront.list_invalidations(DistributionId=distribution_id)["InvalidationList"]
    paths: set[str] = set()
    for item in items.get("Items", []):
        invalidation = cloudfront.get_invalidation(DistributionId=distribution_id, Id=item["Id"])
        paths.update(invalidation["Invalidation"]["InvalidationBatch"]["Paths"].get("Items", []))
    return paths


def unique_path() -> str:
    return f"/e2e/{uuid.uuid4().hex}.html"


def test_a_legacy_message_invalidates_in_each_target_account(
    org: Organisation, sqs: SQSClient, worker: Handler
) -> None:
    """GIVEN a legacy {"entries": [...]} message naming a distribution in each target account
    WHEN the poller runs the real handler until the queue is empty
    THEN each account has an invalidation of its entry's path, and nothing was retried."""
    path = unique_path()
    entries = [
        {
            "aws_account_id": target.account,
            "cloudfront_distribution_id": target.distribution_ids[0],
            "invalidation_path": path,
        }
        for target in org.targets
    ]
    sqs.send_message(QueueUrl=org.queue_url, MessageBody=json.dumps({"entries": entries}))

    stats = Poller(org.queue_url, handler=worker, sqs=sqs).run(until_empty=True, time_limit_s=30)

    assert (stats.deleted, stats.failures_reported, stats.timed_out) == (1, 0, False)
    for target in org.targets:
        assert path in invalidated_paths(org, target.account, target.distribution_ids[0])


def test_a_bad_record_is_dead_lettered_while_the_good_one_takes_effect(
    org: Organisation,
    sqs: SQSClient,
    worker: Handler,
    read_queue: Callable[[str], list[dict[str, Any]]],
) -> None:
    """GIVEN one batch holding an unparseable record and a valid invalidation
    WHEN the poller hands it to the real handler
    THEN the invalidation exists, the bad body is in the DLQ with its fanout.reason, and
    neither record was reported as a failure (a bad message is never retried)."""
    target = org.targets[0]
    path = unique_path()
    good = {
        "version": 1,
        "task": "cloudfront.invalidate",
        "targets": [
            {"account": target.account, "params": {"distribution_id": target.distribution_ids[1]}}
        ],
        "params": {"paths": [path]},
    }
    sqs.send_message(QueueUrl=org.queue_url, MessageBody="not json {")
    sqs.send_message(QueueUrl=org.queue_url, MessageBody=json.dumps(good))
    poller = Poller(org.queue_url, handler=worker, sqs=sqs)

    poller.poll_once()

    assert (poller.stats.records, poller.stats.failures_reported, poller.stats.deleted) == (2, 0, 2)
    assert path in invalidated_paths(org, target.account, target.distribution_ids[1])
    (dead,) = read_queue(org.dlq_url)
    assert dead["Body"] == "not json {"
    assert "not valid JSON" in dead["MessageAttributes"]["fanout.reason"]["StringValue"]


def test_published_task_runs_through_fanout_poll(
    org: Organisation, worker: Handler, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN an invalidation published with ``fanout publish``
    WHEN ``fanout poll --until-empty`` runs
    THEN it exits 0 and the target account has the invalidation."""
    target = org.targets[1]
    path = unique_path()
    published = main(
        [
            "publish",
            "cloudfront.invalidate",
            "--accounts",
            target.account,
            "--param",
            f"paths={path}",
            "--target-param",
            f"{target.account}:distribution_id={target.distribution_ids[0]}",
        ]
    )

    polled = main(["poll", "--until-empty", "--time-limit", "30"])

    assert (published, polled) == (0, 0)
    assert "1 deleted" in capsys.readouterr().out
    assert path in invalidated_paths(org, target.account, target.distribution_ids[0])


def test_fanout_demo_finds_every_expected_effect() -> None:
    """GIVEN a fresh process (moto's state is per process)
    WHEN ``fanout demo`` runs
    THEN it exits 0 and reports that all expected effects are present, and the worker's JSON
    logs (the poison message's dead-lettering) are on stderr, none on stdout."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FANOUT_"))}

    result = subprocess.run(
        [sys.executable, "-m", "fanout", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "all expected effects are present" in result.stdout
    assert "dead-lettering message" in result.stderr
    assert not [line for line in result.stdout.splitlines() if line.startswith("{")]
