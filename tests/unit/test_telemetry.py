"""Metrics the alarms and dashboard rely on, read back from the EMF lines the handler prints."""

from __future__ import annotations

import json
from typing import Any

import pytest

from handler.app import lambda_handler
from tests.unit.fakes import (
    TARGET_ACCOUNTS,
    FakeLambdaContext,
    create_distribution,
    sqs_event,
    sqs_record,
    v1_body,
)

pytestmark = pytest.mark.usefixtures("worker_env")


def emf_blobs(output: str) -> list[dict[str, Any]]:
    blobs = []
    for line in output.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            blobs.append(json.loads(line))
    return blobs


def value(blob: dict[str, Any], name: str) -> float:
    raw = blob[name]
    return float(sum(raw)) if isinstance(raw, list) else float(raw)


def test_batch_metrics_count_outcomes_in_total_and_per_task(
    context: FakeLambdaContext, capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN a batch with two good cloudfront jobs, one failing job and one unparseable body
    WHEN the handler processes it
    THEN the EMF totals (dimension service) count 2 succeeded, 1 failed and dead-lettered,
    1 message dead-lettered, and a per-task line carries the task dimension."""
    account = TARGET_ACCOUNTS[0]
    dists = [create_distribution(account), create_distribution(account)]
    body = v1_body(
        "cloudfront.invalidate",
        [{"account": account, "params": {"distribution_id": d}} for d in [*dists, "EMISSING01"]],
        params={"paths": ["/"]},
    )
    capsys.readouterr()

    lambda_handler(sqs_event(sqs_record(body), sqs_record("nope")), context)

    blobs = emf_blobs(capsys.readouterr().out)
    [totals] = [b for b in blobs if "JobsSucceeded" in b and "task" not in b]
    assert totals["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "FanoutTest"
    assert totals["service"] == "fanout"
    counts = [value(totals, n) for n in ("JobsSucceeded", "JobsFailed", "JobsDeadLettered")]
    assert counts == [2, 1, 1]
    assert value(totals, "MessagesDeadLettered") == 1
    assert len(totals["JobDuration"]) >= 1
    per_task = [b for b in blobs if b.get("task") == "cloudfront.invalidate"]
    succeeded = [value(b, "JobsSucceeded") for b in per_task if "JobsSucceeded" in b]
    assert succeeded == [2]
    assert all(b["service"] == "fanout" for b in per_task)
