"""Token buckets per (account, region, API), adaptive on throttling.

Each bucket starts at the plugin's declared rate. A throttling response halves the bucket's rate
(never below a floor); each success wins back a tenth of the declared rate (AIMD, as TCP does),
so the worker settles just under the quota the target account really grants.

With a ledger table, every instance also takes each call's start time from the table
(``handler.ratelimit_shared``): the buckets here then adapt to throttling, the table shares the
quota between instances.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from handler.exceptions import DeadlineExceededError
from tasks.base import RateLimit

if TYPE_CHECKING:
    from handler.ratelimit_shared import SharedRates

__all__ = ["RateLimiter", "TokenBucket"]

RateKey = tuple[str, str, str]


@dataclass
class TokenBucket:
    """A classic token bucket; ``rate`` tokens per second up to ``burst``."""

    declared_rate: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    rate: float = field(init=False)
    tokens: float = field(init=False)
    updated: float = field(init=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.rate = self.declared_rate
        self.tokens = float(self.burst)
        self.updated = self.clock()

    def reserve(self) -> float:
        """Take a token; return how many seconds to wait before using it."""
        with self.lock:
            now = self.clock()
            self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            self.tokens -= 1.0
            return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def throttled(self) -> None:
        with self.lock:
            self.rate = max(self.declared_rate / 16, self.rate / 2)

    def succeeded(self) -> None:
        with self.lock:
            self.rate = min(self.declared_rate, self.rate + self.declared_rate / 10)


class RateLimiter:
    """The buckets of this execution environment, created on first use of a key."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
        overrides: Mapping[str, tuple[float, int]] | None = None,
        shared: SharedRates | None = None,
    ) -> None:
        self._overrides = dict(overrides or {})
        self._shared = shared
        self._clock = clock
        self._sleep = sleep or time.sleep
        self._buckets: dict[RateKey, TokenBucket] = {}
        self._lock = threading.Lock()

    def limit(self, rate: RateLimit) -> tuple[float, int]:
        """The quota in force for ``rate``'s API: ``RATE_LIMITS``, else the plugin's."""
        return self._overrides.get(rate.api, (rate.per_second, rate.burst))

    @contextmanager
    def expect(self, key: RateKey, calls: int) -> Iterator[None]:
        """``calls`` more calls of ``key`` are coming (a lane): shared leases are sized by it."""
        with self._shared.expect(key, calls) if self._shared is not None else nullcontext():
            yield

    def bucket(self, key: RateKey, rate: RateLimit) -> TokenBucket:
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                per_second, burst = self.limit(rate)
                bucket = TokenBucket(per_second, burst, clock=self._clock)
                self._buckets[key] = bucket
            return bucket

    def acquire(self, key: RateKey, rate: RateLimit, *, max_wait: float) -> None:
        """Wait for a token; refuse (deadline) rather than wait longer than ``max_wait``."""
        bucket = self.bucket(key, rate)
        wait = bucket.reserve()
        try:
            wait = max(wait, self._shared_wait(key, rate, wait, max_wait))
        except Exception:
            with bucket.lock:
                bucket.tokens += 1.0  # give the token back: we will not use it
            raise
        if wait > 0:
            self._sleep(wait)

    def _shared_wait(self, key: RateKey, rate: RateLimit, local: float, max_wait: float) -> float:
        """Refuse a local wait longer than ``max_wait``; else the wait for the shared slot."""
        if local > max_wait:
            raise DeadlineExceededError(
                f"rate limit {key[2]} for {key[0]} needs {local:.1f}s, only {max_wait:.1f}s left"
            )
        if self._shared is None:
            return 0.0
        per_second, burst = self.limit(rate)
        return self._shared.slot(key, per_second=per_second, burst=burst, max_wait=max_wait)
