"""Stop conditions: CloudWatch alarms a request names (``options.alarms``), read before each batch.

Like SSM Automation's ``AlarmConfiguration``: when one of the alarms is in ALARM, the request
stops - nothing of it starts any more (its targets end ``not run: request stopped: alarm
<name>``), calls already running finish. When the alarms cannot be read, the request's
``on_alarm_unreadable`` decides: ``stop`` (the default: a stop condition that cannot be checked
does not hold) or ``continue``.

Answers are cached for :data:`CACHE_SECONDS` per set of names, so a backlog of a request's
parts costs one DescribeAlarms per instance every few seconds, not one per batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from handler.exceptions import classify_aws_error

__all__ = ["CACHE_SECONDS", "Alarms", "AlarmsUnreadableError"]

CACHE_SECONDS: Final = 5.0


class AlarmsUnreadableError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Alarms:
    """Which of a request's alarms is in ALARM (thread-safe, cached briefly)."""

    def __init__(
        self,
        cloudwatch: Callable[[], Any],
        *,
        clock: Callable[[], float] = time.monotonic,
        cache_seconds: float | None = None,
    ) -> None:
        self._client = cloudwatch
        self._clock = clock
        self._ttl = CACHE_SECONDS if cache_seconds is None else cache_seconds
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, ...], tuple[float, str | None]] = {}

    def firing(self, names: Sequence[str]) -> str | None:
        """The first of ``names`` in ALARM, or None. An alarm that does not exist is an
        unreadable stop condition (a misspelled name must not silently check nothing).
        Raises :class:`AlarmsUnreadableError`."""
        key = tuple(sorted(names))
        now = self._clock()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and now - hit[0] <= self._ttl:
                return hit[1]
        found = self._read(key)
        with self._lock:
            self._cache[key] = (now, found)
        return found

    def _read(self, names: tuple[str, ...]) -> str | None:
        states: dict[str, str] = {}
        try:
            pages = (
                self._client()
                .get_paginator("describe_alarms")
                .paginate(AlarmNames=list(names), AlarmTypes=["MetricAlarm", "CompositeAlarm"])
            )
            for page in pages:
                for kind in ("MetricAlarms", "CompositeAlarms"):
                    states.update((a["AlarmName"], a["StateValue"]) for a in page.get(kind, ()))
        except Exception as exc:
            raise AlarmsUnreadableError(classify_aws_error(exc).reason) from exc
        missing = [n for n in names if n not in states]
        if missing:
            raise AlarmsUnreadableError(f"no such alarm: {', '.join(missing)}")
        return next((n for n in names if states[n] == "ALARM"), None)
