"""The life of a job, decided in one place: a delivery's outcomes -> what happens to its message.

:func:`decide` is pure (no I/O): given how each job of a message ended in this delivery, the
message's attempt and wait counters and the limits, it says which jobs are dead-lettered (and
why), which are re-sent to the work queue (when, with which counters), and whether the message
itself must come back. ``handler.settle`` carries the verdict out.

What happens to a throttled target (the throttling policy, end to end):

1. Its call is paced by the token bucket of its rate key (account, region, API): the plugin's
   declared rate, or ``RATE_LIMITS`` (``handler.ratelimit``); the bucket halves on throttling and
   wins a tenth back per success.
2. A throttled call is retried in-function with full-jitter backoff while time remains
   (``handler.retry``); a throttle guarantees the call did not run, so this is safe even for
   non-idempotent plugins.
3. If it stays throttled, its lane stops: the rate key's later calls in this batch are not
   started (``LaneStoppedError``: no attempt used).
4. Here: the throttled target is re-sent alone with a delay of :data:`BASE_DELAY` (10 s for
   throttling) doubled per attempt, equal-jittered, at most 900 s, and counts an attempt; after
   ``MAX_ATTEMPTS`` attempts it is dead-lettered "gave up after N attempts: <last error>".
   Targets that were not started are re-sent with a delay growing with their *waits* counter,
   use no attempt, and after ``MAX_WAITS`` waits are dead-lettered "not started after N
   deliveries": every job makes progress or ends. A target waiting for a rollout slot of its
   request (``handler.rollout``) comes back after about one call's duration, not doubled, and
   may wait ``MAX_WAITS`` times per wave of its request.
5. Without a work queue to re-send to, the whole message returns to SQS (visibility timeout)
   and ``maxReceiveCount`` bounds it.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from handler.exceptions import (
    CanaryPendingError,
    DeadlineExceededError,
    FanoutError,
    JobBusyError,
    LaneStoppedError,
    PermanentError,
    QuotaExceededError,
    RetryableError,
    RolloutWaitError,
    ThrottledError,
    TransientError,
)
from handler.ledger import JobState
from handler.outcome import JobOutcome, Result

__all__ = [
    "BASE_DELAY",
    "MAX_DELAY_SECONDS",
    "Deferral",
    "Letter",
    "Limits",
    "Verdict",
    "busy_deferral",
    "decide",
    "retry_delay",
]

MAX_DELAY_SECONDS: Final = 900  # SQS DelaySeconds limit
# First delay per kind of error, doubled per attempt (or per wait, for targets not started).
BASE_DELAY: Final[tuple[tuple[type[FanoutError], float], ...]] = (
    (QuotaExceededError, 60.0),  # e.g. CloudFront's invalidations in progress: minutes
    (ThrottledError, 10.0),
    (TransientError, 5.0),
    (JobBusyError, 30.0),  # another invocation holds it: at most its function timeout
    (CanaryPendingError, 10.0),
    (DeadlineExceededError, 2.0),  # not started for lack of time: the next invocation can
)
_DEFAULT_BASE_DELAY: Final = 5.0


def retry_delay(
    error: FanoutError | None, count: int, rand: Callable[[], float] = random.random
) -> int:
    """Seconds to wait before the next try after ``count`` tries (or waits): exponential,
    "equal jitter" (at least half the ceiling, so a retry never comes back at once), <= 900."""
    cause = error.cause if isinstance(error, LaneStoppedError) and error.cause else error
    if isinstance(cause, RolloutWaitError):
        # A slot frees when a call of the request ends: about one call from now, whatever the
        # count (the wait is for others' progress, not a failure to back off from).
        ceiling = min(60.0, max(1.0, cause.retry_after))
        return max(1, int(ceiling / 2 + rand() * ceiling / 2))
    base = next(
        (seconds for kind, seconds in BASE_DELAY if isinstance(cause, kind)), _DEFAULT_BASE_DELAY
    )
    ceiling = min(float(MAX_DELAY_SECONDS), base * 2 ** max(0, count - 1))
    return max(1, int(ceiling / 2 + rand() * ceiling / 2))


@dataclass(frozen=True, slots=True)
class Limits:
    max_attempts: int
    max_waits: int
    can_defer: bool  # a work queue to re-send to is configured


@dataclass(frozen=True, slots=True)
class Letter:
    """Jobs dead-lettered together, with one reason."""

    outcomes: tuple[JobOutcome, ...]
    error: FanoutError
    ending: JobState  # FAILED or NOT_RUN once the letter is sent


@dataclass(frozen=True, slots=True)
class Deferral:
    """Jobs re-sent to the work queue together."""

    outcomes: tuple[JobOutcome, ...]
    attempt: int  # the counters the re-sent message carries
    waits: int
    delay: int
    error: FanoutError


@dataclass(frozen=True, slots=True)
class Verdict:
    letters: tuple[Letter, ...] = ()
    deferrals: tuple[Deferral, ...] = ()
    # The message must come back as it is (no work queue for its retry targets).
    redeliver: RetryableError | None = None
    counts: dict[Result, int] = field(default_factory=dict)


def decide(
    outcomes: Sequence[JobOutcome],
    *,
    attempt: int,
    waits: int,
    limits: Limits,
    rand: Callable[[], float] = random.random,
) -> Verdict:
    """What happens to a message whose jobs ended this delivery as ``outcomes``.

    Long on purpose: the whole decision (sort, cut off, letter, defer, redeliver) reads in
    one place, which is the point of this module."""
    total = len(outcomes)
    failed = [o for o in outcomes if o.result is Result.FAILED]
    not_run = [o for o in outcomes if o.result is Result.NOT_RUN]
    retry = [o for o in outcomes if o.result is Result.RETRY]
    tried = [o for o in retry if o.started]
    waiting = [o for o in retry if not o.started]
    # The cut-offs: every job makes progress or ends.
    if tried and attempt >= limits.max_attempts:
        failed += [_given_up(o, f"gave up after {attempt} attempts") for o in tried]
        tried = []
    if waiting and any(waits >= _wait_limit(o, limits) for o in waiting):
        over = [o for o in waiting if waits >= _wait_limit(o, limits)]
        failed += [_given_up(o, f"not started after {waits} deliveries") for o in over]
        waiting = [o for o in waiting if o not in over]
    letters = tuple(
        Letter(tuple(group), _summary(group, total, verb), ending)
        for group, verb, ending in (
            (failed, "failed", JobState.FAILED),
            (not_run, "not run", JobState.NOT_RUN),
        )
        if group
    )
    deferrals = tuple(
        Deferral(
            tuple(group),
            next_attempt,
            next_waits,
            retry_delay(_first(group), n, rand),
            _first(group),
        )
        for group, next_attempt, next_waits, n in (
            (tried, attempt + 1, waits, attempt),  # a started job used an attempt
            (waiting, attempt, waits + 1, waits + 1),  # one not started waited once more
        )
        if group
    )
    counts = dict(Counter(o.result for o in outcomes))
    if deferrals and not limits.can_defer:
        left = tried + waiting
        why = RetryableError(f"{len(left)} of {total} targets to retry: {_first(left).reason}")
        return Verdict(letters, (), why, counts)
    return Verdict(letters, deferrals, None, counts)


def busy_deferral(outcomes: Sequence[JobOutcome], *, attempt: int, waits: int) -> Deferral:
    """Jobs another invocation holds (or whose holder died mid-call): they wait, like any job
    not started, and are recovered by whoever claims them next."""
    error = JobBusyError("held by another invocation (or its holder died mid-call)")
    return Deferral(tuple(outcomes), attempt, waits + 1, retry_delay(error, waits + 1), error)


def _wait_limit(outcome: JobOutcome, limits: Limits) -> int:
    """Waits a job not started may use: ``MAX_WAITS``, and as many again per wave of its
    request when it waits for a rollout slot (it waits while the others run, which all end)."""
    error = outcome.error
    if isinstance(error, RolloutWaitError):
        return limits.max_waits * max(1, error.waves)
    return limits.max_waits


def _first(outcomes: Sequence[JobOutcome]) -> FanoutError:
    return outcomes[0].error or RetryableError("unknown")


def _given_up(outcome: JobOutcome, why: str) -> JobOutcome:
    """Dead-lettered with the same error class (what operators filter letters by)."""
    error = outcome.error
    if isinstance(error, LaneStoppedError) and error.cause is not None:
        error = error.cause
    if error is None:
        return JobOutcome(outcome.job, Result.FAILED, error=PermanentError(f"{why}: unknown"))
    return JobOutcome(outcome.job, Result.FAILED, error=error.with_reason(f"{why}: {error.reason}"))


def _summary(outcomes: Sequence[JobOutcome], total: int, verb: str) -> FanoutError:
    first = outcomes[0].error or PermanentError("unknown failure")
    # "not run: ..." reasons say their verb already: "2 of 5 targets not run: canary ...".
    reason = first.reason.removeprefix(f"{verb}: ")
    return first.with_reason(f"{len(outcomes)} of {total} targets {verb}: {reason}")
