"""handler.ratelimit (token buckets, AIMD) and handler.retry (narrow, bounded retries).

Time is faked throughout: an injected clock and sleep for the buckets, a recording stand-in for
tenacity's sleep, and Deadlines built on a ``remaining_ms`` callable. Nothing really sleeps.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import pytest
import tenacity.nap

from handler.deadline import Deadline
from handler.exceptions import (
    BadMessageError,
    DeadlineExceededError,
    FanoutError,
    QuotaExceededError,
    TaskFailedError,
    ThrottledError,
    TransientError,
)
from handler.ratelimit import RateLimiter, TokenBucket
from handler.retry import call_with_retry
from tasks.base import RateLimit

KEY = ("111111111111", "global", "cloudfront:CreateInvalidation")
OTHER_KEY = ("222222222222", "global", "cloudfront:CreateInvalidation")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def limiter(clock: FakeClock, sleeps: list[float]) -> RateLimiter:
    return RateLimiter(clock=clock, sleep=sleeps.append)


# --- TokenBucket -------------------------------------------------------------------------------


def test_burst_tokens_are_free_then_each_token_waits_one_interval_more(clock: FakeClock) -> None:
    """GIVEN a bucket of 2 per second with a burst of 3, at a standstill clock
    WHEN five tokens are reserved
    THEN the first three need no wait and the next ones wait 0.5 s, then 1.0 s."""
    bucket = TokenBucket(declared_rate=2.0, burst=3, clock=clock)

    waits = [bucket.reserve() for _ in range(5)]

    assert waits == pytest.approx([0.0, 0.0, 0.0, 0.5, 1.0])


def test_tokens_refill_at_the_rate(clock: FakeClock) -> None:
    """GIVEN a bucket of 2 per second, burst 1, whose token was just used
    WHEN half a second passes
    THEN the next token is free."""
    bucket = TokenBucket(declared_rate=2.0, burst=1, clock=clock)
    bucket.reserve()

    clock.advance(0.5)

    assert bucket.reserve() == 0.0


def test_idle_time_never_saves_more_than_the_burst(clock: FakeClock) -> None:
    """GIVEN a bucket of 2 per second with a burst of 2
    WHEN it stays idle for an hour and then three tokens are reserved
    THEN only two are free; the third waits 0.5 s."""
    bucket = TokenBucket(declared_rate=2.0, burst=2, clock=clock)

    clock.advance(3600)

    assert [bucket.reserve() for _ in range(3)] == pytest.approx([0.0, 0.0, 0.5])


def test_throttled_halves_the_rate(clock: FakeClock) -> None:
    """GIVEN a bucket declared at 8 per second
    WHEN it is throttled twice
    THEN its rate is 4, then 2."""
    bucket = TokenBucket(declared_rate=8.0, burst=1, clock=clock)

    bucket.throttled()
    after_one = bucket.rate
    bucket.throttled()

    assert (after_one, bucket.rate) == pytest.approx((4.0, 2.0))


def test_throttled_never_goes_below_a_sixteenth_of_the_declared_rate(clock: FakeClock) -> None:
    """GIVEN a bucket declared at 8 per second
    WHEN it is throttled ten times
    THEN its rate stops at 0.5 (8 / 16)."""
    bucket = TokenBucket(declared_rate=8.0, burst=1, clock=clock)

    for _ in range(10):
        bucket.throttled()

    assert bucket.rate == pytest.approx(0.5)


def test_success_recovers_a_tenth_of_the_declared_rate(clock: FakeClock) -> None:
    """GIVEN a bucket declared at 8 per second, throttled down to 4
    WHEN two calls succeed
    THEN its rate grows additively by 0.8 each: 4.8, then 5.6."""
    bucket = TokenBucket(declared_rate=8.0, burst=1, clock=clock)
    bucket.throttled()

    bucket.succeeded()
    after_one = bucket.rate
    bucket.succeeded()

    assert (after_one, bucket.rate) == pytest.approx((4.8, 5.6))


def test_success_never_raises_the_rate_above_the_declared_rate(clock: FakeClock) -> None:
    """GIVEN a throttled bucket declared at 8 per second
    WHEN many calls succeed
    THEN its rate is back to exactly 8, not above."""
    bucket = TokenBucket(declared_rate=8.0, burst=1, clock=clock)
    bucket.throttled()

    for _ in range(20):
        bucket.succeeded()

    assert bucket.rate == pytest.approx(8.0)


def test_a_throttled_bucket_spaces_tokens_by_its_reduced_rate(clock: FakeClock) -> None:
    """GIVEN a bucket of 2 per second, burst 1, throttled once (rate 1)
    WHEN two tokens are reserved at once
    THEN the second waits 1 s instead of 0.5 s."""
    bucket = TokenBucket(declared_rate=2.0, burst=1, clock=clock)
    bucket.throttled()

    assert [bucket.reserve() for _ in range(2)] == pytest.approx([0.0, 1.0])


# --- RateLimiter -------------------------------------------------------------------------------

RATE = RateLimit(api="cloudfront:CreateInvalidation", per_second=2.0, burst=2)


def test_acquire_sleeps_only_once_the_burst_is_spent(
    limiter: RateLimiter, sleeps: list[float]
) -> None:
    """GIVEN a limiter for 2 per second with a burst of 2
    WHEN three tokens of one key are acquired at once
    THEN the injected sleep is called once, for 0.5 s."""
    for _ in range(3):
        limiter.acquire(KEY, RATE, max_wait=10.0)

    assert sleeps == pytest.approx([0.5])


def test_keys_have_separate_buckets(limiter: RateLimiter, sleeps: list[float]) -> None:
    """GIVEN one key whose burst is spent
    WHEN a token of another key (another account) is acquired
    THEN it is free: nothing sleeps."""
    limiter.acquire(KEY, RATE, max_wait=10.0)
    limiter.acquire(KEY, RATE, max_wait=10.0)

    limiter.acquire(OTHER_KEY, RATE, max_wait=10.0)

    assert sleeps == []


def test_the_same_key_always_gets_the_same_bucket(limiter: RateLimiter) -> None:
    """GIVEN a key already used
    WHEN its bucket is asked for again
    THEN it is the same bucket (state such as a throttled rate is kept)."""
    first = limiter.bucket(KEY, RATE)

    assert limiter.bucket(KEY, RATE) is first


def test_acquire_refuses_rather_than_waits_beyond_max_wait(
    limiter: RateLimiter, sleeps: list[float]
) -> None:
    """GIVEN a key whose burst is spent (the next token needs 0.5 s)
    WHEN a token is acquired with max_wait 0.1 s
    THEN DeadlineExceededError is raised, naming the API and account, and nothing sleeps."""
    limiter.acquire(KEY, RATE, max_wait=10.0)
    limiter.acquire(KEY, RATE, max_wait=10.0)

    with pytest.raises(DeadlineExceededError) as caught:
        limiter.acquire(KEY, RATE, max_wait=0.1)

    assert "cloudfront:CreateInvalidation" in caught.value.reason
    assert KEY[0] in caught.value.reason
    assert sleeps == []


def test_a_refused_token_is_given_back(limiter: RateLimiter, sleeps: list[float]) -> None:
    """GIVEN a key whose burst is spent and one acquire refused for lack of time
    WHEN a token is acquired with time to wait
    THEN it waits 0.5 s, as if the refused acquire had never happened (not 1.0 s)."""
    limiter.acquire(KEY, RATE, max_wait=10.0)
    limiter.acquire(KEY, RATE, max_wait=10.0)
    with pytest.raises(DeadlineExceededError):
        limiter.acquire(KEY, RATE, max_wait=0.1)

    limiter.acquire(KEY, RATE, max_wait=10.0)

    assert sleeps == pytest.approx([0.5])


# --- call_with_retry ---------------------------------------------------------------------------


@pytest.fixture
def backoffs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """tenacity's sleeps, recorded instead of slept."""
    recorded: list[float] = []
    monkeypatch.setattr(tenacity.nap, "time", SimpleNamespace(sleep=recorded.append))
    return recorded


def plenty() -> Deadline:
    return Deadline(remaining_ms=lambda: 600_000)


class Script:
    """A callable that raises the given errors in turn, then returns 'done'."""

    def __init__(self, *errors: FanoutError) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def always(error_factory: Callable[[], FanoutError]) -> Script:
    return Script(*(error_factory() for _ in range(100)))


def test_throttling_is_retried_until_the_call_succeeds(backoffs: list[float]) -> None:
    """GIVEN a non-idempotent call throttled twice, then successful
    WHEN it is called with retry
    THEN it returns the result after three attempts (a throttled call did not run)."""
    fn = Script(ThrottledError("slow down"), ThrottledError("slow down"))

    result = call_with_retry(fn, idempotent=False, deadline=plenty())

    assert (result, fn.calls) == ("done", 3)


def test_transient_errors_are_retried_for_idempotent_calls(backoffs: list[float]) -> None:
    """GIVEN an idempotent call failing once with a 5xx (TransientError), then successful
    WHEN it is called with retry
    THEN it returns the result after two attempts."""
    fn = Script(TransientError("503"))

    result = call_with_retry(fn, idempotent=True, deadline=plenty())

    assert (result, fn.calls) == ("done", 2)


def test_transient_errors_are_not_retried_for_non_idempotent_calls(backoffs: list[float]) -> None:
    """GIVEN a non-idempotent call failing with a TransientError (its outcome is unknown)
    WHEN it is called with retry
    THEN the error is raised after one attempt: it must not run twice."""
    error = TransientError("read timeout")
    fn = Script(error)

    with pytest.raises(TransientError) as caught:
        call_with_retry(fn, idempotent=False, deadline=plenty())

    assert (caught.value, fn.calls) == (error, 1)


@pytest.mark.parametrize(
    "error",
    [
        TaskFailedError("NoSuchDistribution"),
        BadMessageError("bad"),
        QuotaExceededError("too many in progress"),
        DeadlineExceededError("no time"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_permanent_quota_and_deadline_errors_are_never_retried(
    backoffs: list[float], error: FanoutError
) -> None:
    """GIVEN an idempotent call failing with a permanent, quota or deadline error
    WHEN it is called with retry
    THEN that very error is raised after one attempt, without any backoff."""
    fn = Script(error)

    with pytest.raises(type(error)) as caught:
        call_with_retry(fn, idempotent=True, deadline=plenty())

    assert (caught.value, fn.calls, backoffs) == (error, 1, [])


def test_retries_stop_after_the_given_number_of_attempts(backoffs: list[float]) -> None:
    """GIVEN a call that is always throttled
    WHEN it is called with retry and attempts=3
    THEN it is attempted 3 times and the last ThrottledError is raised."""
    fn = always(lambda: ThrottledError("slow down"))

    with pytest.raises(ThrottledError):
        call_with_retry(fn, idempotent=True, deadline=plenty(), attempts=3)

    assert fn.calls == 3


def test_no_retry_is_made_when_the_deadline_does_not_allow_the_backoff(
    backoffs: list[float],
) -> None:
    """GIVEN a call that is always throttled and a deadline already inside its safety margin
    WHEN it is called with retry
    THEN it is attempted once and the ThrottledError is raised without sleeping."""
    fn = always(lambda: ThrottledError("slow down"))
    deadline = Deadline(remaining_ms=lambda: 2_000, margin_s=3.0)

    with pytest.raises(ThrottledError):
        call_with_retry(fn, idempotent=True, deadline=deadline)

    assert (fn.calls, backoffs) == (1, [])


def test_retries_stop_as_soon_as_the_deadline_runs_out(backoffs: list[float]) -> None:
    """GIVEN a call that is always throttled and a deadline with time for one retry only
    WHEN it is called with retry (4 attempts allowed)
    THEN it is attempted twice."""
    remaining = [600_000]

    def remaining_ms() -> int:
        now = remaining[0]
        remaining[0] = 0  # after the first look at the clock, time is up
        return now

    fn = always(lambda: ThrottledError("slow down"))

    with pytest.raises(ThrottledError):
        call_with_retry(fn, idempotent=True, deadline=Deadline(remaining_ms=remaining_ms))

    assert fn.calls == 2


def test_on_retry_is_told_each_error_that_is_retried(backoffs: list[float]) -> None:
    """GIVEN a call throttled three times with attempts=3
    WHEN it is called with retry and an on_retry callback
    THEN on_retry receives the first two errors (the third is raised, not retried)."""
    errors = [ThrottledError(f"slow down {n}") for n in range(3)]
    seen: list[FanoutError] = []

    with pytest.raises(ThrottledError) as caught:
        call_with_retry(
            Script(*errors), idempotent=False, deadline=plenty(), attempts=3, on_retry=seen.append
        )

    assert seen == errors[:2]
    assert caught.value is errors[2]


def test_backoff_between_attempts_is_bounded_by_max_backoff(backoffs: list[float]) -> None:
    """GIVEN a call that is always throttled, 8 attempts and max_backoff 0.05 s
    WHEN it is called with retry
    THEN 7 backoffs are taken and none is longer than 0.05 s."""
    fn = always(lambda: ThrottledError("slow down"))

    with pytest.raises(ThrottledError):
        call_with_retry(fn, idempotent=True, deadline=plenty(), attempts=8, max_backoff=0.05)

    assert len(backoffs) == 7
    assert max(backoffs) <= 0.05


def test_a_configured_override_replaces_the_declared_rate() -> None:
    """GIVEN an override of 10/s burst 3 for an API declared at 2/s burst 1
    WHEN its bucket is created THEN it uses the override."""
    limiter = RateLimiter(overrides={"svc:Call": (10.0, 3)})

    bucket = limiter.bucket(("111111111111", "us-east-1", "svc:Call"), RateLimit("svc:Call", 2.0))

    assert (bucket.rate, bucket.burst) == (10.0, 3)
