"""In-function retries: narrow, jittered, and bounded by the function's remaining time.

Only retryable errors are retried, and 5xx/timeouts only for idempotent calls (their outcome is
unknown: a non-idempotent call could run twice). When retries run out, the job goes back to SQS.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from handler.deadline import Deadline
from handler.exceptions import FanoutError, ThrottledError, TransientError

__all__ = ["call_with_retry"]

T = TypeVar("T")


def call_with_retry(
    fn: Callable[[], T],
    *,
    idempotent: bool,
    deadline: Deadline,
    attempts: int = 4,
    max_backoff: float = 4.0,
    on_retry: Callable[[FanoutError], None] | None = None,
) -> T:
    """Call ``fn`` (which raises :class:`FanoutError`), retrying what is safe to retry.

    Longer than most for its fast path (see the comment below): the common case must not pay
    for building a tenacity ``Retrying``."""

    def retryable(exc: BaseException) -> bool:
        if isinstance(exc, ThrottledError):
            return True  # a throttled call was not executed
        return idempotent and isinstance(exc, TransientError)

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if on_retry is not None and isinstance(exc, FanoutError):
            on_retry(exc)

    # Fast path: most calls succeed at once, and building a Retrying costs more than the call's
    # own bookkeeping. Only after a retryable failure is tenacity brought in; it is handed that
    # failure as its first attempt, so backoff, stops and callbacks are exactly as if it had
    # made the call itself.
    try:
        return fn()
    except FanoutError as exc:
        if attempts <= 1 or not retryable(exc):
            raise
        first_failure: list[FanoutError] = [exc]

    def attempt() -> T:
        if first_failure:
            raise first_failure.pop()
        return fn()

    retrying = Retrying(
        retry=retry_if_exception(retryable),
        wait=wait_random_exponential(multiplier=0.2, max=max_backoff),
        stop=stop_after_attempt(attempts) | _OutOfTime(deadline),
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(attempt)


class _OutOfTime(stop_base):
    """Stop when sleeping and trying once more would run into the function's margin."""

    def __init__(self, deadline: Deadline) -> None:
        self._deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        return not self._deadline.allows(retry_state.upcoming_sleep)
