"""Delivery guarantees through the real handler: at-least-once in, exactly-once in effect out."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from handler import app
from handler.app import lambda_handler
from handler.envelope import parse_message
from handler.ledger import JobState
from handler.ledger_dynamodb import DynamoDBLedger
from handler.ledger_memory import InMemoryLedger
from tests.unit.fakes import (
    TARGET_ACCOUNTS,
    ApiCalls,
    FakeLambdaContext,
    client_in,
    create_distribution,
    dead_letters,
    failures,
    invalidations,
    sqs_event,
    sqs_record,
    v1_body,
)
from tests.unit.test_ledger import create_ledger_table

pytestmark = pytest.mark.usefixtures("worker_env")


def ssm_body(accounts: tuple[str, ...], request_id: str = "req-ssm") -> str:
    return v1_body(
        "ssm.send_command",
        [{"account": a} for a in accounts],
        request_id=request_id,
        params={
            "document_name": "AWS-RunShellScript",
            "instance_ids": ["i-0123456789abcdef0"],
            "parameters": {"commands": ["uptime"]},
        },
    )


def commands_in(account: str) -> list[dict[str, Any]]:
    return list(client_in(account, "ssm").list_commands()["Commands"])


@pytest.fixture(params=["memory", "dynamodb"])
def ledger_backend(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, worker_env: dict[str, str]
) -> str:
    """Run the test with the in-memory ledger and with the DynamoDB table."""
    if request.param == "dynamodb":
        monkeypatch.setenv("LEDGER_TABLE", create_ledger_table())
        app.reset()
    return str(request.param)


@pytest.fixture
def work_queue(monkeypatch: pytest.MonkeyPatch) -> str:
    url = boto3.client("sqs").create_queue(QueueName="fanout-work")["QueueUrl"]
    monkeypatch.setenv("WORK_QUEUE_URL", url)
    app.reset()
    return str(url)


def requeued(api_calls: ApiCalls, url: str) -> list[dict[str, Any]]:
    """SendMessage requests to the work queue (deferred copies are delayed, so not receivable)."""
    return [p for p in api_calls.of("SendMessage") if p["QueueUrl"] == url]


def test_redelivered_ssm_message_runs_each_command_once(
    ledger_backend: str, context: FakeLambdaContext
) -> None:
    """GIVEN an ssm.send_command message delivered twice (SQS at-least-once)
    WHEN the handler processes both deliveries
    THEN each account has exactly one command: the second delivery replays the ledger."""
    body = ssm_body(TARGET_ACCOUNTS[:2])

    first = lambda_handler(sqs_event(sqs_record(body, message_id="m-1")), context)
    second = lambda_handler(sqs_event(sqs_record(body, message_id="m-1", receive_count=2)), context)

    assert failures(first) == failures(second) == []
    assert [len(commands_in(a)) for a in TARGET_ACCOUNTS[:2]] == [1, 1]


def test_same_message_twice_in_one_batch_runs_once(context: FakeLambdaContext) -> None:
    """GIVEN one body published twice and delivered in the same batch
    WHEN the handler processes the batch THEN the command runs once per account."""
    body = ssm_body(TARGET_ACCOUNTS[:1])

    response = lambda_handler(sqs_event(sqs_record(body), sqs_record(body)), context)

    assert failures(response) == []
    assert len(commands_in(TARGET_ACCOUNTS[0])) == 1


def test_a_crashed_attempt_is_recovered_without_running_the_command_again(
    monkeypatch: pytest.MonkeyPatch, context: FakeLambdaContext
) -> None:
    """GIVEN an invocation that sent the command and died before recording it (its ledger lock
    then expires)
    WHEN the message is redelivered
    THEN the worker finds the earlier command by its job token and does not send another."""
    table = create_ledger_table()
    monkeypatch.setenv("LEDGER_TABLE", table)
    app.reset()
    body = ssm_body(TARGET_ACCOUNTS[:1])
    original_finish = DynamoDBLedger.finish

    def crash(*args: Any, **kwargs: Any) -> None:
        raise SystemExit("killed after SendCommand")

    monkeypatch.setattr(DynamoDBLedger, "finish", crash)
    with pytest.raises(SystemExit):
        lambda_handler(sqs_event(sqs_record(body, message_id="m-1")), context)
    monkeypatch.setattr(DynamoDBLedger, "finish", original_finish)
    # The lock lasted until the dead invocation's timeout; the next worker's clock is past it.
    app.reset(clock=lambda: 4_000_000_000.0)

    response = lambda_handler(
        sqs_event(sqs_record(body, message_id="m-1", receive_count=2)), context
    )

    assert failures(response) == []
    [command] = commands_in(TARGET_ACCOUNTS[0])
    items = boto3.client("dynamodb").scan(TableName=table)["Items"]
    jobs = [i for i in items if i["pk"]["S"] == "req-ssm" and not i["sk"]["S"].startswith("#")]
    assert [(i["state"]["S"], i["result_id"]["S"]) for i in jobs] == [
        (JobState.SUCCEEDED.value, command["CommandId"])
    ]


def test_a_job_held_by_a_live_invocation_is_not_run_concurrently(
    monkeypatch: pytest.MonkeyPatch, context: FakeLambdaContext
) -> None:
    """GIVEN a concurrent delivery whose invocation holds the job's lock
    WHEN the handler gets the same message
    THEN it does not run the job; without a work queue the message comes back later."""
    table = create_ledger_table()
    monkeypatch.setenv("LEDGER_TABLE", table)
    app.reset()
    body = ssm_body(TARGET_ACCOUNTS[:1])
    envelope = parse_message(body, message_id="m-1", default_region="us-east-1")
    other = DynamoDBLedger(table, lambda: boto3.client("dynamodb"))
    other.claim(list(envelope.jobs), lock_until=time.time() + 600)

    record = sqs_record(body, message_id="m-1")
    response = lambda_handler(sqs_event(record), context)

    assert failures(response) == [record["messageId"]]
    assert commands_in(TARGET_ACCOUNTS[0]) == []


def test_throttled_target_is_deferred_alone_while_its_sibling_completes(
    work_queue: str,
    context: FakeLambdaContext,
    api_calls: ApiCalls,
    monkeypatch: pytest.MonkeyPatch,
    no_sleep: None,
) -> None:
    """GIVEN a two-account message where one account's CloudFront keeps throttling
    WHEN the handler processes it
    THEN the healthy account is invalidated, the original message is acknowledged, and only the
    throttled target is re-sent to the work queue with a delay and attempt 2."""
    healthy, throttled = TARGET_ACCOUNTS[:2]
    dists = {healthy: create_distribution(healthy), throttled: create_distribution(throttled)}
    throttled_dist = dists[throttled]
    original = BaseClient._make_api_call

    def throttle_one(self: Any, operation: str, params: dict[str, Any]) -> Any:
        if operation == "CreateInvalidation" and params["DistributionId"] == throttled_dist:
            raise ClientError(
                {"Error": {"Code": "Throttling", "Message": "Rate exceeded"}}, operation
            )
        return original(self, operation, params)

    monkeypatch.setattr("botocore.client.BaseClient._make_api_call", throttle_one)
    body = v1_body(
        "cloudfront.invalidate",
        [{"account": a, "params": {"distribution_id": d}} for a, d in dists.items()],
        params={"paths": ["/sale/*"]},
        request_id="peak",
    )

    response = lambda_handler(sqs_event(sqs_record(body)), context)

    assert failures(response) == []
    [deferred] = requeued(api_calls, work_queue)
    redo = json.loads(deferred["MessageBody"])
    assert [t["account"] for t in redo["targets"]] == [throttled]
    assert redo["request_id"] == "peak"
    assert deferred["MessageAttributes"]["fanout.attempt"]["StringValue"] == "2"
    assert 5 <= deferred["DelaySeconds"] <= 10  # throttling: 10 s ceiling, equal jitter
    assert dead_letters() == []


def test_deferred_work_resumes_without_redoing_what_succeeded(
    work_queue: str,
    context: FakeLambdaContext,
    api_calls: ApiCalls,
    monkeypatch: pytest.MonkeyPatch,
    no_sleep: None,
) -> None:
    """GIVEN an SSM message for two accounts whose second account throttles SendCommand, so
    that target was deferred
    WHEN the deferred copy is processed after the throttling ended
    THEN only the deferred account's command is sent; the first account keeps exactly one."""
    first, second = TARGET_ACCOUNTS[:2]
    throttled_instance = "i-0000000000000bbbb"
    body = v1_body(
        "ssm.send_command",
        [
            {"account": first, "params": {"instance_ids": ["i-0000000000000aaaa"]}},
            {"account": second, "params": {"instance_ids": [throttled_instance]}},
        ],
        request_id="r",
        params={"document_name": "AWS-RunShellScript", "parameters": {"commands": ["id"]}},
    )
    original = BaseClient._make_api_call

    def throttle_second(self: Any, operation: str, params: dict[str, Any]) -> Any:
        if operation == "SendCommand" and params.get("InstanceIds") == [throttled_instance]:
            raise ClientError({"Error": {"Code": "ThrottlingException"}}, operation)
        return original(self, operation, params)

    with monkeypatch.context() as throttling:
        throttling.setattr(BaseClient, "_make_api_call", throttle_second)
        lambda_handler(sqs_event(sqs_record(body)), context)
    [deferred] = requeued(api_calls, work_queue)
    record = sqs_record(deferred["MessageBody"])
    record["messageAttributes"] = {"fanout.attempt": {"stringValue": "2", "dataType": "Number"}}

    response = lambda_handler(sqs_event(record), context)

    assert failures(response) == []
    assert [len(commands_in(a)) for a in (first, second)] == [1, 1]


def test_a_target_out_of_attempts_is_dead_lettered_with_its_last_error(
    work_queue: str,
    context: FakeLambdaContext,
    api_calls: ApiCalls,
    fail_operation: Callable[..., None],
    no_sleep: None,
) -> None:
    """GIVEN a deferred copy on its last allowed attempt (MAX_ATTEMPTS=5) that throttles again
    WHEN the handler processes it
    THEN the target is dead-lettered with "gave up after 5 attempts" and not re-sent."""
    account = TARGET_ACCOUNTS[0]
    dist = create_distribution(account)
    fail_operation("CreateInvalidation", "Throttling")
    body = v1_body(
        "cloudfront.invalidate",
        [{"account": account, "params": {"distribution_id": dist, "paths": ["/"]}}],
    )
    record = sqs_record(body)
    record["messageAttributes"] = {"fanout.attempt": {"stringValue": "5", "dataType": "Number"}}

    response = lambda_handler(sqs_event(record), context)

    assert failures(response) == []
    assert requeued(api_calls, work_queue) == []
    [letter] = dead_letters()
    assert "gave up after 5 attempts" in letter["fanout.reason"]
    assert letter["fanout.error_class"] == "ThrottledError"


def test_a_command_whose_response_was_lost_is_not_sent_twice(
    monkeypatch: pytest.MonkeyPatch, context: FakeLambdaContext
) -> None:
    """GIVEN SendCommand reaches SSM (the command runs) but the response is a 503
    WHEN the message is redelivered
    THEN the worker finds the command by its job token instead of sending a second one."""
    body = ssm_body(TARGET_ACCOUNTS[:1])
    original = BaseClient._make_api_call

    def lost_response(self: Any, operation: str, params: dict[str, Any]) -> Any:
        response = original(self, operation, params)
        if operation == "SendCommand":
            raise ClientError(
                {
                    "Error": {"Code": "ServiceUnavailable"},
                    "ResponseMetadata": {"HTTPStatusCode": 503},
                },
                operation,
            )
        return response

    with monkeypatch.context() as flaky:
        flaky.setattr(BaseClient, "_make_api_call", lost_response)
        first = lambda_handler(sqs_event(sqs_record(body, message_id="m-1")), context)
    second = lambda_handler(sqs_event(sqs_record(body, message_id="m-1", receive_count=2)), context)

    assert failures(first) == ["m-1"]
    assert failures(second) == []
    assert len(commands_in(TARGET_ACCOUNTS[0])) == 1


def test_targets_never_started_keep_their_attempt_count(
    work_queue: str, api_calls: ApiCalls
) -> None:
    """GIVEN a deferred copy on its last allowed attempt, processed with no time left
    WHEN its targets cannot even start
    THEN they are re-sent with the same attempt number, not dead-lettered as 'gave up'."""
    account = TARGET_ACCOUNTS[0]
    body = v1_body(
        "cloudfront.invalidate",
        [{"account": account, "params": {"distribution_id": "EDIST00001", "paths": ["/"]}}],
    )
    record = sqs_record(body)
    record["messageAttributes"] = {"fanout.attempt": {"stringValue": "5", "dataType": "Number"}}

    response = lambda_handler(sqs_event(record), FakeLambdaContext(remaining_ms=2_000))

    assert failures(response) == []
    assert dead_letters() == []
    [deferred] = requeued(api_calls, work_queue)
    assert deferred["MessageAttributes"]["fanout.attempt"]["StringValue"] == "5"
    assert deferred["MessageAttributes"]["fanout.waits"]["StringValue"] == "1"


def test_a_job_whose_outcome_cannot_be_recorded_is_not_acknowledged(
    monkeypatch: pytest.MonkeyPatch, context: FakeLambdaContext
) -> None:
    """GIVEN the ledger refuses to record a finished job's outcome
    WHEN the handler processes its message
    THEN the message is reported for redelivery: the job has not ended as far as anyone
    can tell, so it must not be acknowledged."""
    account = TARGET_ACCOUNTS[0]
    dist = create_distribution(account)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise ClientError({"Error": {"Code": "ThrottlingException"}}, "UpdateItem")

    monkeypatch.setattr(InMemoryLedger, "finish", refuse)
    record = sqs_record(
        v1_body(
            "cloudfront.invalidate",
            [{"account": account, "params": {"distribution_id": dist, "paths": ["/"]}}],
        )
    )

    response = lambda_handler(sqs_event(record), context)

    assert failures(response) == [record["messageId"]]


def test_a_coalesced_invalidation_with_a_lost_answer_is_not_issued_again(
    monkeypatch: pytest.MonkeyPatch, context: FakeLambdaContext
) -> None:
    """GIVEN two messages coalesced into one CreateInvalidation that ran but answered 503
    WHEN one of them comes back alone (another batch, so another CallerReference)
    THEN the worker repeats the recorded call exactly (same paths, same CallerReference), which
    CloudFront answers with the existing invalidation: no second reference."""
    account = TARGET_ACCOUNTS[0]
    dist = create_distribution(account)
    bodies = [
        v1_body(
            "cloudfront.invalidate",
            [{"account": account, "params": {"distribution_id": dist, "paths": [path]}}],
            request_id=f"req-{n}",
        )
        for n, path in enumerate(["/a", "/b"])
    ]
    original = BaseClient._make_api_call

    def lost_answer(self: Any, operation: str, params: dict[str, Any]) -> Any:
        response = original(self, operation, params)
        if operation == "CreateInvalidation":
            raise ClientError(
                {
                    "Error": {"Code": "ServiceUnavailable"},
                    "ResponseMetadata": {"HTTPStatusCode": 503},
                },
                operation,
            )
        return response

    with monkeypatch.context() as flaky:
        flaky.setattr(BaseClient, "_make_api_call", lost_answer)
        first = lambda_handler(
            sqs_event(*(sqs_record(b, message_id=f"m-{i}") for i, b in enumerate(bodies))), context
        )
    again = lambda_handler(
        sqs_event(sqs_record(bodies[0], message_id="m-0", receive_count=2)), context
    )

    assert sorted(failures(first)) == ["m-0", "m-1"]
    assert failures(again) == []
    # moto keeps every CreateInvalidation; CloudFront collapses those with one CallerReference
    # (the in-function retries of the lost answer), so distinct references count effects.
    assert len({batch["CallerReference"] for batch in invalidations(account, dist)}) == 1


def test_a_large_partial_failure_is_dead_lettered_within_the_sqs_limit(
    context: FakeLambdaContext,
) -> None:
    """GIVEN one ~100 KB message: 400 long paths shared by a real distribution and ten
    missing ones
    WHEN the handler processes it
    THEN the real one is invalidated, and the ten are dead-lettered with their reason in a body
    that states the shared paths once (well under SQS's 256 KiB), not once per target."""
    account = TARGET_ACCOUNTS[0]
    dist = create_distribution(account)
    paths = [f"/catalogue/{n:04d}/" + "x" * 230 for n in range(400)]
    missing = [f"EMISSING{n:02d}" for n in range(10)]
    body = v1_body(
        "cloudfront.invalidate",
        [{"account": account, "params": {"distribution_id": d}} for d in [dist, *missing]],
        params={"paths": paths},
    )

    response = lambda_handler(sqs_event(sqs_record(body)), context)

    assert failures(response) == []
    assert len(invalidations(account, dist)) == 1
    [letter] = dead_letters()
    dead = json.loads(letter["body"])
    assert dead["params"]["paths"] == paths
    assert sorted(t["params"]["distribution_id"] for t in dead["targets"]) == missing
    assert len(letter["body"].encode()) < 200_000
    assert "10 of 11 targets failed" in letter["fanout.reason"]


@pytest.mark.usefixtures("ledger_backend")
def test_a_duplicate_delivery_of_a_bad_message_is_dead_lettered_once(
    context: FakeLambdaContext,
) -> None:
    """GIVEN an unparseable message delivered twice with the same message id (the first
    acknowledgement was lost) WHEN both deliveries are processed
    THEN it is dead-lettered once and acknowledged both times."""
    first = lambda_handler(sqs_event(sqs_record("not json", message_id="m-bad")), context)
    again = lambda_handler(sqs_event(sqs_record("not json", message_id="m-bad")), context)

    assert failures(first) == failures(again) == []
    assert len(dead_letters()) == 1


@pytest.mark.usefixtures("ledger_backend")
def test_a_duplicate_delivery_neither_reruns_nor_redeadletters_a_failed_target(
    context: FakeLambdaContext, api_calls: ApiCalls
) -> None:
    """GIVEN a message whose one target failed (missing distribution) and was dead-lettered,
    delivered again under another message id (published twice)
    WHEN the duplicate is processed
    THEN the failed call is not made again and no second dead letter appears."""
    account = TARGET_ACCOUNTS[0]
    body = v1_body(
        "cloudfront.invalidate",
        [{"account": account, "params": {"distribution_id": "EMISSING01", "paths": ["/"]}}],
        request_id="req-failing",
    )
    lambda_handler(sqs_event(sqs_record(body, message_id="m-1")), context)
    api_calls.calls.clear()

    response = lambda_handler(sqs_event(sqs_record(body, message_id="m-2")), context)

    assert failures(response) == []
    assert api_calls.count("CreateInvalidation") == 0
    assert len(dead_letters()) == 1


def test_a_redriven_dead_letter_runs_its_failed_target_again(
    context: FakeLambdaContext, api_calls: ApiCalls
) -> None:
    """GIVEN a target dead-lettered after failing
    WHEN an operator redrives the dead letter (fanout redrive marks it)
    THEN the worker tries the target again."""
    account = TARGET_ACCOUNTS[0]
    body = v1_body(
        "cloudfront.invalidate",
        [{"account": account, "params": {"distribution_id": "EMISSING01", "paths": ["/"]}}],
        request_id="req-redrive",
    )
    lambda_handler(sqs_event(sqs_record(body)), context)
    [letter] = dead_letters()
    api_calls.calls.clear()
    redriven = sqs_record(letter["body"])
    redriven["messageAttributes"] = {
        "fanout.redriven": {"stringValue": "true", "dataType": "String"}
    }

    lambda_handler(sqs_event(redriven), context)

    assert api_calls.count("CreateInvalidation") == 1


def test_targets_held_back_by_a_failed_canary_stay_unrun_on_a_duplicate_delivery(
    context: FakeLambdaContext, api_calls: ApiCalls
) -> None:
    """GIVEN a canary message whose canary failed, so its other targets were held back
    WHEN the same message is delivered again THEN the held-back targets still do not run."""
    first, second = TARGET_ACCOUNTS[:2]
    dist = create_distribution(second)
    body = v1_body(
        "cloudfront.invalidate",
        [
            {"account": first, "params": {"distribution_id": "EMISSING01"}},
            {"account": second, "params": {"distribution_id": dist}},
        ],
        params={"paths": ["/"]},
        options={"canary": True},
        request_id="req-canary",
    )
    lambda_handler(sqs_event(sqs_record(body, message_id="m-1")), context)
    api_calls.calls.clear()

    lambda_handler(sqs_event(sqs_record(body, message_id="m-2")), context)

    assert api_calls.count("CreateInvalidation") == 0
    assert invalidations(second, dist) == []
