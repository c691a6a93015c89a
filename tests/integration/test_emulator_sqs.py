"""The emulator runs SQS message-move tasks (DLQ redrive), which moto does not implement.

A moved message is a new message in the destination (new id, attempts counted anew) with the
same body and message attributes; the task reports RUNNING, then COMPLETED (or CANCELLED).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

from fanout.emulator import Organisation, create_queues

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

pytestmark = pytest.mark.integration

ReadQueue = Callable[[str], list[dict[str, Any]]]
Depth = Callable[[str], tuple[int, int]]
Settled = Callable[[str], dict[str, Any]]


def dead_letters(sqs: SQSClient, dlq_url: str, count: int) -> dict[str, str]:
    """``count`` messages sent to the DLQ: body -> the message attribute they carry."""
    sent = {}
    for n in range(count):
        body, tag = f"letter-{n}-{uuid.uuid4().hex[:8]}", f"tag-{n}"
        sqs.send_message(
            QueueUrl=dlq_url,
            MessageBody=body,
            MessageAttributes={"tag": {"DataType": "String", "StringValue": tag}},
        )
        sent[body] = tag
    return sent


def test_without_a_destination_the_messages_go_back_to_the_source_queue(
    org: Organisation, sqs: SQSClient, read_queue: ReadQueue, depth: Depth, settled: Settled
) -> None:
    """GIVEN three dead letters, in the DLQ of the work queue
    WHEN a move task starts without DestinationArn
    THEN it completes having moved 3, the work queue has the same bodies and attributes under
    new message ids, and the DLQ is empty."""
    sent = dead_letters(sqs, org.dlq_url, 3)
    ids_before = {m["MessageId"] for m in _peek(sqs, org.dlq_url)}

    handle = sqs.start_message_move_task(SourceArn=org.dlq_arn)["TaskHandle"]

    task = settled(org.dlq_arn)
    assert handle
    assert (task["Status"], task["ApproximateNumberOfMessagesMoved"]) == ("COMPLETED", 3)
    assert task["ApproximateNumberOfMessagesToMove"] == 3
    assert "DestinationArn" not in task
    moved = read_queue(org.queue_url)
    assert {m["Body"]: m["MessageAttributes"]["tag"]["StringValue"] for m in moved} == sent
    assert not ids_before & {m["MessageId"] for m in moved}
    assert depth(org.dlq_url) == (0, 0)


def test_a_redriven_message_counts_its_receives_anew(
    org: Organisation, sqs: SQSClient, depth: Depth, settled: Settled
) -> None:
    """GIVEN a message received more than maxReceiveCount times (so SQS moved it to the DLQ)
    WHEN it is moved back
    THEN it is received from the work queue with ApproximateReceiveCount 1, not sent straight
    back to the DLQ."""
    sqs.send_message(QueueUrl=org.queue_url, MessageBody="poison")
    for _ in range(10):  # maxReceiveCount is 2: the third receive moves it
        sqs.receive_message(QueueUrl=org.queue_url, VisibilityTimeout=0, WaitTimeSeconds=0)
        if depth(org.dlq_url) != (0, 0):
            break
    assert depth(org.dlq_url) == (1, 0)

    sqs.start_message_move_task(SourceArn=org.dlq_arn, DestinationArn=org.queue_arn)
    assert settled(org.dlq_arn)["Status"] == "COMPLETED"

    [message] = sqs.receive_message(
        QueueUrl=org.queue_url, MessageSystemAttributeNames=["ApproximateReceiveCount"]
    )["Messages"]
    assert message["Body"] == "poison"
    assert message["Attributes"]["ApproximateReceiveCount"] == "1"


def test_a_destination_arn_receives_the_messages(
    org: Organisation, sqs: SQSClient, read_queue: ReadQueue, settled: Settled
) -> None:
    """GIVEN two dead letters and another queue WHEN moved with DestinationArn = that queue
    THEN that queue has them and the task names its destination."""
    sent = dead_letters(sqs, org.dlq_url, 2)
    other = create_queues(
        org.endpoint_url, name=f"other-{uuid.uuid4().hex[:8]}", dlq_name=f"x-{uuid.uuid4().hex[:8]}"
    )

    sqs.start_message_move_task(SourceArn=org.dlq_arn, DestinationArn=other.queue_arn)

    task = settled(org.dlq_arn)
    assert (task["Status"], task["DestinationArn"]) == ("COMPLETED", other.queue_arn)
    assert {m["Body"] for m in read_queue(other.queue_url)} == set(sent)
    assert read_queue(org.queue_url) == []


def test_a_moved_message_keeps_its_message_group_id(
    org: Organisation, sqs: SQSClient, read_queue: ReadQueue, settled: Settled
) -> None:
    """GIVEN a dead letter sent with MessageGroupId (its tenant, for a fair queue) and one without
    WHEN moved back to the work queue
    THEN the first still carries its group id and the second none."""
    tenant = f"1{uuid.uuid4().int % 10**11:011d}"
    sqs.send_message(QueueUrl=org.dlq_url, MessageBody="grouped", MessageGroupId=tenant)
    sqs.send_message(QueueUrl=org.dlq_url, MessageBody="plain")

    sqs.start_message_move_task(SourceArn=org.dlq_arn)

    assert settled(org.dlq_arn)["Status"] == "COMPLETED"
    moved = {m["Body"]: m.get("Attributes", {}) for m in read_queue(org.queue_url)}
    assert moved["grouped"].get("MessageGroupId") == tenant
    assert "MessageGroupId" not in moved["plain"]


def test_a_rate_limited_task_runs_until_cancelled_and_keeps_what_it_moved(
    org: Organisation, sqs: SQSClient, depth: Depth, settled: Settled
) -> None:
    """GIVEN 30 dead letters and a task moving one a second
    WHEN it is listed, a second task is started, and it is cancelled
    THEN it was RUNNING with its handle, the second start was refused (one task per queue), it
    ends CANCELLED, and every letter is in exactly one of the two queues."""
    dead_letters(sqs, org.dlq_url, 30)
    handle = sqs.start_message_move_task(SourceArn=org.dlq_arn, MaxNumberOfMessagesPerSecond=1)[
        "TaskHandle"
    ]

    [running] = sqs.list_message_move_tasks(SourceArn=org.dlq_arn)["Results"]
    with pytest.raises(ClientError) as second:
        sqs.start_message_move_task(SourceArn=org.dlq_arn)
    cancelled = sqs.cancel_message_move_task(TaskHandle=handle)

    task = settled(org.dlq_arn)
    assert (running["Status"], running["TaskHandle"]) == ("RUNNING", handle)
    assert running["MaxNumberOfMessagesPerSecond"] == 1
    assert second.value.response["Error"]["Code"] == "InvalidParameterValue"
    assert task["Status"] == "CANCELLED"
    assert "TaskHandle" not in task
    moved = task["ApproximateNumberOfMessagesMoved"]
    assert cancelled["ApproximateNumberOfMessagesMoved"] <= moved < 30
    assert depth(org.queue_url)[0] + depth(org.dlq_url)[0] == 30
    assert depth(org.queue_url)[0] == moved


@pytest.mark.parametrize(
    ("source", "code"),
    [("queue", "InvalidParameterValue"), ("missing", "ResourceNotFoundException")],
    ids=["source is no queue's DLQ", "source does not exist"],
)
def test_a_source_that_is_not_a_dead_letter_queue_is_refused(
    org: Organisation, sqs: SQSClient, source: str, code: str
) -> None:
    """GIVEN the work queue itself (no queue's DLQ), or a queue that does not exist
    WHEN it is the source of a move task THEN SQS's error, and no task."""
    arn = org.queue_arn if source == "queue" else f"{org.queue_arn}-missing"

    with pytest.raises(ClientError) as caught:
        sqs.start_message_move_task(SourceArn=arn)

    assert caught.value.response["Error"]["Code"] == code


def test_cancelling_a_finished_task_is_refused(
    org: Organisation, sqs: SQSClient, settled: Settled
) -> None:
    """GIVEN a task that completed WHEN it is cancelled THEN an error: only RUNNING tasks."""
    dead_letters(sqs, org.dlq_url, 1)
    handle = sqs.start_message_move_task(SourceArn=org.dlq_arn)["TaskHandle"]
    assert settled(org.dlq_arn)["Status"] == "COMPLETED"

    with pytest.raises(ClientError) as caught:
        sqs.cancel_message_move_task(TaskHandle=handle)

    assert caught.value.response["Error"]["Code"] == "UnsupportedOperation"


def _peek(sqs: SQSClient, url: str) -> list[dict[str, Any]]:
    """Messages of a small queue, made visible again at once."""
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    return [dict(m) for m in messages.get("Messages", [])]
