"""A local stand-in for the Lambda SQS event source mapping.

It does what the mapping does for a function with ``ReportBatchItemFailures``: receive a batch,
hand it to the handler as a Lambda-shaped event with a Lambda-like context, delete the records
the handler did not report as failures, and leave the rest on the queue so the visibility
timeout and the queue's redrive policy decide what happens next. A handler that raises, or
returns a malformed response, fails the whole batch: nothing is deleted.

By default each invocation runs in a warm child process that is killed at the function's
timeout, as Lambda stops an invocation hard (``fanout.invoker``): nothing is deleted, and the
next invocation is a cold start. A ``handler=`` callable (or ``in_process=True``) runs in this
process instead, where an overrun can only have its answer disregarded.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import boto3

from fanout.context import LocalLambdaContext
from fanout.invoker import Handler, InProcessInvoker, Invoker, Outcome, ProcessInvoker

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageAttributeValueOutputTypeDef, MessageTypeDef

__all__ = ["Handler", "LocalLambdaContext", "PollStats", "Poller", "build_event"]

MAX_BATCH: Final = 10  # SQS ReceiveMessage and DeleteMessageBatch maximum
# System attributes Lambda copies into each record when SQS returns them.
_RECORD_ATTRIBUTES: Final = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SenderId",
    "ApproximateFirstReceiveTimestamp",
    "SequenceNumber",
    "MessageGroupId",
    "MessageDeduplicationId",
    "AWSTraceHeader",
)
_DEPTH_ATTRIBUTES: Final = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)

# Not under "fanout": that is the worker's Powertools logger (its service name).
log = logging.getLogger("fanout_local.poller")


@dataclass
class PollStats:
    """What a polling run did, for the CLI summary and the tests."""

    batches: int = 0
    records: int = 0
    deleted: int = 0
    failures_reported: int = 0
    delete_failures: int = 0
    handler_errors: int = 0  # batches failed whole: a function error or a malformed answer
    timed_out: bool = False  # the run's time limit, not the function's: see function_timeouts
    function_timeouts: int = 0  # invocations that ran out of time (stopped hard, when isolated)
    cold_starts: int = 0  # invocations that began with an Init phase (a new environment)

    def summary(self) -> str:
        text = (
            f"{self.batches} batches, {self.records} records, {self.deleted} deleted, "
            f"{self.failures_reported} reported as failures"
        )
        if self.delete_failures:
            text += f", {self.delete_failures} deletes failed"
        if self.handler_errors:
            text += f", {self.handler_errors} batches failed whole"
        if self.function_timeouts:
            text += f", {self.function_timeouts} invocations timed out"
        if self.cold_starts:
            text += f", {self.cold_starts} cold start{'s' if self.cold_starts > 1 else ''}"
        if self.timed_out:
            text += ", stopped by the time limit before the queue was empty"
        return text


def _lambda_attribute(value: MessageAttributeValueOutputTypeDef) -> dict[str, Any]:
    """An SQS message attribute in the shape Lambda delivers (camelCase, base64 binaries)."""
    shaped: dict[str, Any] = {
        "stringListValues": list(value.get("StringListValues", [])),
        "binaryListValues": [
            base64.b64encode(v).decode() for v in value.get("BinaryListValues", [])
        ],
        "dataType": value["DataType"],
    }
    if "StringValue" in value:
        shaped["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        shaped["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    return shaped


def build_event(messages: Iterable[MessageTypeDef], *, queue_arn: str) -> dict[str, Any]:
    """The ``{"Records": [...]}`` event Lambda builds from received SQS messages."""
    region = queue_arn.split(":")[3]
    records = []
    for message in messages:
        attributes = message.get("Attributes", {})
        record: dict[str, Any] = {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": {k: attributes[k] for k in _RECORD_ATTRIBUTES if k in attributes},
            "messageAttributes": {
                name: _lambda_attribute(value)
                for name, value in message.get("MessageAttributes", {}).items()
            },
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": region,
        }
        if "MD5OfMessageAttributes" in message:
            record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
        records.append(record)
    return {"Records": records}


def _failed_ids(response: Any, message_ids: set[str]) -> set[str] | None:
    """Message ids the handler reported as failures; None when the response is malformed.

    As in Lambda: no response or no ``batchItemFailures`` means all succeeded; an identifier
    that is empty or not in the batch fails the whole batch.
    """
    if response is None:
        return set()
    if not isinstance(response, Mapping):
        return None
    failures = response.get("batchItemFailures")
    if failures is None:
        return set()
    if not isinstance(failures, list):
        return None
    failed = set()
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, Mapping) else None
        if not isinstance(identifier, str) or identifier not in message_ids:
            return None
        failed.add(identifier)
    return failed


class Poller:
    """Receives batches from one queue and feeds them to a Lambda handler, like Lambda does.

    How the handler runs: ``invoker=`` if given; else ``handler=`` (a callable) or
    ``in_process=True`` (the real handler) in this process; else the real handler in a warm,
    killable child process (:class:`~fanout.invoker.ProcessInvoker`). A poller that owns a child
    process should be closed (``close()`` or ``with``).
    """

    def __init__(
        self,
        queue_url: str,
        *,
        handler: Handler | None = None,
        sqs: SQSClient | None = None,
        region: str | None = None,
        batch_size: int = MAX_BATCH,
        wait_seconds: int = 1,
        function_timeout_s: float = 60.0,
        function_name: str = "fanout-worker",
        memory_mb: int = 512,
        invoker: Invoker | None = None,
        in_process: bool = False,
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be 1-{MAX_BATCH}, got {batch_size}")
        if invoker is not None and (handler is not None or in_process):
            raise ValueError("give invoker= or handler=/in_process=, not both")
        self.queue_url = queue_url
        if invoker is None:
            in_process = in_process or handler is not None
            invoker = InProcessInvoker(handler) if in_process else ProcessInvoker()
        self.invoker = invoker
        self._sqs: SQSClient = sqs or boto3.client("sqs", region_name=region)
        self._batch_size = batch_size
        self._wait_seconds = wait_seconds
        self._function_timeout_s = function_timeout_s
        self._function_name = function_name
        self._memory_mb = memory_mb
        self._queue_arn: str | None = None
        self.stats = PollStats()

    @property
    def queue_arn(self) -> str:
        if self._queue_arn is None:
            attributes = self._sqs.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["QueueArn"]
            )
            self._queue_arn = attributes["Attributes"]["QueueArn"]
        return self._queue_arn

    def close(self) -> None:
        """Stop the invoker's warm environment, if it has one."""
        self.invoker.close()

    def __enter__(self) -> Poller:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def depth(self) -> int:
        """Messages still in the queue: visible, in flight and delayed."""
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=list(_DEPTH_ATTRIBUTES),
        )["Attributes"]
        return sum(int(attributes.get(name, "0")) for name in _DEPTH_ATTRIBUTES)

    def poll_once(self) -> int:
        """Receive one batch and process it; the number of records received."""
        messages = self._sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self._batch_size,
            WaitTimeSeconds=self._wait_seconds,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if messages:
            self._process(messages)
        return len(messages)

    def _process(self, messages: list[MessageTypeDef]) -> None:
        arn = self.queue_arn
        event = build_event(messages, queue_arn=arn)
        context = LocalLambdaContext.create(
            function_name=self._function_name,
            region=arn.split(":")[3],
            account=arn.split(":")[4],
            timeout_s=self._function_timeout_s,
            memory_mb=self._memory_mb,
        )
        self.stats.batches += 1
        self.stats.records += len(messages)
        invocation = self.invoker.invoke(event, context)
        self.stats.cold_starts += invocation.cold_start
        if invocation.outcome is Outcome.ERROR:
            # Lambda treats a function error as the whole batch failing: nothing is deleted.
            log.error("%s; the %d records stay on the queue", invocation.error, len(messages))
            self.stats.handler_errors += 1
            return
        if invocation.outcome is Outcome.TIMEOUT:
            # Lambda stopped the invocation: whatever it did, its answer never reaches the queue.
            log.error(
                "invocation timed out after %.1f s; nothing deleted", self._function_timeout_s
            )
            self.stats.function_timeouts += 1
            return
        self._settle(messages, invocation.response)

    def _settle(self, messages: list[MessageTypeDef], response: Any) -> None:
        """Delete what the handler's answer does not report as failed."""
        failed = _failed_ids(response, {m["MessageId"] for m in messages})
        if failed is None:
            log.error("malformed batchItemFailures %r; the whole batch stays", response)
            self.stats.handler_errors += 1
            return
        self.stats.failures_reported += len(failed)
        self._delete([m for m in messages if m["MessageId"] not in failed])

    def _delete(self, messages: list[MessageTypeDef]) -> None:
        if not messages:
            return
        response = self._sqs.delete_message_batch(
            QueueUrl=self.queue_url,
            Entries=[
                {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)
            ],
        )
        failed = response.get("Failed", [])
        for entry in failed:
            log.error("delete failed for entry %s: %s", entry["Id"], entry.get("Message", ""))
        self.stats.delete_failures += len(failed)
        self.stats.deleted += len(response.get("Successful", []))

    def run(
        self,
        *,
        until_empty: bool = False,
        time_limit_s: float | None = None,
        max_batches: int | None = None,
        empty_checks: int = 2,
        progress: Callable[[PollStats], None] | None = None,
    ) -> PollStats:
        """Poll until stopped, or until the queue is empty (seen ``empty_checks`` times in a row).

        Messages in flight or delayed count as not empty: a failure reported to the queue comes
        back after its visibility timeout, so polling continues until it succeeds or the redrive
        policy moves it to the dead-letter queue. ``progress`` is called with the running
        totals after every batch.
        """
        deadline = None if time_limit_s is None else time.monotonic() + time_limit_s
        empty_seen = 0
        while max_batches is None or self.stats.batches < max_batches:
            if deadline is not None and time.monotonic() >= deadline:
                self.stats.timed_out = until_empty
                break
            if self.poll_once():
                empty_seen = 0
                if progress is not None:
                    progress(self.stats)
                continue
            if until_empty:
                empty_seen = empty_seen + 1 if self.depth() == 0 else 0
                if empty_seen >= empty_checks:
                    break
        return self.stats
