"""Shorter waits for the worker under test: the mechanisms run, the clock does not.

``in_environment`` is the init hook of every execution environment the suite starts (see
``runner.worker_invoker``): it runs in the environment's process before the handler is
imported.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from tenacity import wait_random_exponential

import handler.lifecycle
from handler.exceptions import FanoutError

__all__ = [
    "capped_retry_delay",
    "capped_sleep",
    "in_environment",
    "scaled_backoff",
    "shifted_time",
    "shorten_waits",
]

REQUEUE_DELAY_CAP_S = 1
BACKOFF_FACTOR = 0.05
BOTOCORE_SLEEP_CAP_S = 0.05


def in_environment(ledger_offset_s: float = 0.0) -> None:
    """The init hook: every wait shortened and, with ``ledger_offset_s``, the ledger's clock
    that much ahead (the locks of invocations that died before have expired)."""
    shorten_waits(setattr)
    if ledger_offset_s:
        from handler import app  # noqa: PLC0415

        # The worker's clock is injected: the environment's worker is built with this one.
        app.reset(clock=shifted_time(ledger_offset_s))


def shorten_waits(setattr: Callable[[Any, str, Any], None]) -> None:  # noqa: A002
    """Every wait of the worker, shortened; ``setattr`` is ``monkeypatch.setattr`` in tests.

    - deferral re-sends with DelaySeconds <= 1 s instead of 5 s - 15 min;
    - tenacity's jittered backoff between in-function retries, 20 times shorter;
    - botocore's own retry backoff, at most 50 ms.
    """
    import botocore.endpoint  # noqa: PLC0415

    import handler.retry  # noqa: PLC0415

    setattr(handler.lifecycle, "retry_delay", capped_retry_delay(REQUEUE_DELAY_CAP_S))
    setattr(handler.retry, "wait_random_exponential", scaled_backoff(BACKOFF_FACTOR))
    setattr(botocore.endpoint, "time", capped_sleep(BOTOCORE_SLEEP_CAP_S))


def capped_retry_delay(cap_s: int) -> Callable[..., int]:
    """``retry_delay`` as the worker computes it, capped: deferral still re-sends with
    DelaySeconds and an attempt counter, for seconds instead of minutes."""
    original = handler.lifecycle.retry_delay

    def capped(
        error: FanoutError | None, attempt: int, rand: Callable[[], float] = random.random
    ) -> int:
        return min(cap_s, original(error, attempt, rand))

    return capped


def shifted_time(offset_s: float) -> Callable[[], float]:
    """A stand-in for the ``time`` module whose clock runs ``offset_s`` ahead.

    Given to ``handler.app.reset(clock=...)``, it makes the next worker's ledger see the locks
    of an invocation that died as expired (its function timeout has passed), without sleeping
    through them and without moving any other clock (moto's, SQS's).
    """
    return lambda: time.time() + offset_s


def scaled_backoff(factor: float) -> Callable[..., Any]:
    """tenacity's ``wait_random_exponential`` with every bound scaled by ``factor``: the worker
    still backs off with jitter between in-function retries, in milliseconds."""

    def wait(*, multiplier: float = 1, max: float = 60) -> Any:  # noqa: A002 - tenacity's name
        return wait_random_exponential(multiplier=multiplier * factor, max=max * factor)

    return wait


def capped_sleep(cap_s: float) -> Any:
    """A stand-in for ``botocore.endpoint``'s ``time``: botocore's retry backoff, capped."""
    return SimpleNamespace(sleep=lambda seconds: time.sleep(min(seconds, cap_s)))
