"""fanout.publish.send_bodies: SendMessageBatch in tens, entries SQS failed retried (tenacity)."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from fanout.publish import SEND_ATTEMPTS, SEND_BACKOFF_MAX_S, SendError, send_bodies

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/fanout-work"


def _failed(entry_id: str, *, sender_fault: bool) -> dict[str, Any]:
    return {"Id": entry_id, "SenderFault": sender_fault, "Code": "InternalError", "Message": "x"}


@pytest.fixture
def sqs() -> Any:
    return boto3.client(
        "sqs",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_entries_sqs_failed_are_sent_again_after_a_short_jittered_wait(sqs: Any) -> None:
    """GIVEN a batch whose second entry SQS fails once through no fault of the sender
    WHEN the bodies are sent
    THEN only that entry is sent again, after one wait of at most the backoff cap, and both
    message ids come back in body order."""
    sleeps: list[float] = []
    with Stubber(sqs) as stub:
        stub.add_response(
            "send_message_batch",
            {
                "Successful": [{"Id": "0", "MessageId": "m-0", "MD5OfMessageBody": "x"}],
                "Failed": [_failed("1", sender_fault=False)],
            },
            {
                "QueueUrl": QUEUE,
                "Entries": [{"Id": "0", "MessageBody": "a"}, {"Id": "1", "MessageBody": "b"}],
            },
        )
        stub.add_response(
            "send_message_batch",
            {
                "Successful": [{"Id": "1", "MessageId": "m-1", "MD5OfMessageBody": "x"}],
                "Failed": [],
            },
            {"QueueUrl": QUEUE, "Entries": [{"Id": "1", "MessageBody": "b"}]},
        )

        ids = send_bodies(sqs, QUEUE, ["a", "b"], sleep=sleeps.append)

    assert ids == ["m-0", "m-1"]
    assert len(sleeps) == 1
    assert 0 <= sleeps[0] <= SEND_BACKOFF_MAX_S


def test_an_entry_that_keeps_failing_stops_the_send_after_the_last_attempt(sqs: Any) -> None:
    """GIVEN an entry SQS fails on every attempt
    WHEN the bodies are sent
    THEN SEND_ATTEMPTS calls are made, then SendError names the failure."""
    sleeps: list[float] = []
    with Stubber(sqs) as stub:
        for _ in range(SEND_ATTEMPTS):
            stub.add_response(
                "send_message_batch",
                {"Successful": [], "Failed": [_failed("0", sender_fault=False)]},
            )

        with pytest.raises(SendError) as caught:
            send_bodies(sqs, QUEUE, ["a"], sleep=sleeps.append)

    assert "1 message(s) not sent: InternalError" in caught.value.reason
    assert len(sleeps) == SEND_ATTEMPTS - 1


def test_an_entry_refused_through_the_senders_fault_is_not_sent_again(sqs: Any) -> None:
    """GIVEN an entry SQS refuses as the sender's fault
    WHEN the bodies are sent
    THEN there is no second attempt: SendError at once."""
    with Stubber(sqs) as stub:
        stub.add_response(
            "send_message_batch", {"Successful": [], "Failed": [_failed("0", sender_fault=True)]}
        )

        with pytest.raises(SendError):
            send_bodies(sqs, QUEUE, ["a"], sleep=lambda _: pytest.fail("no wait expected"))
