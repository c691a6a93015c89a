"""Deferral instead of sleeping: targets to retry go back to the work queue with a delay.

Only the targets that must be retried are re-sent, as a v1 envelope with the same request id,
request block and options (so their job keys, their ledger records and their request's
controls stay the same), their attempt and wait counters, and a delay (``handler.lifecycle``
decides how long). The function does not pay for waiting, and a throttled target does not burn
the receive count of the others in its message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from handler.contract import (
    ATTEMPT_ATTRIBUTE,
    SOURCE_MESSAGE_ID_ATTRIBUTE,
    SQS_BATCH,
    SQS_MAX_MESSAGE_BYTES,
    WAITS_ATTRIBUTE,
    message_group,
)
from handler.exceptions import own_resource_error
from handler.lifecycle import MAX_DELAY_SECONDS

__all__ = ["Requeue", "counters_of"]


def counters_of(record: Mapping[str, Any]) -> tuple[int, int]:
    """(attempt, waits) of this delivery: the re-send counters plus SQS redeliveries of this
    copy (a redelivery after a crash or timeout counts as an attempt)."""
    attributes = record.get("messageAttributes", {})

    def value(name: str, default: int) -> int:
        try:
            return max(default, int(attributes.get(name, {}).get("stringValue") or default))
        except ValueError:
            return default

    try:
        received = int(record.get("attributes", {}).get("ApproximateReceiveCount") or 1)
    except ValueError:
        received = 1
    return value(ATTEMPT_ATTRIBUTE, 1) + max(0, received - 1), value(WAITS_ATTRIBUTE, 0)


def _tenant(body: str) -> dict[str, str]:
    """The message's MessageGroupId, the same tenant as the message it continues (SQS fair
    queues); nothing when the body names none."""
    group = message_group(body)
    return {"MessageGroupId": group} if group is not None else {}


class Requeue:
    """Sends deferred work back to the work queue; inert when no queue URL is configured."""

    def __init__(self, queue_url: str | None, sqs: Callable[[], Any]) -> None:
        self.queue_url = queue_url
        self._sqs = sqs

    def send(
        self, body: str, *, attempt: int, waits: int, delay: int, source_message_id: str
    ) -> None:
        """Re-send ``body``; raises whatever SQS raises (the caller keeps the message)."""
        if not self.queue_url:
            raise RuntimeError("no WORK_QUEUE_URL")  # callers check `queue_url` first
        try:
            self._sqs().send_message(
                QueueUrl=self.queue_url,
                MessageBody=body,
                DelaySeconds=max(0, min(MAX_DELAY_SECONDS, delay)),
                **_tenant(body),
                MessageAttributes={
                    ATTEMPT_ATTRIBUTE: {"DataType": "Number", "StringValue": str(attempt)},
                    WAITS_ATTRIBUTE: {"DataType": "Number", "StringValue": str(waits)},
                    SOURCE_MESSAGE_ID_ATTRIBUTE: {
                        "DataType": "String",
                        "StringValue": source_message_id,
                    },
                },
            )
        except Exception as exc:
            raise own_resource_error(exc, f"the work queue ({self.queue_url})") or exc from exc

    def enqueue(self, bodies: Sequence[str], *, source_message_id: str) -> None:
        """Send new messages (a selection's parts) in batches under SQS's limits (10 entries,
        256 KiB in all); raises unless every one of them was accepted."""
        if not self.queue_url:
            raise RuntimeError("no WORK_QUEUE_URL")
        source = {"DataType": "String", "StringValue": source_message_id}
        batches: list[list[str]] = []
        size = 0
        for body in bodies:
            cost = len(body.encode()) + 200  # the attribute and its name
            if not batches or len(batches[-1]) == SQS_BATCH or size + cost > SQS_MAX_MESSAGE_BYTES:
                batches.append([])
                size = 0
            batches[-1].append(body)
            size += cost
        for batch in batches:
            entries = [
                {
                    "Id": str(i),
                    "MessageBody": body,
                    "MessageAttributes": {SOURCE_MESSAGE_ID_ATTRIBUTE: source},
                    **_tenant(body),
                }
                for i, body in enumerate(batch)
            ]
            try:
                response = self._sqs().send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            except Exception as exc:
                raise own_resource_error(exc, f"the work queue ({self.queue_url})") or exc from exc
            if response.get("Failed"):
                first = response["Failed"][0]
                raise RuntimeError(
                    f"the work queue refused {len(response['Failed'])} of {len(entries)} "
                    f"messages: {first.get('Code')} {first.get('Message', '')}".rstrip()
                )
