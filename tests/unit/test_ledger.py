"""The job ledger's claim rules, specified once and checked on both implementations."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import boto3
import pytest
from moto import mock_aws

from handler.ledger import DynamoDBLedger, InMemoryLedger, Ledger, LedgerState
from tasks.base import Job


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def create_ledger_table(name: str = "fanout-ledger") -> str:
    boto3.client("dynamodb").create_table(
        TableName=name,
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    return name


@pytest.fixture(params=["memory", "dynamodb"])
def make_ledger(request: pytest.FixtureRequest) -> Iterator[Callable[[Clock], Ledger]]:
    if request.param == "memory":
        yield lambda clock: InMemoryLedger(clock=clock)
        return
    with mock_aws():
        table = create_ledger_table()
        yield lambda clock: DynamoDBLedger(table, lambda: boto3.client("dynamodb"), clock=clock)


def job(key: str = "k1", request_id: str = "req-1") -> Job:
    return Job(
        key=key,
        request_id=request_id,
        task="ssm.send_command",
        account="111111111111",
        region="us-east-1",
        params={},
        message_id="m-1",
        index=0,
    )


def test_new_job_is_claimed_in_progress(make_ledger: Callable[[Clock], Ledger]) -> None:
    """GIVEN an empty ledger WHEN a job is claimed
    THEN the claim is granted, attempt 1, in progress, and not a recovery."""
    ledger = make_ledger(Clock())

    claim = ledger.claim(job(), lock_seconds=60)

    assert claim.granted
    assert not claim.recovered
    [record] = ledger.jobs("req-1")
    assert (record.state, record.attempts) == (LedgerState.IN_PROGRESS, 1)


def test_succeeded_job_is_never_claimed_again(make_ledger: Callable[[Clock], Ledger]) -> None:
    """GIVEN a job recorded as succeeded with its result
    WHEN a redelivery claims it
    THEN the claim is refused and carries the stored result id."""
    ledger = make_ledger(Clock())
    claim = ledger.claim(job(), lock_seconds=60)
    ledger.finish(claim, LedgerState.SUCCEEDED, result_id="cmd-1")

    again = ledger.claim(job(), lock_seconds=60)

    assert not again.granted
    assert again.record.state is LedgerState.SUCCEEDED
    assert again.record.result_id == "cmd-1"


def test_live_lock_refuses_a_concurrent_claim(make_ledger: Callable[[Clock], Ledger]) -> None:
    """GIVEN a job in progress whose lock has not expired
    WHEN a concurrent delivery claims it THEN the claim is refused."""
    clock = Clock()
    ledger = make_ledger(clock)
    ledger.claim(job(), lock_seconds=60)
    clock.now += 59

    assert not ledger.claim(job(), lock_seconds=60).granted


def test_expired_lock_is_recovered(make_ledger: Callable[[Clock], Ledger]) -> None:
    """GIVEN a job whose holder died (lock expired, no outcome recorded)
    WHEN a redelivery claims it
    THEN the claim is granted as a recovery, attempt 2 (so the plugin can look for the
    earlier attempt's effect before running again)."""
    clock = Clock()
    ledger = make_ledger(clock)
    ledger.claim(job(), lock_seconds=60)
    clock.now += 61

    claim = ledger.claim(job(), lock_seconds=60)

    assert claim.granted
    assert claim.recovered
    assert claim.record.attempts == 2


def test_a_job_waiting_for_retry_can_be_claimed_again(
    make_ledger: Callable[[Clock], Ledger],
) -> None:
    """GIVEN a job recorded as waiting for retry WHEN it is claimed again
    THEN the claim is granted with the attempt counted."""
    ledger = make_ledger(Clock())
    ledger.finish(ledger.claim(job(), lock_seconds=60), LedgerState.RETRY, error="throttled")

    claim = ledger.claim(job(), lock_seconds=60)

    assert claim.granted
    assert not claim.recovered
    assert claim.record.attempts == 2


def test_a_failed_job_is_final_unless_its_message_was_redriven(
    make_ledger: Callable[[Clock], Ledger],
) -> None:
    """GIVEN a job recorded as failed (it was dead-lettered)
    WHEN a duplicate delivery claims it, and then a redriven copy claims it
    THEN the duplicate is refused (no second run, no second dead letter) and the redrive
    is granted (an operator sent it back on purpose)."""
    ledger = make_ledger(Clock())
    ledger.finish(ledger.claim(job(), lock_seconds=60), LedgerState.FAILED, error="denied")

    duplicate = ledger.claim(job(), lock_seconds=60)
    redrive = ledger.claim(replace(job(), redriven=True), lock_seconds=60)

    assert not duplicate.granted
    assert duplicate.record.state is LedgerState.FAILED
    assert redrive.granted


def test_a_dead_lettered_message_is_remembered(make_ledger: Callable[[Clock], Ledger]) -> None:
    """GIVEN a message marked as dead-lettered WHEN asked again THEN the ledger remembers it,
    and only that message."""
    ledger = make_ledger(Clock())
    ledger.mark_dead_lettered("m-1")

    assert ledger.dead_lettered("m-1")
    assert not ledger.dead_lettered("m-2")


def test_a_stale_holder_cannot_overwrite_the_new_holder(
    make_ledger: Callable[[Clock], Ledger],
) -> None:
    """GIVEN holder A's lock expired and holder B claimed the job
    WHEN A finally records an outcome
    THEN B's claim stands: the record is still in progress under B."""
    clock = Clock()
    ledger = make_ledger(clock)
    stale = ledger.claim(job(), lock_seconds=10)
    clock.now += 11
    ledger.claim(job(), lock_seconds=60)

    ledger.finish(stale, LedgerState.RETRY, error="late")

    [record] = ledger.jobs("req-1")
    assert record.state is LedgerState.IN_PROGRESS
    assert record.attempts == 2


def test_jobs_lists_every_target_of_a_request_only(
    make_ledger: Callable[[Clock], Ledger],
) -> None:
    """GIVEN jobs of two requests WHEN one request's jobs are listed
    THEN exactly its jobs come back, with their outcomes."""
    ledger = make_ledger(Clock())
    for key in ("a", "b"):
        ledger.finish(
            ledger.claim(job(key), lock_seconds=60), LedgerState.SUCCEEDED, result_id=f"r-{key}"
        )
    ledger.claim(job("c", request_id="other"), lock_seconds=60)

    records = ledger.jobs("req-1")

    assert sorted((r.job_key, r.result_id) for r in records) == [("a", "r-a"), ("b", "r-b")]


def test_an_uncertain_outcome_is_claimed_as_a_recovery(
    make_ledger: Callable[[Clock], Ledger],
) -> None:
    """GIVEN a job whose last attempt ended with an unknown outcome (state uncertain)
    WHEN it is claimed again THEN the claim is granted as a recovery, so the plugin first
    looks for the earlier attempt's effect."""
    ledger = make_ledger(Clock())
    ledger.finish(ledger.claim(job(), lock_seconds=60), LedgerState.UNCERTAIN, error="503")

    claim = ledger.claim(job(), lock_seconds=60)

    assert claim.granted
    assert claim.recovered


def test_a_results_detail_is_kept_with_the_job(make_ledger: Callable[[Clock], Ledger]) -> None:
    """GIVEN a job finished with a result detail (e.g. the invalidation's distribution)
    WHEN the request's jobs are listed THEN the detail comes back as it was recorded."""
    ledger = make_ledger(Clock())
    detail = {"distribution_id": "EDIST00001", "paths": 2}
    ledger.finish(
        ledger.claim(job(), lock_seconds=60), LedgerState.SUCCEEDED, result_id="I1", detail=detail
    )

    [record] = ledger.jobs("req-1")

    assert record.detail == detail
