"""The job ledger's rules (``handler.ledger``), specified once and checked on both
implementations: the in-memory one and DynamoDB (moto in-process)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import boto3
import pytest
from moto import mock_aws

from handler.ledger import CallRecord, Claim, Decision, Ending, JobState, Ledger
from handler.ledger_dynamodb import DynamoDBLedger
from handler.ledger_memory import InMemoryLedger
from tasks.base import Job, TaskResult


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


def job(key: str = "k1", request_id: str = "req-1", *, redriven: bool = False) -> Job:
    return Job(
        key=key,
        request_id=request_id,
        task="ssm.send_command",
        account="111111111111",
        region="us-east-1",
        params={},
        message_id="m-1",
        index=0,
        redriven=redriven,
    )


def claim_one(ledger: Ledger, clock: Clock, j: Job | None = None, *, lock: float = 60) -> Claim:
    [answer] = ledger.claim([j or job()], lock_until=clock.now + lock)
    return answer


def end(ledger: Ledger, claim: Claim, state: JobState, **extra: object) -> bool:
    [written] = ledger.finish([Ending(claim=claim, state=state, **extra)])  # type: ignore[arg-type]
    return written


def state_of(ledger: Ledger, key: str = "k1", request_id: str = "req-1") -> JobState:
    [record] = [r for r in ledger.jobs(request_id) if r.job_key == key]
    return record.state


# --- claims ------------------------------------------------------------------------------------


def test_a_new_job_is_claimed_fresh_in_progress(make_ledger: Callable[[Clock], Ledger]) -> None:
    """GIVEN an empty ledger WHEN a job is claimed
    THEN the claim is granted fresh (nothing of it can have run), attempt 1, in progress."""
    clock = Clock()
    ledger = make_ledger(clock)

    claim = claim_one(ledger, clock)

    assert (claim.granted, claim.decision) == (True, Decision.FRESH)
    [record] = ledger.jobs("req-1")
    assert (record.state, record.attempts, record.created_at) == (
        JobState.IN_PROGRESS,
        1,
        clock.now,
    )


def test_a_succeeded_job_is_never_claimed_again(make_ledger: Callable[[Clock], Ledger]) -> None:
    """GIVEN a job recorded as succeeded with its result
    WHEN a redelivery claims it
    THEN the claim is refused as ENDED and carries the stored result id."""
    clock = Clock()
    ledger = make_ledger(clock)
    claim = claim_one(ledger, clock)
    end(ledger, claim, JobState.SUCCEEDED, result=TaskResult("cmd-1"))

    again = claim_one(ledger, clock)

    assert (again.granted, again.decision) == (False, Decision.ENDED)
    assert again.record is not None
    assert (again.record.state, again.record.result_id) == (JobState.SUCCEEDED, "cmd-1")


def test_a_live_lock_refuses_a_concurrent_claim(make_ledger: Callable[[Clock], Ledger]) -> None:
    """GIVEN a job in progress whose lock has not expired
    WHEN a concurrent delivery claims it THEN the claim is refused as BUSY."""
    clock = Clock()
    ledger = make_ledger(clock)
    claim_one(ledger, clock)
    clock.now += 59

    assert claim_one(ledger, clock).decision is Decision.BUSY


def test_an_expired_lock_is_claimed_as_a_recovery(make_ledger: Callable[[Clock], Ledger]) -> None:
    """GIVEN a job whose holder died (lock expired, no outcome recorded)
    WHEN a redelivery claims it
    THEN it is granted as RECOVER, attempt 2, with the first claim's time (the plugin looks for
    the earlier attempt's effect since then)."""
    clock = Clock()
    ledger = make_ledger(clock)
    first = clock.now
    claim_one(ledger, clock)
    clock.now += 61

    claim = claim_one(ledger, clock)

    assert (claim.granted, claim.decision) == (True, Decision.RECOVER)
    assert claim.record is not None
    assert claim.record.attempts == 2
    assert claim.previous is not None
    assert claim.previous.created_at == first


def test_an_uncertain_outcome_is_claimed_as_a_recovery(
    make_ledger: Callable[[Clock], Ledger],
) -> None:
    """GIVEN a job whose last attempt's outcome is unknown (UNCERTAIN)
    WHEN it is claimed again THEN it is a recovery; a RETRY job is claimed fresh."""
    clock = Clock()
    ledger = make_ledger(clock)
    end(ledger, claim_one(ledger, clock, job("k1")), JobState.UNCERTAIN)
    end(ledger, claim_one(ledger, clock, job("k2")), JobState.RETRY)

    assert claim_one(ledger, clock, job("k1")).decision is Decision.RECOVER
    assert claim_one(ledger, clock, job("k2")).decision is Decision.FRESH


def test_claims_of_several_jobs_are_answered_each(make_ledger: Callable[[Clock], Ledger]) -> None:
    """GIVEN one job succeeded, one running elsewhere, one new
    WHEN the three are claimed together (one transaction in DynamoDB)
    THEN each gets its own answer, in order, and the new one is granted."""
    clock = Clock()
    ledger = make_ledger(clock)
    end(ledger, claim_one(ledger, clock, job("done")), JobState.SUCCEEDED)
    claim_one(ledger, clock, job("busy"))

    answers = ledger.claim([job("done"), job("busy"), job("new")], lock_until=clock.now + 60)

    assert [a.decision for a in answers] == [Decision.ENDED, Decision.BUSY, Decision.FRESH]
    assert state_of(ledger, "new") is JobState.IN_PROGRESS


def test_a_stale_holder_cannot_overwrite_the_new_holder(
    make_ledger: Callable[[Clock], Ledger],
) -> None:
    """GIVEN a holder whose lock expired and a new holder that claimed the job
    WHEN the stale holder records an outcome THEN it is not written; the new holder's is."""
    clock = Clock()
    ledger = make_ledger(clock)
    stale = claim_one(ledger, clock)
    clock.now += 61
    fresh = claim_one(ledger, clock)

    assert end(ledger, stale, JobState.SUCCEEDED, result=TaskResult("stale")) is False
    assert end(ledger, fresh, JobState.SUCCEEDED, result=TaskResult("fresh")) is True
    [record] = ledger.jobs("req-1")
    assert record.result_id == "fresh"


# --- failures and dead letters -----------------------------------------------------------------


def test_a_failure_keeps_its_lock_until_its_letter_is_sent(
    make_ledger: Callable[[Clock], Ledger],
) -> None:
    """GIVEN a job that failed (FAILING, its letter not sent yet)
    WHEN a duplicate delivery claims it while the lock lives, and after it expired
    THEN it is BUSY first and LETTER after (write its letter); it never runs again."""
    clock = Clock()
    ledger = make_ledger(clock)
    claim = claim_one(ledger, clock)
    end(
        ledger,
        claim,
        JobState.FAILING,
        error_class="AccessDeniedError",
        error="denied",
        lock_until=clock.now + 30,
        ending=JobState.FAILED,
    )

    assert claim_one(ledger, clock).decision is Decision.BUSY
    clock.now += 31
    assert claim_one(ledger, clock).decision is Decision.LETTER


def test_a_job_becomes_failed_only_once_its_letter_is_recorded(
    make_ledger: Callable[[Clock], Ledger],
) -> None:
    """GIVEN a job held for its letter (FAILING)
    WHEN its letter is recorded as sent THEN it is FAILED; a later claim sees it ENDED."""
    clock = Clock()
    ledger = make_ledger(clock)
    [held] = ledger.hold(
        [job()], ending=JobState.FAILED, error_class="X", error="bad", lock_until=clock.now + 30
    )
    assert held.decision is Decision.HELD
    assert state_of(ledger) is JobState.FAILING

    ledger.lettered([held])

    assert state_of(ledger) is JobState.FAILED
    assert claim_one(ledger, clock).decision is Decision.ENDED


def test_a_dead_writer_letter_is_taken_over_with_its_first_reason(
    make_ledger: Callable[[Clock], Ledger],
) -> None:
    """GIVEN a job FAILING whose letter writer died (lock expired)
    WHEN another delivery holds it for a letter with another reason
    THEN it is held, keeping the first reason and ending."""
    clock = Clock()
    ledger = make_ledger(clock)
    ledger.hold(
        [job()],
        ending=JobState.NOT_RUN,
        error_class="NotRunError",
        error="first",
        lock_until=clock.now + 5,
    )
    clock.now += 6

    [held] = ledger.hold(
        [job()],
        ending=JobState.FAILED,
        error_class="Other",
        error="second",
        lock_until=clock.now + 5,
    )
    ledger.lettered([held])

    [record] = ledger.jobs("req-1")
    assert (record.state, record.last_error) == (JobState.NOT_RUN, "first")


def test_hold_refuses_a_running_or_ended_job(make_ledger: Callable[[Clock], Ledger]) -> None:
    """GIVEN one job running (even with an expired lock: its holder may have run it), one ended
    WHEN both are held for a letter
    THEN neither is held: BUSY (it must be recovered, never lettered blind) and ENDED."""
    clock = Clock()
    ledger = make_ledger(clock)
    claim_one(ledger, clock, job("running"))
    end(ledger, claim_one(ledger, clock, job("done")), JobState.SUCCEEDED)
    clock.now += 120

    answers = ledger.hold(
        [job("running"), job("done")],
        ending=JobState.FAILED,
        error_class="X",
        error="x",
        lock_until=clock.now + 5,
    )

    assert [a.decision for a in answers] == [Decision.BUSY, Decision.ENDED]


def test_a_failed_job_is_final_unless_its_message_was_redriven(
    make_ledger: Callable[[Clock], Ledger],
) -> None:
    """GIVEN a job FAILED (dead-lettered)
    WHEN a duplicate delivery claims it THEN it is ENDED;
    WHEN a message redriven from the DLQ claims it THEN it is granted (REDRIVE)."""
    clock = Clock()
    ledger = make_ledger(clock)
    [held] = ledger.hold(
        [job()], ending=JobState.FAILED, error_class="X", error="x", lock_until=clock.now + 5
    )
    ledger.lettered([held])

    assert claim_one(ledger, clock).decision is Decision.ENDED
    assert claim_one(ledger, clock, job(redriven=True)).decision is Decision.REDRIVE


def test_a_redriven_job_that_succeeds_no_longer_shows_its_old_error(
    make_ledger: Callable[[Clock], Ledger],
) -> None:
    """GIVEN a job dead-lettered with a reason
    WHEN its redriven message runs it and it succeeds
    THEN its record shows success only: the old reason and error class are gone."""
    clock = Clock()
    ledger = make_ledger(clock)
    [held] = ledger.hold(
        [job()], ending=JobState.FAILED, error_class="X", error="x", lock_until=clock.now + 5
    )
    ledger.lettered([held])

    end(ledger, claim_one(ledger, clock, job(redriven=True)), JobState.SUCCEEDED)

    [record] = ledger.jobs("req-1")
    assert (record.state, record.error_class, record.last_error) == (
        JobState.SUCCEEDED,
        None,
        None,
    )


def test_a_redriven_job_whose_last_attempt_was_uncertain_is_recovered(
    make_ledger: Callable[[Clock], Ledger],
) -> None:
    """GIVEN a job dead-lettered after an attempt whose outcome was unknown
    WHEN its redriven message claims it
    THEN it is a recovery (the effect is looked up first), not a fresh run."""
    clock = Clock()
    ledger = make_ledger(clock)
    end(ledger, claim_one(ledger, clock), JobState.UNCERTAIN)
    [held] = ledger.hold(
        [job()], ending=JobState.FAILED, error_class="X", error="x", lock_until=clock.now + 5
    )
    ledger.lettered([held])

    assert claim_one(ledger, clock, job(redriven=True)).decision is Decision.RECOVER


def test_a_dead_lettered_message_is_remembered(make_ledger: Callable[[Clock], Ledger]) -> None:
    """GIVEN a message dead-lettered whole WHEN the ledger is asked THEN it remembers it."""
    ledger = make_ledger(Clock())
    assert not ledger.dead_lettered("m-1")

    ledger.mark_dead_lettered("m-1")

    assert ledger.dead_lettered("m-1")
    assert not ledger.dead_lettered("m-2")


# --- coalesced calls and reads -----------------------------------------------------------------


def test_a_coalesced_call_is_recorded_with_its_claims(
    make_ledger: Callable[[Clock], Ledger],
) -> None:
    """GIVEN two jobs claimed for one coalesced call
    WHEN their holder dies and they are claimed again
    THEN each previous record points at the call, whose exact parameters are recorded."""
    clock = Clock()
    ledger = make_ledger(clock)
    call = CallRecord(
        "fanout-ref", "cloudfront.invalidate", "111111111111", "us-east-1", {"paths": ["/a", "/b"]}
    )
    ledger.claim([job("k1"), job("k2")], lock_until=clock.now + 5, calls={"k1": call, "k2": call})
    clock.now += 6

    answers = ledger.claim([job("k1"), job("k2")], lock_until=clock.now + 5)

    assert {a.previous.call_ref for a in answers if a.previous} == {"fanout-ref"}
    assert ledger.recorded_call("fanout-ref") == call


def test_jobs_lists_every_target_of_a_request_only(make_ledger: Callable[[Clock], Ledger]) -> None:
    """GIVEN jobs of two requests WHEN one request's jobs are listed THEN only its jobs."""
    clock = Clock()
    ledger = make_ledger(clock)
    ledger.claim(
        [job("a", "req-1"), job("b", "req-1"), job("c", "req-2")], lock_until=clock.now + 5
    )

    assert sorted(r.job_key for r in ledger.jobs("req-1")) == ["a", "b"]


def test_a_results_detail_is_kept_with_the_job(make_ledger: Callable[[Clock], Ledger]) -> None:
    """GIVEN a succeeded job with a detail WHEN it is read back THEN the detail is there."""
    clock = Clock()
    ledger = make_ledger(clock)
    end(
        ledger,
        claim_one(ledger, clock),
        JobState.SUCCEEDED,
        result=TaskResult("i-1", {"distribution_id": "E1"}),
    )

    [record] = ledger.jobs("req-1")
    assert record.detail == {"distribution_id": "E1"}


# --- claims taken ahead and released -----------------------------------------------------------


def test_a_released_new_job_is_as_if_never_claimed(make_ledger: Callable[[Clock], Ledger]) -> None:
    """GIVEN a new job claimed ahead WHEN its claim is released (its call never started)
    THEN it is RETRY with no attempt and no lock, and the next claim is fresh, attempt 1."""
    clock = Clock()
    ledger = make_ledger(clock)
    ledger.release([claim_one(ledger, clock)])

    [record] = ledger.jobs("req-1")
    assert (record.state, record.attempts, record.claim_token, record.lock_expires) == (
        JobState.RETRY,
        0,
        None,
        None,
    )
    again = claim_one(ledger, clock)
    assert (again.decision, again.record.attempts if again.record else None) == (
        Decision.FRESH,
        1,
    )


def test_a_released_retry_is_a_retry_again(make_ledger: Callable[[Clock], Ledger]) -> None:
    """GIVEN a job that ended RETRY once WHEN it is claimed ahead and released
    THEN it is RETRY with its attempts and reason as before, unlocked, and claimable fresh."""
    clock = Clock()
    ledger = make_ledger(clock)
    end(ledger, claim_one(ledger, clock), JobState.RETRY, error="throttled")
    clock.now += 1

    ledger.release([claim_one(ledger, clock)])

    [record] = ledger.jobs("req-1")
    assert (record.state, record.attempts, record.last_error) == (JobState.RETRY, 1, "throttled")
    assert (record.claim_token, record.lock_expires) == (None, None)
    assert claim_one(ledger, clock).decision is Decision.FRESH


def test_a_released_recovery_keeps_the_call_that_may_have_run(
    make_ledger: Callable[[Clock], Ledger],
) -> None:
    """GIVEN two jobs of a coalesced call whose holder died (the call may have run)
    WHEN they are claimed for recovery as part of another planned call, then released
    THEN they are UNCERTAIN, still pointing at the first call, and the next claim recovers it."""
    clock = Clock()
    ledger = make_ledger(clock)
    first = CallRecord("ref-1", "cloudfront.invalidate", "111111111111", "us-east-1", {"p": 1})
    other = CallRecord("ref-2", "cloudfront.invalidate", "111111111111", "us-east-1", {"p": 2})
    jobs = [job("k1"), job("k2")]
    ledger.claim(jobs, lock_until=clock.now + 5, calls={"k1": first, "k2": first})
    clock.now += 6

    taken = ledger.claim(jobs, lock_until=clock.now + 5, calls={"k1": other, "k2": other})
    assert {c.decision for c in taken} == {Decision.RECOVER}
    assert {c.record.call_ref for c in taken if c.record} == {"ref-1"}
    ledger.release(taken)

    records = ledger.jobs("req-1")
    assert {(r.state, r.call_ref, r.attempts) for r in records} == {
        (JobState.UNCERTAIN, "ref-1", 1)
    }
    again = ledger.claim(jobs, lock_until=clock.now + 5)
    assert {(c.decision, c.previous.call_ref if c.previous else None) for c in again} == {
        (Decision.RECOVER, "ref-1")
    }


def test_a_release_leaves_a_claim_that_is_no_longer_ours(
    make_ledger: Callable[[Clock], Ledger],
) -> None:
    """GIVEN a claim whose lock expired and that another invocation took over
    WHEN the first holder releases it THEN the new holder's claim stands."""
    clock = Clock()
    ledger = make_ledger(clock)
    stale = claim_one(ledger, clock, lock=5)
    clock.now += 6
    current = claim_one(ledger, clock)

    ledger.release([stale])

    [record] = ledger.jobs("req-1")
    assert (record.state, record.claim_token) == (JobState.IN_PROGRESS, current.token)
    assert end(ledger, current, JobState.SUCCEEDED)
