"""The life of a job as one pure decision: a delivery's outcomes + counters + limits -> verdict.

No I/O: these tests build outcomes and read the verdict (docs/life-of-a-job.md states the
same rules in words).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from handler.exceptions import (
    CanaryPendingError,
    DeadlineExceededError,
    FanoutError,
    JobBusyError,
    LaneStoppedError,
    NotRunError,
    QuotaExceededError,
    ThrottledError,
)
from handler.ledger import JobState
from handler.lifecycle import MAX_DELAY_SECONDS, Limits, Verdict, busy_deferral, decide, retry_delay
from handler.outcome import JobOutcome, Result
from tasks.base import Job, TaskResult
from tasks.errors import TaskFailedError, TransientError

LIMITS = Limits(max_attempts=5, max_waits=20, can_defer=True)


def job(n: int) -> Job:
    return Job(
        key=f"k{n}",
        request_id="r",
        task="cloudfront.invalidate",
        account=f"{n:012d}",
        region="us-east-1",
        params={},
        message_id="m",
        index=n,
    )


def outcome(n: int, result: Result, error: FanoutError | None = None) -> JobOutcome:
    task_result = TaskResult(f"I{n}", {}) if result is Result.SUCCEEDED else None
    return JobOutcome(job(n), result, task_result, error=error)


def verdict(
    *outcomes: JobOutcome, attempt: int = 1, waits: int = 0, limits: Limits = LIMITS
) -> Verdict:
    return decide(list(outcomes), attempt=attempt, waits=waits, limits=limits, rand=lambda: 0.5)


def keys(outcomes: tuple[JobOutcome, ...]) -> list[str]:
    return [o.job.key for o in outcomes]


def test_all_succeeded_is_acknowledged_with_nothing_to_do() -> None:
    """GIVEN two jobs that succeeded (one replayed from the ledger)
    WHEN the message's fate is decided
    THEN nothing is lettered, deferred or redelivered, and both count as succeeded."""
    done = verdict(outcome(1, Result.SUCCEEDED), outcome(2, Result.SUCCEEDED))
    assert (done.letters, done.deferrals, done.redeliver) == ((), (), None)
    assert done.counts == {Result.SUCCEEDED: 2}


def test_a_failure_of_its_own_is_lettered_with_the_first_reason_and_its_class() -> None:
    """GIVEN one success and two permanent failures
    WHEN decided
    THEN one letter holds the two failures, ends them FAILED, and keeps the error class."""
    error = TaskFailedError("NoSuchDistribution: E1")
    done = verdict(
        outcome(1, Result.SUCCEEDED),
        outcome(2, Result.FAILED, error),
        outcome(3, Result.FAILED, error),
    )
    [letter] = done.letters
    assert keys(letter.outcomes) == ["k2", "k3"]
    assert letter.ending is JobState.FAILED
    assert letter.error.error_class == "TaskFailedError"
    assert letter.error.reason == "2 of 3 targets failed: NoSuchDistribution: E1"
    assert done.deferrals == ()


def test_jobs_held_back_by_a_request_control_are_lettered_as_not_run() -> None:
    """GIVEN a job max_errors held back
    WHEN decided
    THEN its letter ends it NOT_RUN (apart from the failed ones)."""
    held = NotRunError("not run: max_errors 0 reached")
    done = verdict(
        outcome(1, Result.FAILED, TaskFailedError("bad")), outcome(2, Result.NOT_RUN, held)
    )
    assert [(keys(x.outcomes), x.ending) for x in done.letters] == [
        (["k1"], JobState.FAILED),
        (["k2"], JobState.NOT_RUN),
    ]
    assert done.letters[1].error.reason == "1 of 2 targets not run: max_errors 0 reached"


def test_a_started_retry_uses_an_attempt_and_waits_by_its_error() -> None:
    """GIVEN a throttled job on attempt 3 (the call was made)
    WHEN decided
    THEN it is re-sent with attempt 4, its waits unchanged, after 10 s x 2^2 equal-jittered."""
    done = verdict(outcome(1, Result.RETRY, ThrottledError("Rate exceeded")), attempt=3, waits=2)
    [deferral] = done.deferrals
    assert (deferral.attempt, deferral.waits) == (4, 2)
    assert deferral.delay == 30  # ceiling 40 s; rand 0.5: 20 + 10
    assert done.letters == ()


def test_a_job_not_started_waits_without_using_an_attempt() -> None:
    """GIVEN a job not started (the deadline was near) and a started transient retry
    WHEN decided
    THEN they are deferred apart: the first with waits + 1 and the same attempt, the second
    with attempt + 1."""
    done = verdict(
        outcome(1, Result.RETRY, DeadlineExceededError("not started: 2.0s left")),
        outcome(2, Result.RETRY, TransientError("503")),
        attempt=2,
        waits=4,
    )
    by_key = {keys(d.outcomes)[0]: (d.attempt, d.waits) for d in done.deferrals}
    assert by_key == {"k1": (2, 5), "k2": (3, 4)}


def test_after_max_attempts_a_retry_is_lettered_under_its_own_error_class() -> None:
    """GIVEN a throttled job on the last attempt
    WHEN decided
    THEN it is lettered FAILED "gave up after 5 attempts", still a ThrottledError."""
    done = verdict(outcome(1, Result.RETRY, ThrottledError("Rate exceeded")), attempt=5)
    [letter] = done.letters
    assert done.deferrals == ()
    [given_up] = letter.outcomes
    assert given_up.error is not None
    assert given_up.error.error_class == "ThrottledError"
    assert given_up.error.reason == "gave up after 5 attempts: Rate exceeded"


def test_after_max_waits_a_job_never_started_ends() -> None:
    """GIVEN a job busy elsewhere for the 20th delivery, whose lane was stopped by throttling
    WHEN decided
    THEN it is lettered "not started after 20 deliveries" with the throttle's class (the cause
    of the stopped lane), so every job makes progress or ends."""
    stopped = LaneStoppedError("not started: an earlier call", cause=ThrottledError("Rate"))
    done = verdict(outcome(1, Result.RETRY, stopped), waits=20)
    [letter] = done.letters
    [given_up] = letter.outcomes
    assert given_up.error is not None
    assert given_up.error.error_class == "ThrottledError"
    assert given_up.error.reason == "not started after 20 deliveries: Rate"


def test_without_a_work_queue_the_message_comes_back_whole() -> None:
    """GIVEN retry targets and no work queue to re-send them to
    WHEN decided
    THEN nothing is deferred; the message is redelivered with a reason naming how many."""
    done = verdict(
        outcome(1, Result.SUCCEEDED),
        outcome(2, Result.RETRY, TransientError("503 from CloudFront")),
        limits=replace(LIMITS, can_defer=False),
    )
    assert done.deferrals == ()
    assert done.redeliver is not None
    assert done.redeliver.reason == "1 of 2 targets to retry: 503 from CloudFront"


def test_ended_and_cancelled_jobs_need_nothing_from_the_verdict() -> None:
    """GIVEN a job that had ended in an earlier delivery and one whose request was cancelled
    WHEN decided
    THEN neither is lettered or deferred (the settler ends cancelled jobs), and both are counted."""
    done = verdict(
        outcome(1, Result.ENDED, NotRunError("already ended")),
        outcome(2, Result.CANCELLED, NotRunError("cancelled")),
    )
    assert (done.letters, done.deferrals, done.redeliver) == ((), (), None)
    assert done.counts == {Result.ENDED: 1, Result.CANCELLED: 1}


@pytest.mark.parametrize(
    ("error", "count", "ceiling"),
    [
        (ThrottledError("x"), 1, 10),
        (ThrottledError("x"), 4, 80),
        (QuotaExceededError("x"), 1, 60),
        (TransientError("x"), 2, 10),
        (JobBusyError("x"), 1, 30),
        (CanaryPendingError("x"), 1, 10),
        (DeadlineExceededError("x"), 1, 2),
        (LaneStoppedError("x", cause=QuotaExceededError("y")), 1, 60),
        (ThrottledError("x"), 12, MAX_DELAY_SECONDS),
    ],
)
def test_retry_delay_is_exponential_equal_jittered_and_capped(
    error: FanoutError, count: int, ceiling: int
) -> None:
    """GIVEN an error kind and a try count
    WHEN the delay is drawn at the extremes of the jitter
    THEN it lies between half the ceiling and the ceiling (base x 2^(count-1), <= 900 s)."""
    assert retry_delay(error, count, lambda: 0.0) == max(1, ceiling // 2)
    assert retry_delay(error, count, lambda: 0.999999) == max(1, ceiling - 1)


def test_busy_jobs_wait_once_more() -> None:
    """GIVEN jobs another invocation holds
    WHEN they are deferred
    THEN they keep their attempt and wait once more."""
    busy = busy_deferral([outcome(1, Result.RETRY)], attempt=3, waits=1)
    assert (busy.attempt, busy.waits, keys(busy.outcomes)) == (3, 2, ["k1"])
    assert isinstance(busy.error, JobBusyError)
