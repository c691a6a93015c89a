"""Regressions for the promises a demanding user and an attacker broke (issue 9), through the
real handler in-process: no lost dead letter, no false "done", the security boundary before
STS, every job makes progress or ends.

Each test names the numbered finding it guards against; the fault-injection suite
(tests/integration/faults) covers the same promises across processes and crashes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from handler import app
from handler.app import lambda_handler
from handler.durations import CallDurations
from handler.exceptions import ConfigurationError
from handler.settings import Settings
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
    v1_body,
)
from tests.unit.test_ledger import create_ledger_table

pytestmark = pytest.mark.usefixtures("worker_env")

A, B, C = TARGET_ACCOUNTS[:3]
OUTSIDE = "999999999999"


@pytest.fixture
def ledger_table(monkeypatch: pytest.MonkeyPatch, worker_env: dict[str, str]) -> str:
    table = create_ledger_table()
    monkeypatch.setenv("LEDGER_TABLE", table)
    app.reset()
    return table


@pytest.fixture
def work_queue(monkeypatch: pytest.MonkeyPatch, worker_env: dict[str, str]) -> str:
    url = str(boto3.client("sqs").create_queue(QueueName="fanout-work")["QueueUrl"])
    monkeypatch.setenv("WORK_QUEUE_URL", url)
    app.reset()
    return url


def missing_distribution(account: str = A, request_id: str = "req-fail") -> str:
    return v1_body(
        "cloudfront.invalidate",
        [{"account": account, "params": {"distribution_id": "EMISSING01", "paths": ["/"]}}],
        request_id=request_id,
    )


def job_states(table: str, request_id: str) -> list[str]:
    items = boto3.client("dynamodb").query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": request_id}},
    )["Items"]
    return [i["state"]["S"] for i in items if not i["sk"]["S"].startswith("#")]


# --- 2: no dead letter is lost ------------------------------------------------------------------


@pytest.mark.usefixtures("ledger_table")
def test_a_failed_target_whose_letter_cannot_be_sent_is_lettered_by_the_next_delivery(
    context: FakeLambdaContext, fail_operation: Callable[..., None], ledger_table: str
) -> None:
    """GIVEN a target that fails permanently while the DLQ answers 500 three times
    WHEN its message is delivered, then delivered again once the DLQ works (and its holder's
    lock has expired)
    THEN the first delivery is not acknowledged and leaves the job FAILING (not FAILED: no
    letter exists); the second writes the letter and only then marks it failed.

    Regression (issue 9.2): the ledger recorded "failed" before the letter existed, and the
    redelivery acknowledged "already dead-lettered" with nothing in the DLQ."""
    # One SendMessage as the worker makes it: botocore's three attempts, all answered 500.
    fail_operation("SendMessage", "InternalError", status=500, times=1)
    record = sqs_record(missing_distribution(), message_id="m-1")

    first = lambda_handler(sqs_event(record), context)

    assert failures(first) == ["m-1"]
    assert dead_letters() == []
    assert job_states(ledger_table, "req-fail") == ["failing"]

    app.reset(clock=lambda: 4_000_000_000.0)  # the first holder's lock has expired
    again = lambda_handler(sqs_event(sqs_record(missing_distribution(), message_id="m-1")), context)

    assert failures(again) == []
    [letter] = dead_letters()
    assert "NoSuchDistribution" in letter["fanout.reason"]
    assert letter["fanout.error_class"] == "TaskFailedError"
    assert job_states(ledger_table, "req-fail") == ["failed"]


@pytest.mark.usefixtures("ledger_table")
def test_without_a_work_queue_the_failed_target_is_lettered_and_the_message_comes_back(
    context: FakeLambdaContext, monkeypatch: pytest.MonkeyPatch, ledger_table: str
) -> None:
    """GIVEN a message with one target that fails and one throttled, and no WORK_QUEUE_URL
    WHEN it is delivered twice
    THEN the failed target's letter exists after the first delivery (once), the message comes
    back for the throttled one, and the second delivery writes no second letter.

    Regression (issue 9.2, WORK_QUEUE_URL unset)."""
    monkeypatch.delenv("WORK_QUEUE_URL", raising=False)
    ok = create_distribution(B)
    throttled = {"n": 0}
    from botocore.client import BaseClient  # noqa: PLC0415
    from botocore.exceptions import ClientError  # noqa: PLC0415

    original = BaseClient._make_api_call

    def throttle(self: Any, operation: str, params: dict[str, Any]) -> Any:
        if (
            operation == "CreateInvalidation"
            and params["DistributionId"] == ok
            and throttled["n"] < 20
        ):
            throttled["n"] += 1
            raise ClientError(
                {"Error": {"Code": "Throttling", "Message": "Rate exceeded"}}, operation
            )
        return original(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", throttle)
    body = v1_body(
        "cloudfront.invalidate",
        [
            {"account": A, "params": {"distribution_id": "EMISSING01"}},
            {"account": B, "params": {"distribution_id": ok}},
        ],
        params={"paths": ["/"]},
        request_id="req-mixed",
    )

    first = lambda_handler(sqs_event(sqs_record(body, message_id="m-1")), context)
    assert failures(first) == ["m-1"]
    assert len(dead_letters()) == 1
    throttled["n"] = 99  # the throttling is over

    again = lambda_handler(sqs_event(sqs_record(body, message_id="m-1", receive_count=2)), context)

    assert failures(again) == []
    assert dead_letters() == []  # the one letter was read above; no second one
    assert sorted(job_states(ledger_table, "req-mixed")) == ["failed", "succeeded"]


# --- 6: every account a message names is authorized before any STS call ------------------------


def test_a_directory_account_outside_the_allow_list_is_refused_before_sts(
    context: FakeLambdaContext, api_calls: ApiCalls
) -> None:
    """GIVEN a dns.register_instance message whose directory_account is not allowed
    WHEN it is processed
    THEN it is dead-lettered as AccountNotAllowedError without a single AssumeRole or
    DescribeInstances in the (allowed) launching account.

    Regression (issue 9.6): the launching account's role was assumed and the instance described
    before the directory account was refused."""
    body = v1_body(
        "dns.register_instance",
        [{"account": A}],
        params={
            "instance_id": "i-0123456789abcdef0",
            "zone_name": "corp.example.com",
            "directory_account": OUTSIDE,
            "directory_instance_id": "i-0fedcba9876543210",
        },
    )
    api_calls.calls.clear()

    response = lambda_handler(sqs_event(sqs_record(body)), context)

    assert failures(response) == []
    [letter] = dead_letters()
    assert letter["fanout.error_class"] == "AccountNotAllowedError"
    assert OUTSIDE in letter["fanout.reason"]
    assert letter["fanout.request_id"]
    assert api_calls.count("AssumeRole") == api_calls.count("DescribeInstances") == 0


# --- 7: bad input keeps its reason when the ledger is down -------------------------------------


@pytest.mark.usefixtures("ledger_table")
def test_bad_input_is_lettered_with_its_reason_even_when_the_ledger_cannot_be_read(
    context: FakeLambdaContext, fail_operation: Callable[..., None]
) -> None:
    """GIVEN the ledger answering 500 to every read
    WHEN an unparseable message arrives
    THEN it is dead-lettered at once with its reason (not left for maxReceiveCount to move
    without one).

    Regression (issue 9.7)."""
    fail_operation("GetItem", "InternalServerError", status=500)
    record = sqs_record("not json {")

    response = lambda_handler(sqs_event(record), context)

    assert failures(response) == []
    [letter] = dead_letters()
    assert letter["fanout.error_class"] == "BadMessageError"
    assert "not valid JSON" in letter["fanout.reason"]


# --- 8: re-publishing a failed request id is answered plainly ----------------------------------


@pytest.mark.usefixtures("ledger_table")
def test_a_republished_failed_request_runs_nothing_and_says_so(
    context: FakeLambdaContext, api_calls: ApiCalls, ledger_table: str
) -> None:
    """GIVEN a request whose target failed and was dead-lettered
    WHEN the same request id is published again (a new message id)
    THEN nothing runs, no second letter is written, and the request record carries a note
    pointing to `fanout redrive` or a new request id.

    Regression (issue 9.8): the re-publish was swallowed with only an audit line."""
    lambda_handler(sqs_event(sqs_record(missing_distribution(), message_id="m-1")), context)
    assert len(dead_letters()) == 1
    api_calls.calls.clear()

    response = lambda_handler(
        sqs_event(sqs_record(missing_distribution(), message_id="m-2")), context
    )

    assert failures(response) == []
    assert api_calls.count("CreateInvalidation") == 0
    assert dead_letters() == []
    item = boto3.client("dynamodb").get_item(
        TableName=ledger_table, Key={"pk": {"S": "req-fail"}, "sk": {"S": "#request"}}
    )["Item"]
    [note] = [n["S"] for n in item["notes"]["L"]]
    assert "fanout redrive" in note
    assert "new request id" in note


# --- 9: every job makes progress or ends --------------------------------------------------------


def test_one_hung_answer_does_not_keep_a_task_from_ever_starting_again() -> None:
    """GIVEN a call that took 12 s (a hung answer) and invocations with 10 s of budget after
    WHEN no call of that task is made for a while (each invocation refuses to start one)
    THEN the expected duration decays back with time alone, so a later invocation starts it.

    Regression (issue 9.9): the estimate only decayed when a call was recorded, which never
    happened once every invocation refused to start the call - a livelock."""
    now = [0.0]
    durations = CallDurations(clock=lambda: now[0])
    durations.record("cloudfront.invalidate", 12.0)
    budget = 10.0 - 3.0  # the deadline's margin

    assert durations.expected("cloudfront.invalidate") > budget
    now[0] += 60.0  # two half-lives, no call made

    assert durations.expected("cloudfront.invalidate") < budget


@pytest.mark.usefixtures("work_queue")
def test_a_target_that_never_gets_time_is_dead_lettered_after_max_waits(
    context: FakeLambdaContext,
    api_calls: ApiCalls,
    monkeypatch: pytest.MonkeyPatch,
    work_queue: str,
) -> None:
    """GIVEN a target re-sent MAX_WAITS times for lack of time (each wait with a growing delay)
    WHEN it again cannot start
    THEN it is dead-lettered "not started after N deliveries" instead of re-sent forever.

    Regression (issue 9.9): a job "not started for lack of time" was re-sent at once, with no
    limit (1,425 re-sends in 90 s)."""
    monkeypatch.setenv("MAX_WAITS", "3")
    app.reset()
    record = sqs_record(missing_distribution(request_id="req-starved"))
    record["messageAttributes"] = {"fanout.waits": {"stringValue": "3", "dataType": "Number"}}

    response = lambda_handler(sqs_event(record), FakeLambdaContext(remaining_ms=2_000))

    assert failures(response) == []
    assert [p for p in api_calls.of("SendMessage") if p["QueueUrl"] == work_queue] == []
    [letter] = dead_letters()
    assert "not started after 3 deliveries" in letter["fanout.reason"]


@pytest.mark.usefixtures("work_queue")
def test_waiting_targets_come_back_later_each_time(api_calls: ApiCalls, work_queue: str) -> None:
    """GIVEN a target not started for lack of time, on its first and on its fifth wait
    WHEN it is re-sent
    THEN its delay grows with its waits (never "at once")."""
    delays = []
    for waits in (0, 4):
        api_calls.calls.clear()
        record = sqs_record(missing_distribution(request_id=f"req-w{waits}"))
        record["messageAttributes"] = {
            "fanout.waits": {"stringValue": str(waits), "dataType": "Number"}
        }
        lambda_handler(sqs_event(record), FakeLambdaContext(remaining_ms=2_000))
        [sent] = [p for p in api_calls.of("SendMessage") if p["QueueUrl"] == work_queue]
        delays.append(sent["DelaySeconds"])

    assert 1 <= delays[0] <= 2
    assert delays[1] >= 8  # 2 s doubled per wait: ceiling 32 s, equal jitter


# --- 4: the canary gate survives every re-send ---------------------------------------------------


@pytest.mark.usefixtures("ledger_table", "work_queue")
def test_targets_gated_by_a_canary_never_run_when_the_canary_fails_after_a_deferral(
    context: FakeLambdaContext,
    api_calls: ApiCalls,
    fail_operation: Callable[..., None],
    work_queue: str,
) -> None:
    """GIVEN canary A (throttled first, so deferred) and targets B and C waiting for it
    WHEN the deferred copies come back and A is then refused (AccessDenied)
    THEN B and C never run: they end "not run" because of the canary.

    Regression (issue 9.4): the re-sent body for B and C carried no options, so they ran."""
    dists = {a: create_distribution(a) for a in (B, C)}
    body = v1_body(
        "cloudfront.invalidate",
        [
            {"account": A, "params": {"distribution_id": "EMISSING01"}},
            *({"account": a, "params": {"distribution_id": d}} for a, d in dists.items()),
        ],
        params={"paths": ["/"]},
        options={"canary": True},
        request_id="req-canary",
    )
    fail_operation("CreateInvalidation", "Throttling", times=20)
    lambda_handler(sqs_event(sqs_record(body)), context)
    deferred = [p for p in api_calls.of("SendMessage") if p["QueueUrl"] == work_queue]
    assert sorted(len(json.loads(p["MessageBody"])["targets"]) for p in deferred) == [1, 2]
    assert all(json.loads(p["MessageBody"])["options"]["canary"]["account"] == A for p in deferred)

    fail_operation("CreateInvalidation", "AccessDenied", status=403)
    for sent in sorted(deferred, key=lambda p: len(json.loads(p["MessageBody"])["targets"])):
        record = sqs_record(sent["MessageBody"])
        record["messageAttributes"] = {
            name: {"stringValue": v["StringValue"], "dataType": v["DataType"]}
            for name, v in sent["MessageAttributes"].items()
        }
        lambda_handler(sqs_event(record), context)

    assert all(invalidations(a, d) == [] for a, d in dists.items())
    reasons = {letter["fanout.error_class"]: letter["fanout.reason"] for letter in dead_letters()}
    assert "AccessDenied" in reasons["AccessDeniedError"]
    assert "canary target" in reasons["NotRunError"]


# --- a misconfiguration is not a retry -----------------------------------------------------------


def test_a_missing_ledger_table_is_a_configuration_error_not_a_retry(
    context: FakeLambdaContext, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """GIVEN LEDGER_TABLE naming a table that does not exist
    WHEN a message arrives
    THEN the invocation fails (the function-error alarm fires, the batch comes back) with the
    table's name in an ERROR log line - not an INFO "retry" that defers the job forever.

    Regression (issue 13.8)."""
    monkeypatch.setenv("LEDGER_TABLE", "no-such-table")
    app.reset()
    dist = create_distribution(A)
    body = v1_body(
        "cloudfront.invalidate",
        [{"account": A, "params": {"distribution_id": dist, "paths": ["/"]}}],
    )

    with pytest.raises(ConfigurationError, match="no-such-table"):
        lambda_handler(sqs_event(sqs_record(body)), context)

    assert invalidations(A, dist) == []


@pytest.mark.parametrize("name", ["WORK_QUEUE_URL", "DEAD_LETTER_QUEUE_URL"])
def test_a_queue_variable_that_is_not_a_url_is_refused_when_read(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a queue variable holding a logical id (what `sam local invoke` resolves it to)
    WHEN the settings are read
    THEN a ConfigurationError names the variable and the value."""
    monkeypatch.setenv(name, "WorkQueue")

    with pytest.raises(ConfigurationError, match=f"{name} must be a queue URL.*'WorkQueue'"):
        Settings.from_env()
