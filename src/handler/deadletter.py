"""Dead letters go to the dead-letter queue with their reason attached.

Message attributes carry what an operator filters on (``fanout redrive --filter-...``): the
error class, the single-line reason, task, request id, targets, the source message id, and the
letter's id (the same for every copy of one letter: a letter re-sent after a crash is
recognisable as the same one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from handler.contract import ATTRIBUTE_PREFIX, LETTER_ID_ATTRIBUTE, SOURCE_MESSAGE_ID_ATTRIBUTE
from handler.exceptions import FanoutError, own_resource_error

__all__ = ["DeadLetters"]

_MAX_REASON: Final = 1024
_MAX_TARGETS_LISTED: Final = 50


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
        letter_id: str,
        task: str | None = None,
        request_id: str | None = None,
        targets: Sequence[str] = (),
    ) -> None:
        """Dead-letter ``body``; raises whatever SQS raises (the caller keeps the message)."""
        if not self.queue_url:
            raise RuntimeError("no DEAD_LETTER_QUEUE_URL")  # callers check `queue_url` first
        values = {
            ATTRIBUTE_PREFIX + "error_class": error.error_class,
            ATTRIBUTE_PREFIX + "reason": error.reason[:_MAX_REASON],
            SOURCE_MESSAGE_ID_ATTRIBUTE: source_message_id,
            LETTER_ID_ATTRIBUTE: letter_id,
            ATTRIBUTE_PREFIX + "task": task,
            ATTRIBUTE_PREFIX + "request_id": request_id,
            ATTRIBUTE_PREFIX + "targets": ",".join(targets[:_MAX_TARGETS_LISTED])
            if targets
            else None,
        }
        attributes = {
            name: {"DataType": "String", "StringValue": value}
            for name, value in values.items()
            if value
        }
        try:
            self._sqs().send_message(
                QueueUrl=self.queue_url, MessageBody=body, MessageAttributes=attributes
            )
        except Exception as exc:
            raise (
                own_resource_error(exc, f"the dead-letter queue ({self.queue_url})") or exc
            ) from exc
