"""Deferral instead of sleeping: unfinished targets go back to the work queue with a delay.

Only the targets that must be retried are re-sent, as a v1 envelope with the same request id
(so their job keys, and the ledger's records, stay the same), an attempt counter and a delay that
grows exponentially with jitter. The function does not pay for waiting, and a throttled target
does not burn the receive count of the others in its message.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

from handler.exceptions import (
    CanaryPendingError,
    DeadlineExceededError,
    FanoutError,
    JobBusyError,
    QuotaExceededError,
    ThrottledError,
)

__all__ = ["ATTEMPT_ATTRIBUTE", "MAX_DELAY_SECONDS", "Requeue", "attempt_of", "retry_delay"]

ATTEMPT_ATTRIBUTE = "fanout.attempt"
MAX_DELAY_SECONDS = 900  # SQS DelaySeconds limit

# First delay per kind of error; doubled per attempt.
_BASE_DELAY = (
    (QuotaExceededError, 60.0),  # e.g. CloudFront's invalidations in progress: minutes
    (ThrottledError, 10.0),
    (JobBusyError, 30.0),
    (CanaryPendingError, 10.0),
    (DeadlineExceededError, 0.0),  # not started for lack of time: the next invocation can
)
_DEFAULT_BASE_DELAY = 5.0


def retry_delay(
    error: FanoutError | None, attempt: int, rand: Callable[[], float] = random.random
) -> int:
    """Seconds to wait before attempt ``attempt + 1``: exponential, jittered, <= 15 minutes."""
    base = next(
        (seconds for kind, seconds in _BASE_DELAY if isinstance(error, kind)), _DEFAULT_BASE_DELAY
    )
    ceiling = min(float(MAX_DELAY_SECONDS), base * 2 ** max(0, attempt - 1))
    # "Equal jitter": at least half the ceiling, so a retry never comes back at once.
    return int(ceiling / 2 + rand() * ceiling / 2)


def attempt_of(record: Mapping[str, Any]) -> int:
    """Which attempt this delivery is: the re-send counter plus SQS redeliveries of this copy."""
    attribute = record.get("messageAttributes", {}).get(ATTEMPT_ATTRIBUTE, {})
    try:
        sent_as = int(attribute.get("stringValue") or 1)
        received = int(record.get("attributes", {}).get("ApproximateReceiveCount") or 1)
    except ValueError:
        return 1
    return max(1, sent_as) + max(0, received - 1)


class Requeue:
    """Sends deferred work back to the work queue; inert when no queue URL is configured."""

    def __init__(self, queue_url: str | None, sqs: Callable[[], Any]) -> None:
        self.queue_url = queue_url
        self._sqs = sqs

    def send(self, body: str, *, attempt: int, delay: int, source_message_id: str) -> bool:
        if not self.queue_url:
            return False
        self._sqs().send_message(
            QueueUrl=self.queue_url,
            MessageBody=body,
            DelaySeconds=max(0, min(MAX_DELAY_SECONDS, delay)),
            MessageAttributes={
                ATTEMPT_ATTRIBUTE: {"DataType": "Number", "StringValue": str(attempt)},
                "fanout.source_message_id": {
                    "DataType": "String",
                    "StringValue": source_message_id,
                },
            },
        )
        return True
