"""The local poller behaves like the Lambda SQS event source (fake handlers: no worker needed)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from fanout.emulator import Organisation
from fanout.poller import Poller

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

pytestmark = pytest.mark.integration

RECORD_KEYS = {
    "messageId",
    "receiptHandle",
    "body",
    "attributes",
    "messageAttributes",
    "md5OfBody",
    "md5OfMessageAttributes",
    "eventSource",
    "eventSourceARN",
    "awsRegion",
}


class RecordingHandler:
    """A fake ``lambda_handler``: records its calls and reports chosen bodies as failures."""

    def __init__(self, fail_bodies: frozenset[str] = frozenset()) -> None:
        self.fail_bodies = fail_bodies
        self.events: list[dict[str, Any]] = []
        self.remaining_ms: list[int] = []
        self.contexts: list[Any] = []

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.events.append(event)
        self.contexts.append(context)
        self.remaining_ms.append(context.get_remaining_time_in_millis())
        return {
            "batchItemFailures": [
                {"itemIdentifier": r["messageId"]}
                for r in event["Records"]
                if r["body"] in self.fail_bodies
            ]
        }

    @property
    def records(self) -> list[dict[str, Any]]:
        return [record for event in self.events for record in event["Records"]]


def send(sqs: SQSClient, queue_url: str, *bodies: str) -> None:
    for body in bodies:
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)


def test_handler_receives_a_lambda_shaped_sqs_event(org: Organisation, sqs: SQSClient) -> None:
    """GIVEN a message with a string and a binary attribute
    WHEN the poller hands it to the handler
    THEN the record and the context have the shape Lambda gives them."""
    sqs.send_message(
        QueueUrl=org.queue_url,
        MessageBody='{"hello": "world"}',
        MessageAttributes={
            "origin": {"DataType": "String", "StringValue": "ci"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        },
    )
    handler = RecordingHandler()

    Poller(org.queue_url, handler=handler, sqs=sqs, function_timeout_s=30).poll_once()

    (record,) = handler.records
    assert set(record) == RECORD_KEYS
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == org.queue_arn
    assert record["awsRegion"] == org.region
    assert record["md5OfBody"] == hashlib.md5(b'{"hello": "world"}').hexdigest()  # noqa: S324
    assert set(record["attributes"]) == {
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
    }
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert record["messageAttributes"] == {
        "origin": {
            "stringValue": "ci",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        },
        "blob": {
            "binaryValue": "AAE=",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Binary",
        },
    }
    context = handler.contexts[0]
    assert context.invoked_function_arn == (
        f"arn:aws:lambda:{org.region}:{org.ops_account}:function:{context.function_name}"
    )
    assert 0 < handler.remaining_ms[0] <= 30_000


def test_only_records_not_reported_as_failures_are_deleted(
    org: Organisation, sqs: SQSClient, depth: Callable[[str], tuple[int, int]]
) -> None:
    """GIVEN three messages, one of which the handler reports as a batch-item failure
    WHEN the poller processes the batch
    THEN two are deleted and the failed one stays in flight for redelivery."""
    send(sqs, org.queue_url, "ok-1", "fail", "ok-2")
    handler = RecordingHandler(fail_bodies=frozenset({"fail"}))
    poller = Poller(org.queue_url, handler=handler, sqs=sqs)

    poller.poll_once()

    assert (poller.stats.records, poller.stats.deleted, poller.stats.failures_reported) == (3, 2, 1)
    assert depth(org.queue_url) == (0, 1)


def test_a_handler_error_deletes_nothing(
    org: Organisation, sqs: SQSClient, depth: Callable[[str], tuple[int, int]]
) -> None:
    """GIVEN a handler that raises
    WHEN the poller processes a batch of two
    THEN both records stay on the queue, as after a Lambda function error."""
    send(sqs, org.queue_url, "a", "b")

    def broken(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise RuntimeError("boom")

    poller = Poller(org.queue_url, handler=broken, sqs=sqs)
    poller.poll_once()

    assert (poller.stats.handler_errors, poller.stats.deleted) == (1, 0)
    assert depth(org.queue_url) == (0, 2)


def test_an_unknown_item_identifier_fails_the_whole_batch(
    org: Organisation, sqs: SQSClient, depth: Callable[[str], tuple[int, int]]
) -> None:
    """GIVEN a handler whose batchItemFailures names a message not in the batch
    WHEN the poller processes it
    THEN nothing is deleted (Lambda treats the response as a failure of the whole batch)."""
    send(sqs, org.queue_url, "a", "b")

    def confused(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"batchItemFailures": [{"itemIdentifier": "not-in-this-batch"}]}

    poller = Poller(org.queue_url, handler=confused, sqs=sqs)

    poller.poll_once()

    assert (poller.stats.handler_errors, poller.stats.deleted) == (1, 0)
    assert depth(org.queue_url) == (0, 2)


def test_a_failed_record_is_redelivered_then_dead_lettered(
    org: Organisation,
    sqs: SQSClient,
    read_queue: Callable[[str], list[dict[str, Any]]],
) -> None:
    """GIVEN a record the handler always reports as failed, and maxReceiveCount 2
    WHEN the poller runs until the queue is empty
    THEN the record was delivered twice, then SQS moved it to the DLQ."""
    send(sqs, org.queue_url, "always-fails")
    handler = RecordingHandler(fail_bodies=frozenset({"always-fails"}))

    stats = Poller(org.queue_url, handler=handler, sqs=sqs).run(until_empty=True, time_limit_s=20)

    assert not stats.timed_out
    assert [r["attributes"]["ApproximateReceiveCount"] for r in handler.records] == ["1", "2"]
    assert [m["Body"] for m in read_queue(org.dlq_url)] == ["always-fails"]


def test_a_handler_past_its_timeout_deletes_nothing(
    org: Organisation, sqs: SQSClient, depth: Callable[[str], tuple[int, int]]
) -> None:
    """GIVEN an in-process handler that answers only after the function timeout
    WHEN the poller processes a batch
    THEN nothing is deleted, as when Lambda stops a function that ran out of time, and the
    invocation counts as timed out (not as a handler error)."""
    send(sqs, org.queue_url, "slow")

    def slow(event: dict[str, Any], context: Any) -> dict[str, Any]:
        while context.get_remaining_time_in_millis() > 0:
            time.sleep(0.05)
        return {"batchItemFailures": []}

    poller = Poller(org.queue_url, handler=slow, sqs=sqs, function_timeout_s=0.2)
    poller.poll_once()

    assert (poller.stats.function_timeouts, poller.stats.handler_errors) == (1, 0)
    assert poller.stats.deleted == 0
    assert depth(org.queue_url) == (0, 1)
