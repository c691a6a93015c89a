"""``fanout redrive``: dead letters back to the work queue, all of them or a filtered few.

Two ways:

- **Move task** (no filter, no ``--max``): SQS's own ``StartMessageMoveTask`` moves every
  message of the DLQ server-side. It moves messages as they are, attributes included.
- **Copy loop** (filters, ``--max``, ``--dry-run``, ``--loop``, or when the endpoint has no
  move task, as some emulators lack it): receive from the DLQ, send the body unchanged to the
  work queue *without* the ``fanout.*`` attributes (the error description and the
  ``fanout.attempt`` counter: a redriven message starts its attempts anew), delete from the DLQ
  only after the send succeeded. Messages that do not match are kept hidden while the scan
  runs (so each is read once) and made visible again at the end.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from botocore.exceptions import ClientError

from handler.api import DEAD_LETTER_ATTRIBUTE_PREFIX as ATTRIBUTE_PREFIX
from handler.api import REDRIVEN_ATTRIBUTE, SQS_BATCH, SQS_MAX_MESSAGE_BYTES, message_group

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import (
        MessageAttributeValueTypeDef,
        MessageTypeDef,
        SendMessageBatchRequestEntryTypeDef,
    )

__all__ = [
    "DeadLetter",
    "Filters",
    "MoveTaskUnavailableError",
    "NotItsDeadLetterQueueError",
    "RedriveResult",
    "check_dead_letter_queue",
    "redrive",
    "redrive_loop",
    "start_move_task",
]

# SendMessageBatch refuses batches whose payloads add up to more than this.
# A SendMessageBatch carries at most what one message may (its entries summed).
MAX_BATCH_BYTES: Final = SQS_MAX_MESSAGE_BYTES
# How long a scanned message stays hidden: long enough for a scan of a large DLQ.
SCAN_VISIBILITY_SECONDS: Final = 600
# Answers meaning "this endpoint has no message-move task" (rather than "you may not").
_UNSUPPORTED_CODES: Final = frozenset(
    {
        "InvalidAction",
        "UnknownOperation",
        "UnknownOperationException",
        "UnsupportedOperation",
        "AWS.SimpleQueueService.UnsupportedOperation",
        "NotImplemented",
    }
)

Mode = Literal["move-task", "loop"]
Progress = Callable[[int, int], None]


class MoveTaskUnavailableError(Exception):
    """The endpoint cannot run a message-move task (e.g. an emulator without one)."""


class NotItsDeadLetterQueueError(Exception):
    """``--from`` is not the dead-letter queue of ``--to``; ``reason`` says what it is."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message of the DLQ with what the worker wrote about it (``fanout.*`` attributes)."""

    message_id: str
    receipt_handle: str
    body: str
    attributes: Mapping[str, Any]
    task: str | None
    request_id: str | None
    error_class: str | None
    reason: str | None
    targets: str | None

    @classmethod
    def from_message(cls, message: MessageTypeDef) -> DeadLetter:
        attributes: Mapping[str, Any] = message.get("MessageAttributes", {})

        def attribute(name: str) -> str | None:
            value = attributes.get(ATTRIBUTE_PREFIX + name, {}).get("StringValue")
            return str(value) if value else None

        body = message.get("Body", "")
        task, request_id = _from_body(body)
        return cls(
            message_id=message["MessageId"],
            receipt_handle=message["ReceiptHandle"],
            body=body,
            attributes=attributes,
            task=attribute("task") or task,
            request_id=attribute("request_id") or request_id,
            error_class=attribute("error_class"),
            reason=attribute("reason"),
            targets=attribute("targets"),
        )

    def forward_attributes(self) -> dict[str, MessageAttributeValueTypeDef]:
        """The attributes to send on: the publisher's own, none of the worker's ``fanout.*``
        ones, and the redrive mark that lets the worker run the failed jobs again."""
        kept: dict[str, MessageAttributeValueTypeDef] = {
            REDRIVEN_ATTRIBUTE: {"DataType": "String", "StringValue": "true"}
        }
        for name, value in self.attributes.items():
            if name.startswith(ATTRIBUTE_PREFIX):
                continue
            shaped: MessageAttributeValueTypeDef = {"DataType": value["DataType"]}
            if "StringValue" in value:
                shaped["StringValue"] = value["StringValue"]
            if "BinaryValue" in value:
                shaped["BinaryValue"] = value["BinaryValue"]
            kept[name] = shaped
        return kept

    def size(self) -> int:
        extra = sum(len(k) + len(str(v)) for k, v in self.forward_attributes().items())
        return len(self.body.encode()) + extra

    def as_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "task": self.task,
            "request_id": self.request_id,
            "error_class": self.error_class,
            "reason": self.reason,
            "targets": self.targets,
        }


def _from_body(body: str) -> tuple[str | None, str | None]:
    """Task and request id from a body, for dead letters without ``fanout.*`` attributes
    (those that reached the DLQ through the queue's redrive policy)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None, None
    if not isinstance(document, dict):
        return None, None
    if "entries" in document and "version" not in document:
        return "cloudfront.invalidate", None
    task = document.get("task")
    request_id = document.get("request_id")
    return (
        task if isinstance(task, str) else None,
        request_id if isinstance(request_id, str) else None,
    )


@dataclass(frozen=True, slots=True)
class Filters:
    """All given filters must match. ``task`` is a glob (``ssm.*``); ``reason`` a regular
    expression or a plain substring, searched in ``fanout.reason`` and ``fanout.error_class``."""

    task: str | None = None
    reason: str | None = None
    request_id: str | None = None

    @property
    def active(self) -> bool:
        return any((self.task, self.reason, self.request_id))

    def matches(self, letter: DeadLetter) -> bool:
        if self.task and not (letter.task and fnmatch.fnmatchcase(letter.task, self.task)):
            return False
        if self.request_id and letter.request_id != self.request_id:
            return False
        if self.reason:
            text = f"{letter.error_class or ''} {letter.reason or ''}"
            if self.reason not in text:
                try:
                    found = re.search(self.reason, text) is not None
                except re.error:
                    found = False
                if not found:
                    return False
        return True


@dataclass
class RedriveResult:
    mode: Mode
    dry_run: bool
    source_url: str
    destination_url: str
    moved: list[DeadLetter] = field(default_factory=list)
    skipped: list[DeadLetter] = field(default_factory=list)  # did not match the filters
    not_moved: list[DeadLetter] = field(default_factory=list)  # matched, beyond --max
    failed: list[tuple[DeadLetter, str]] = field(default_factory=list)
    task_handle: str | None = None
    source_arn: str | None = None
    approximate_messages: int | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        messages = [
            {**letter.as_dict(), "action": action}
            for action, letters in (
                ("would move" if self.dry_run else "moved", self.moved),
                ("skipped", self.skipped),
                ("left (--max)", self.not_moved),
            )
            for letter in letters
        ]
        messages += [
            {**letter.as_dict(), "action": "failed", "error": error}
            for letter, error in self.failed
        ]
        document: dict[str, Any] = {
            "mode": self.mode,
            "dry_run": self.dry_run,
            "from": self.source_url,
            "to": self.destination_url,
            "moved": 0 if self.dry_run else len(self.moved),
            "would_move": len(self.moved) if self.dry_run else 0,
            "skipped": len(self.skipped),
            "left": len(self.not_moved),
            "failed": len(self.failed),
            "messages": messages,
        }
        if self.mode == "move-task":
            document["task_handle"] = self.task_handle
            document["source_arn"] = self.source_arn
            document["approximate_messages"] = self.approximate_messages
        if self.note:
            document["note"] = self.note
        return document


def queue_attributes(sqs: SQSClient, url: str) -> dict[str, str]:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=[
            "QueueArn",
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
        ],
    )["Attributes"]
    return {str(name): value for name, value in attributes.items()}


def _arn_and_dead_letter_target(sqs: SQSClient, url: str) -> tuple[str, str | None]:
    """A queue's ARN and the ARN its redrive policy sends dead letters to (None: no policy)."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["QueueArn", "RedrivePolicy"]
    )["Attributes"]
    try:
        policy = json.loads(attributes.get("RedrivePolicy") or "{}")
    except ValueError:
        policy = {}
    target = policy.get("deadLetterTargetArn") if isinstance(policy, dict) else None
    return attributes["QueueArn"], str(target) if target else None


def check_dead_letter_queue(sqs: SQSClient, source_url: str, destination_url: str) -> None:
    """Refuse a redrive whose source is not the dead-letter queue of its destination.

    The destination's redrive policy names its DLQ (``deadLetterTargetArn``): that must be the
    source. Anything else would move messages between unrelated queues, or, with the two
    swapped, live work into the DLQ (where nothing consumes it). Raises
    :class:`NotItsDeadLetterQueueError`; AWS errors (no permission to read the attributes)
    propagate.
    """
    source_arn, source_dlq = _arn_and_dead_letter_target(sqs, source_url)
    destination_arn, destination_dlq = _arn_and_dead_letter_target(sqs, destination_url)
    if destination_dlq == source_arn:
        return
    if source_dlq == destination_arn:
        raise NotItsDeadLetterQueueError(
            f"--from and --to are the wrong way round: {destination_url} is the dead-letter "
            f"queue of {source_url}; this would move live work into the dead-letter queue"
        )
    if destination_dlq is None:
        raise NotItsDeadLetterQueueError(
            f"--from {source_url} is not a dead-letter queue of --to {destination_url}: "
            "--to has no redrive policy"
        )
    raise NotItsDeadLetterQueueError(
        f"--from {source_url} is not the dead-letter queue of --to {destination_url} "
        f"(its redrive policy names {destination_dlq})"
    )


def start_move_task(sqs: SQSClient, source_arn: str, destination_arn: str) -> str:
    """StartMessageMoveTask; :class:`MoveTaskUnavailableError` when the endpoint lacks it."""
    try:
        response = sqs.start_message_move_task(SourceArn=source_arn, DestinationArn=destination_arn)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if error.get("Code") in _UNSUPPORTED_CODES or status >= 500:
            raise MoveTaskUnavailableError(
                f"{error.get('Code', status)} from StartMessageMoveTask"
            ) from exc
        raise
    return str(response["TaskHandle"])


def _receive(sqs: SQSClient, url: str, visibility: int) -> list[MessageTypeDef]:
    # Long polling (WaitTimeSeconds) asks every SQS server: an empty answer means empty.
    return sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=SQS_BATCH,
        WaitTimeSeconds=1,
        VisibilityTimeout=visibility,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["All"],
    ).get("Messages", [])


def _size_batches(letters: Sequence[DeadLetter]) -> list[list[DeadLetter]]:
    batches: list[list[DeadLetter]] = []
    current: list[DeadLetter] = []
    size = 0
    for letter in letters:
        needed = letter.size()
        if current and (len(current) == SQS_BATCH or size + needed > MAX_BATCH_BYTES):
            batches.append(current)
            current, size = [], 0
        current.append(letter)
        size += needed
    if current:
        batches.append(current)
    return batches


def _move(
    sqs: SQSClient, source_url: str, destination_url: str, letters: Sequence[DeadLetter]
) -> tuple[list[DeadLetter], list[tuple[DeadLetter, str]], list[DeadLetter]]:
    """Send each letter on, then delete it from the DLQ: (moved, failed, unsent)."""
    moved: list[DeadLetter] = []
    failed: list[tuple[DeadLetter, str]] = []
    unsent: list[DeadLetter] = []
    for batch in _size_batches(letters):
        entries: list[SendMessageBatchRequestEntryTypeDef] = []
        for n, letter in enumerate(batch):
            entry: SendMessageBatchRequestEntryTypeDef = {"Id": str(n), "MessageBody": letter.body}
            if (group := message_group(letter.body)) is not None:
                entry["MessageGroupId"] = group  # its tenant, as when it was first sent
            attributes = letter.forward_attributes()
            if attributes:
                entry["MessageAttributes"] = attributes
            entries.append(entry)
        response = sqs.send_message_batch(QueueUrl=destination_url, Entries=entries)
        sent = [batch[int(ok["Id"])] for ok in response.get("Successful", [])]
        for bad in response.get("Failed", []):
            letter = batch[int(bad["Id"])]
            failed.append((letter, f"not sent: {bad.get('Code')}: {bad.get('Message', '')}"))
            unsent.append(letter)
        if not sent:
            continue
        deleted = sqs.delete_message_batch(
            QueueUrl=source_url,
            Entries=[
                {"Id": str(n), "ReceiptHandle": letter.receipt_handle}
                for n, letter in enumerate(sent)
            ],
        )
        gone = {int(ok["Id"]) for ok in deleted.get("Successful", [])}
        for bad in deleted.get("Failed", []):
            failed.append(
                (
                    sent[int(bad["Id"])],
                    "sent, but not deleted from the DLQ (it is now in both queues): "
                    f"{bad.get('Code')}: {bad.get('Message', '')}",
                )
            )
        moved += [letter for n, letter in enumerate(sent) if n in gone]
    return moved, failed, unsent


def _release(sqs: SQSClient, url: str, handles: Iterable[str]) -> None:
    """Make held messages visible again (VisibilityTimeout 0)."""
    pending = list(handles)
    for start in range(0, len(pending), SQS_BATCH):
        sqs.change_message_visibility_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(n), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                for n, handle in enumerate(pending[start : start + SQS_BATCH])
            ],
        )


def _fresh(
    messages: Sequence[MessageTypeDef], seen: set[str], held: dict[str, str]
) -> list[MessageTypeDef]:
    """Messages not scanned before; a held one seen again (its visibility ran out during a long
    scan) is only re-held with its new receipt handle."""
    fresh = []
    for message in messages:
        if message["MessageId"] not in seen:
            fresh.append(message)
        elif message["MessageId"] in held:
            held[message["MessageId"]] = message["ReceiptHandle"]
    return fresh


def redrive_loop(
    sqs: SQSClient,
    source_url: str,
    destination_url: str,
    *,
    filters: Filters = Filters(),
    max_messages: int | None = None,
    dry_run: bool = False,
    visibility: int = SCAN_VISIBILITY_SECONDS,
    progress: Progress | None = None,
    total: int = 0,
) -> RedriveResult:
    """Receive / (send, delete) until the DLQ is empty or ``max_messages`` matched."""
    result = RedriveResult("loop", dry_run, source_url, destination_url)
    held: dict[str, str] = {}  # message id -> latest receipt handle, released at the end
    seen: set[str] = set()
    try:
        while max_messages is None or len(result.moved) < max_messages:
            fresh = _fresh(_receive(sqs, source_url, visibility), seen, held)
            if not fresh:
                break
            to_move: list[DeadLetter] = []
            for letter in map(DeadLetter.from_message, fresh):
                seen.add(letter.message_id)
                if not filters.matches(letter):
                    result.skipped.append(letter)
                elif max_messages is not None and len(result.moved) + len(to_move) >= max_messages:
                    result.not_moved.append(letter)
                else:
                    to_move.append(letter)
                    continue
                held[letter.message_id] = letter.receipt_handle
            unsent = to_move
            if dry_run:
                result.moved += to_move
            else:
                moved, failed, unsent = _move(sqs, source_url, destination_url, to_move)
                result.moved += moved
                result.failed += failed
            held.update((letter.message_id, letter.receipt_handle) for letter in unsent)
            if progress is not None:
                progress(len(seen), max(total, len(seen)))
    finally:
        _release(sqs, source_url, held.values())
    return result


def redrive(
    sqs: SQSClient,
    source_url: str,
    destination_url: str,
    *,
    filters: Filters = Filters(),
    max_messages: int | None = None,
    dry_run: bool = False,
    force_loop: bool = False,
    move_sqs: SQSClient | None = None,
    progress: Progress | None = None,
) -> RedriveResult:
    """The move task when it can do the job (no filter, no max, not a dry run), else the loop.

    ``move_sqs`` is the client for StartMessageMoveTask (the CLI gives one without retries, so
    an endpoint that lacks it answers at once).
    """
    source = queue_attributes(sqs, source_url)
    waiting = int(source.get("ApproximateNumberOfMessages", "0"))
    use_loop = force_loop or dry_run or filters.active or max_messages is not None
    note = None
    if not use_loop:
        if waiting == 0 and int(source.get("ApproximateNumberOfMessagesNotVisible", "0")) == 0:
            return RedriveResult(
                "move-task", dry_run, source_url, destination_url, approximate_messages=0
            )
        destination_arn = queue_attributes(sqs, destination_url)["QueueArn"]
        try:
            handle = start_move_task(move_sqs or sqs, source["QueueArn"], destination_arn)
        except MoveTaskUnavailableError as exc:
            note = f"the message-move task is not available here ({exc}); used the copy loop"
        else:
            return RedriveResult(
                "move-task",
                dry_run,
                source_url,
                destination_url,
                task_handle=handle,
                source_arn=source["QueueArn"],
                approximate_messages=waiting,
            )
    result = redrive_loop(
        sqs,
        source_url,
        destination_url,
        filters=filters,
        max_messages=max_messages,
        dry_run=dry_run,
        progress=progress,
        total=waiting,
    )
    result.note = note
    return result
