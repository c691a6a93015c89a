"""The SQS side of an invocation: the records Lambda hands over, and the partial-batch answer.

The response is built directly in the shape Lambda's SQS event source expects with
``ReportBatchItemFailures`` (``{"batchItemFailures": [{"itemIdentifier": ...}]}``): the worker
decides every record's fate itself, so Powertools' batch processor (and its import cost) would
only format this dictionary.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from handler.contract import ATTRIBUTE_PREFIX, REDRIVEN_ATTRIBUTE
from handler.requeue import counters_of

__all__ = ["BatchResponse", "Message", "batch_response"]


@dataclass(frozen=True, slots=True)
class Message:
    message_id: str
    body: str
    sender: str  # SenderId: who published it
    attempt: int
    waits: int
    # Sent back from the DLQ by an operator: by `fanout redrive` (which marks it) or by SQS's
    # message-move task (which keeps the dead letter's attributes).
    redriven: bool

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> Message:
        attributes = record.get("messageAttributes", {}) or {}
        attempt, waits = counters_of(record)
        return cls(
            message_id=str(record["messageId"]),
            body=str(record.get("body", "")),
            sender=str(record.get("attributes", {}).get("SenderId", "")),
            attempt=attempt,
            waits=waits,
            redriven=REDRIVEN_ATTRIBUTE in attributes
            or ATTRIBUTE_PREFIX + "error_class" in attributes,
        )


class _Failure(TypedDict):
    itemIdentifier: str


class BatchResponse(TypedDict):
    batchItemFailures: list[_Failure]


def batch_response(failed_message_ids: Iterable[str]) -> BatchResponse:
    """The records to return to the queue; every other record of the batch is deleted."""
    return {"batchItemFailures": [{"itemIdentifier": m} for m in failed_message_ids]}
