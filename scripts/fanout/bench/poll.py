"""The polling loop and handlers, without moto: what runs inside a worker process.

Kept apart from ``harness.py`` (which seeds the emulator and imports moto) so that a worker
process holds only what a Lambda execution environment would: B4 measures its memory.
"""

from __future__ import annotations

import contextlib
import io
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fanout.poller import Handler, Poller

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

__all__ = ["Drained", "TimedHandler", "drain", "worker_handler"]


class _Discard(io.TextIOBase):
    def write(self, text: str) -> int:
        return len(text)


_DISCARD = _Discard()


@dataclass
class TimedHandler:
    """Wraps a handler to add up the time spent inside it (the Lambda's billed duration)."""

    handler: Handler
    seconds: float = 0.0
    invocations: int = 0

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.handler(event, context)
        finally:
            self.seconds += time.perf_counter() - started
            self.invocations += 1


@dataclass(frozen=True)
class Drained:
    seconds: float
    batches: int
    records: int
    deleted: int
    failures_reported: int
    handler_errors: int
    timed_out: bool


def drain(
    queue_url: str,
    sqs: SQSClient,
    handler: Handler,
    *,
    time_limit_s: float,
    function_timeout_s: float = 60.0,
) -> Drained:
    """Poll until the queue holds nothing (visible, in flight or delayed), like the event source.

    Short polling with a short pause when idle: a long poll would add its wait to every run.
    """
    poller = Poller(
        queue_url, handler=handler, sqs=sqs, wait_seconds=0, function_timeout_s=function_timeout_s
    )
    started = time.perf_counter()
    deadline = started + time_limit_s
    timed_out = False
    while True:
        if time.perf_counter() > deadline:
            timed_out = True
            break
        if poller.poll_once():
            continue
        if poller.depth() == 0:
            break
        time.sleep(0.05)
    stats = poller.stats
    return Drained(
        seconds=time.perf_counter() - started,
        batches=stats.batches,
        records=stats.records,
        deleted=stats.deleted,
        failures_reported=stats.failures_reported,
        handler_errors=stats.handler_errors,
        timed_out=timed_out,
    )


def worker_handler() -> Handler:
    """The real ``lambda_handler`` of a fresh execution environment (env already set).

    With POWERTOOLS_METRICS_DISABLED, Powertools never clears its metric set, so it would grow
    across invocations and print EMF anyway once a metric holds 100 values; clearing after each
    invocation is what the flush does in production.
    """
    from handler import app  # noqa: PLC0415 - imported once the environment is set

    app.reset()

    def handle(event: dict[str, Any], context: Any) -> Any:
        # Powertools prints a full metric set even when disabled: keep it off the bench output.
        with contextlib.redirect_stdout(_DISCARD):
            try:
                return app.lambda_handler(event, context)
            finally:
                app.metrics.clear_metrics()

    return handle
