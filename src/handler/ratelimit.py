"""Token buckets per (account, region, API), adaptive on throttling.

Each bucket starts at the plugin's declared rate. A throttling response halves the bucket's rate
(never below a floor); each success wins back a tenth of the declared rate (AIMD, as TCP does),
so the worker settles just under the quota the target account really grants.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from handler.exceptions import DeadlineExceededError
from tasks.base import RateLimit

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
    ) -> None:
        self._overrides = dict(overrides or {})
        self._clock = clock
        self._sleep = sleep or time.sleep
        self._buckets: dict[RateKey, TokenBucket] = {}
        self._lock = threading.Lock()

    def bucket(self, key: RateKey, rate: RateLimit) -> TokenBucket:
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                per_second, burst = self._overrides.get(rate.api, (rate.per_second, rate.burst))
                bucket = TokenBucket(per_second, burst, clock=self._clock)
                self._buckets[key] = bucket
            return bucket

    def acquire(self, key: RateKey, rate: RateLimit, *, max_wait: float) -> None:
        """Wait for a token; refuse (deadline) rather than wait longer than ``max_wait``."""
        bucket = self.bucket(key, rate)
        wait = bucket.reserve()
        if wait > max_wait:
            with bucket.lock:
                bucket.tokens += 1.0  # give the token back: we will not use it
            raise DeadlineExceededError(
                f"rate limit {key[2]} for {key[0]} needs {wait:.1f}s, only {max_wait:.1f}s left"
            )
        if wait > 0:
            self._sleep(wait)
