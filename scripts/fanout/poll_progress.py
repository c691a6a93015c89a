"""The live line ``fanout poll`` and ``fanout demo`` show on a terminal while the worker runs.

Batches, records, what was deleted and reported as failures so far, and what the queue still
holds (waiting, in flight and deferred, read only when the line is drawn). Off a terminal
nothing is drawn and the queue is not read.
"""

from __future__ import annotations

from types import TracebackType
from typing import TextIO

from fanout.console import LiveLine
from fanout.poller import Poller, PollStats

__all__ = ["PollProgress", "describe"]


def describe(stats: PollStats, remaining: int | None) -> str:
    """``3 batches, 27 records: 25 deleted, 2 failed; 4 left in the queue``."""
    text = (
        f"{stats.batches} batch{'es' if stats.batches != 1 else ''}, {stats.records} records: "
        f"{stats.deleted} deleted, {stats.failures_reported} failed"
    )
    if stats.handler_errors:
        text += f", {stats.handler_errors} batches failed whole"
    if stats.function_timeouts:
        text += f", {stats.function_timeouts} timed out"
    if remaining is not None:
        text += f"; {remaining} left in the queue"
    return text


class PollProgress:
    """Give it to ``Poller.run(progress=...)``; close it (or ``with``) before printing results."""

    def __init__(
        self, poller: Poller, *, stream: TextIO | None = None, enabled: bool | None = None
    ) -> None:
        self._poller = poller
        self._line = LiveLine("poll", stream=stream, enabled=enabled)

    @property
    def enabled(self) -> bool:
        return self._line.enabled

    def __call__(self, stats: PollStats) -> None:
        if self._line.enabled:
            self._line.update(describe(stats, self._poller.depth()))

    def close(self) -> None:
        self._line.close()

    def __enter__(self) -> PollProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
