"""Permanent failures go to the dead-letter queue at once, with their reason attached.

Message attributes carry what an operator filters on (``fanout redrive --filter-...``): the
error class, the single-line reason, task, request id, targets and the source message id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from handler.exceptions import FanoutError

__all__ = ["ATTRIBUTE_PREFIX", "REDRIVEN_ATTRIBUTE", "DeadLetters"]

ATTRIBUTE_PREFIX = "fanout."
# Set by `fanout redrive` on what it sends back: the failed jobs in it may run again.
REDRIVEN_ATTRIBUTE = ATTRIBUTE_PREFIX + "redriven"
_MAX_REASON = 1024
_MAX_TARGETS_LISTED = 50


class DeadLetters:
    """Sends dead letters with the worker's own credentials; inert when no queue is set."""

    def __init__(self, queue_url: str | None, sqs: Callable[[], Any]) -> None:
        self.queue_url = queue_url
        self._sqs = sqs

    def send(
        self,
        *,
        body: str,
        error: FanoutError,
        source_message_id: str,
        task: str | None = None,
        request_id: str | None = None,
        targets: Sequence[str] = (),
    ) -> bool:
        """Dead-letter ``body``; False when no queue is configured (SQS redrive takes over)."""
        if not self.queue_url:
            return False
        values = {
            "error_class": error.error_class,
            "reason": error.reason[:_MAX_REASON],
            "source_message_id": source_message_id,
            "task": task,
            "request_id": request_id,
            "targets": ",".join(targets[:_MAX_TARGETS_LISTED]) if targets else None,
        }
        attributes = {
            ATTRIBUTE_PREFIX + name: {"DataType": "String", "StringValue": value}
            for name, value in values.items()
            if value
        }
        self._sqs().send_message(
            QueueUrl=self.queue_url, MessageBody=body, MessageAttributes=attributes
        )
        return True
