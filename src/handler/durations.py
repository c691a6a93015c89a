"""How long one attempt of a task's call takes here: what the time budget reserves before
starting a call.

It measures a single attempt's wire time (not rate-limiter waits, backoff or retries), jumps up
at once when a call is slow, and decays back toward the default with a half-life in *time* -
so one hung answer cannot keep a warm worker from ever starting that task's calls again (the
estimate recovers even while no call is made).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["CallDurations"]

DEFAULT_SECONDS = 1.0
HALF_LIFE_SECONDS = 30.0


class CallDurations:
    def __init__(
        self,
        default_s: float = DEFAULT_SECONDS,
        half_life_s: float = HALF_LIFE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._default = default_s
        self._half_life = half_life_s
        self._clock = clock
        self._seen: dict[str, tuple[float, float]] = {}  # task -> (seconds, when)
        self._lock = threading.Lock()

    def expected(self, task: str) -> float:
        with self._lock:
            return self._at(task, self._clock())

    def record(self, task: str, seconds: float) -> None:
        """One attempt took ``seconds``: the estimate is at least that from now on; faster
        attempts pull it down gently."""
        now = self._clock()
        with self._lock:
            current = self._at(task, now)
            self._seen[task] = (max(seconds, 0.8 * current + 0.2 * seconds), now)

    def _at(self, task: str, now: float) -> float:
        seen = self._seen.get(task)
        if seen is None:
            return self._default
        seconds, when = seen
        decay: float = 0.5 ** (max(0.0, now - when) / self._half_life)
        return self._default + (seconds - self._default) * decay
