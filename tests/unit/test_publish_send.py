"""fanout.publish.send_bodies: SendMessageBatch in tens, entries SQS failed retried (tenacity),
each naming its tenant (MessageGroupId) as the worker's re-sends do."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from fanout.publish import SEND_ATTEMPTS, SEND_BACKOFF_MAX_S, SendError, send_bodies
from handler.requeue import Requeue

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


def _body(request_id: str, *accounts: str) -> str:
    targets = [{"account": a} for a in accounts]
    return json.dumps(
        {"version": 1, "task": "ssm.send_command", "request_id": request_id, "targets": targets}
    )


def test_each_message_names_its_tenant_for_sqs_fair_queues(sqs: Any) -> None:
    """GIVEN bodies of one account, of two accounts, and a body that is not a message
    WHEN they are sent
    THEN the first carries MessageGroupId = its account (SQS fair queues then let one account's
    backlog give way to the others'), the second its request id, the third none."""
    one, two = (
        _body("req-1", "111111111111", "111111111111"),
        _body("req-2", "111111111111", "222222222222"),
    )
    with Stubber(sqs) as stub:
        stub.add_response(
            "send_message_batch",
            {
                "Successful": [
                    {"Id": str(n), "MessageId": f"m-{n}", "MD5OfMessageBody": "x"} for n in range(3)
                ],
                "Failed": [],
            },
            {
                "QueueUrl": QUEUE,
                "Entries": [
                    {"Id": "0", "MessageBody": one, "MessageGroupId": "111111111111"},
                    {"Id": "1", "MessageBody": two, "MessageGroupId": "req-2"},
                    {"Id": "2", "MessageBody": "not json"},
                ],
            },
        )

        assert send_bodies(sqs, QUEUE, [one, two, "not json"]) == ["m-0", "m-1", "m-2"]


def test_a_deferred_message_keeps_the_tenant_of_the_one_it_continues(sqs: Any) -> None:
    """The worker's re-send of deferred targets names the same MessageGroupId as publish did."""
    body = _body("req-1", "111111111111")
    with Stubber(sqs) as stub:
        stub.add_response(
            "send_message",
            {"MessageId": "m-1", "MD5OfMessageBody": "x"},
            {
                "QueueUrl": QUEUE,
                "MessageBody": body,
                "DelaySeconds": 10,
                "MessageGroupId": "111111111111",
                "MessageAttributes": ANY,
            },
        )

        Requeue(QUEUE, lambda: sqs).send(
            body, attempt=2, waits=0, delay=10, source_message_id="m-0"
        )


def test_a_selections_parts_carry_their_tenant(sqs: Any) -> None:
    """Parts the worker enqueues for a selection (``Requeue.enqueue``) name their tenant too."""
    one, two = _body("req-1", "111111111111"), _body("req-1", "111111111111", "222222222222")
    with Stubber(sqs) as stub:
        stub.add_response(
            "send_message_batch",
            {"Successful": [], "Failed": []},
            {
                "QueueUrl": QUEUE,
                "Entries": [
                    {
                        "Id": "0",
                        "MessageBody": one,
                        "MessageAttributes": ANY,
                        "MessageGroupId": "111111111111",
                    },
                    {
                        "Id": "1",
                        "MessageBody": two,
                        "MessageAttributes": ANY,
                        "MessageGroupId": "req-1",
                    },
                ],
            },
        )

        Requeue(QUEUE, lambda: sqs).enqueue([one, two], source_message_id="m-0")
