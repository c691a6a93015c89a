"""Stop conditions: a request's CloudWatch alarms (``options.alarms``), read before each batch."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from handler import alarms as alarms_module
from handler import app
from handler.app import lambda_handler
from handler.requests_dynamodb import DynamoDBRequests
from tests.unit.fakes import (
    TARGET_ACCOUNTS,
    ApiCalls,
    FakeLambdaContext,
    create_distribution,
    dead_letters,
    failures,
    invalidations,
    sqs_event,
    sqs_record,
)
from tests.unit.test_ledger import create_ledger_table

ALARM = "web-5xx"


@pytest.fixture(autouse=True)
def _ledger_and_no_alarm_cache(worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A ledger table to read the request record from; each invocation reads the alarms
    afresh (the worker caches them for a few seconds)."""
    monkeypatch.setattr(alarms_module, "CACHE_SECONDS", 0.0)
    monkeypatch.setenv("LEDGER_TABLE", create_ledger_table())
    app.reset()


def make_alarm(state: str) -> None:
    cloudwatch = boto3.client("cloudwatch")
    cloudwatch.put_metric_alarm(
        AlarmName=ALARM,
        MetricName="5XXError",
        Namespace="AWS/ApiGateway",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1.0,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    cloudwatch.set_alarm_state(AlarmName=ALARM, StateValue=state, StateReason="test")


def part(targets: list[tuple[str, str]], number: int, **options: Any) -> str:
    """Part ``number`` of 2 of request req-alarm (2 targets in all)."""
    return json.dumps(
        {
            "version": 1,
            "task": "cloudfront.invalidate",
            "request_id": "req-alarm",
            "request": {"targets": 2, "part": number, "parts": 2},
            "targets": [{"account": a, "params": {"distribution_id": d}} for a, d in targets],
            "params": {"paths": ["/index.html"]},
            "options": {"alarms": [ALARM], **options},
        }
    )


def test_an_alarm_in_alarm_mid_request_leaves_every_later_target_not_run(
    context: FakeLambdaContext, api_calls: ApiCalls
) -> None:
    """GIVEN a request in two parts naming an alarm, OK while the first part runs
    WHEN the alarm goes to ALARM before the second part is delivered
    THEN the first part's target was invalidated; the second's ends "not run: request
    stopped: alarm web-5xx" without any call into its account; the request ends stopped."""
    first, second = TARGET_ACCOUNTS[:2]
    dists = {a: create_distribution(a) for a in (first, second)}
    make_alarm("OK")
    lambda_handler(sqs_event(sqs_record(part([(first, dists[first])], 1))), context)
    make_alarm("ALARM")
    api_calls.calls.clear()

    response = lambda_handler(sqs_event(sqs_record(part([(second, dists[second])], 2))), context)

    assert failures(response) == []
    assert api_calls.count("AssumeRole") == api_calls.count("CreateInvalidation") == 0
    assert len(invalidations(first, dists[first])) == 1
    assert invalidations(second, dists[second]) == []
    [letter] = dead_letters()
    assert letter["fanout.reason"].endswith(f"not run: request stopped: alarm {ALARM}")
    requests = DynamoDBRequests("fanout-ledger", lambda: boto3.client("dynamodb"))
    record = requests.requests(["req-alarm"])["req-alarm"]
    assert (record.outcome, record.stop_reason) == ("stopped", f"alarm {ALARM}")


@pytest.mark.parametrize(
    ("unreadable", "runs"),
    [("stop", False), ("continue", True)],
)
def test_an_alarm_that_cannot_be_read_stops_the_request_unless_it_says_continue(
    unreadable: str, runs: bool, context: FakeLambdaContext
) -> None:
    """GIVEN a request naming an alarm that does not exist (a misspelling, or no permission)
    WHEN it is delivered, with on_alarm_unreadable stop (the default) or continue
    THEN it is stopped with the reason, or it runs."""
    account = TARGET_ACCOUNTS[0]
    dist = create_distribution(account)
    body = json.loads(part([(account, dist)], 1, on_alarm_unreadable=unreadable))
    del body["request"]

    response = lambda_handler(sqs_event(sqs_record(json.dumps(body))), context)

    assert failures(response) == []
    assert (len(invalidations(account, dist)) == 1) is runs
    letters = dead_letters()
    assert bool(letters) is not runs
    if letters:
        assert f"alarms cannot be read: no such alarm: {ALARM}" in letters[0]["fanout.reason"]
