"""The emulator's SQS delivery patch: queue changes under the queue's lock, and fair queues.

In-process moto (``mock_aws``) with the patch installed, as ``emulator_app`` installs it in the
emulator's process (moto's state and classes are process-wide, so every later moto in this
process is the patched one: a more faithful SQS, never a different API).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws

from fanout.emulator import sqs_delivery

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

ACCOUNT, REGION = "123456789012", "us-east-1"


@pytest.fixture
def sqs() -> Iterator[SQSClient]:
    sqs_delivery.install()
    with mock_aws():
        yield boto3.client("sqs", region_name=REGION)


def _queue(sqs: SQSClient) -> tuple[str, Any]:
    from moto.sqs.models import sqs_backends  # noqa: PLC0415 - moto internals

    name = f"work-{uuid.uuid4().hex[:8]}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    return url, sqs_backends[ACCOUNT][REGION].get_queue(name)


_SENT: Counter[tuple[str, str | None]] = Counter()


def _send(sqs: SQSClient, url: str, group: str | None, count: int) -> None:
    """``count`` messages of ``group``, numbered on from those sent before: ``group-n``."""
    for _ in range(count):
        n = _SENT[url, group]
        _SENT[url, group] += 1
        extra = {"MessageGroupId": group} if group else {}
        sqs.send_message(QueueUrl=url, MessageBody=f"{group}-{n}", **extra)  # type: ignore[arg-type]


def _receive(sqs: SQSClient, url: str, count: int = 10) -> list[str]:
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=count, VisibilityTimeout=300)
    return [m["Body"] for m in got.get("Messages", [])]


def _take(sqs: SQSClient, url: str, count: int) -> list[str]:
    """Receive ``count`` messages (left in flight)."""
    taken: list[str] = []
    while len(taken) < count:
        taken += _receive(sqs, url, min(10, count - len(taken)))
    return taken


def test_deletes_and_receives_hold_the_queue_lock(
    sqs: SQSClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a queue with messages
    WHEN messages are received and deleted
    THEN every look at a message while doing so (moto's receipt-handle scan, its marking a
    message received) happens with the queue's lock held, so a concurrent send cannot be
    dropped by a delete rebuilding the list, nor one message be taken by two receives."""
    from moto.sqs.models import Message  # noqa: PLC0415 - moto internals

    url, queue = _queue(sqs)
    _send(sqs, url, "tenant", 5)
    owned: list[bool] = []
    scan, mark = Message.had_receipt_handle, Message.mark_received

    def scanning(message: Any, handle: str) -> bool:
        owned.append(queue._messages_lock._is_owned())
        return scan(message, handle)

    def marking(message: Any, visibility_timeout: int | None = None) -> None:
        owned.append(queue._messages_lock._is_owned())
        mark(message, visibility_timeout)

    monkeypatch.setattr(Message, "had_receipt_handle", scanning)
    monkeypatch.setattr(Message, "mark_received", marking)
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=5)["Messages"]
    for message in got:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    assert len(got) == 5
    assert owned
    assert all(owned)
    assert queue._messages == []


def test_a_long_poll_is_woken_by_a_send_and_never_blocks_it(sqs: SQSClient) -> None:
    """GIVEN an empty queue and a receive waiting up to 10 s
    WHEN a message is sent meanwhile
    THEN the send goes through (the waiting receive holds no lock) and the receive returns it."""
    url, _ = _queue(sqs)
    got: list[list[str]] = []
    waiting = threading.Thread(
        target=lambda: got.append(
            [
                m["Body"]
                for m in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=10).get("Messages", [])
            ]
        )
    )
    waiting.start()
    time.sleep(0.3)  # let it start waiting: a send before that is also received, just sooner
    sqs.send_message(QueueUrl=url, MessageBody="late")
    waiting.join(timeout=30)

    assert got == [["late"]]


def test_with_no_noisy_tenant_messages_come_in_queue_order(sqs: SQSClient) -> None:
    """GIVEN three tenants' messages and nothing in flight
    WHEN received
    THEN in the order sent (fair delivery changes nothing until a tenant is noisy)."""
    url, _ = _queue(sqs)
    for group in ("a", "b", "c"):
        _send(sqs, url, group, 2)

    assert _receive(sqs, url) == ["a-0", "a-1", "b-0", "b-1", "c-0", "c-1"]


def test_a_tenant_with_most_of_the_in_flight_messages_waits_behind_quiet_ones(
    sqs: SQSClient,
) -> None:
    """GIVEN a tenant with 40 messages in flight (all of the queue's, and >= 30) and 60 more
    waiting, then two quiet tenants' messages sent after its backlog
    WHEN a consumer receives
    THEN the quiet tenants' messages come first, then the noisy tenant's as usual."""
    url, _ = _queue(sqs)
    _send(sqs, url, "noisy", 40)
    _take(sqs, url, 40)
    _send(sqs, url, "noisy", 60)
    _send(sqs, url, "quiet1", 2)
    _send(sqs, url, "quiet2", 1)

    got = _receive(sqs, url)

    assert got[:3] == ["quiet1-0", "quiet1-1", "quiet2-0"]
    assert got[3:] == [f"noisy-{n}" for n in range(40, 47)]


@pytest.mark.parametrize(("in_flight", "noisy"), [(29, False), (30, True)])
def test_thirty_in_flight_make_a_tenant_noisy_by_concurrency(
    sqs: SQSClient, monkeypatch: pytest.MonkeyPatch, in_flight: int, *, noisy: bool
) -> None:
    """GIVEN a tenant with all of the queue's in-flight messages, 29 or 30 of them, and no
    processing time spent (the clock stands still: only the concurrency share counts)
    WHEN a quiet tenant's message waits behind its backlog
    THEN at 29 delivery keeps queue order; at 30 the quiet message comes first."""
    monkeypatch.setattr(
        sqs_delivery, "time", SimpleNamespace(time=lambda: 1_000_000.0, monotonic=time.monotonic)
    )
    url, _ = _queue(sqs)
    _send(sqs, url, "busy", in_flight)
    _take(sqs, url, in_flight)
    _send(sqs, url, "busy", 2)
    _send(sqs, url, "quiet", 1)
    backlog = [f"busy-{in_flight}", f"busy-{in_flight + 1}"]

    got = _receive(sqs, url, 3)

    assert got == (["quiet-0", *backlog] if noisy else [*backlog, "quiet-0"])


def test_of_two_noisy_tenants_the_one_with_fewer_in_flight_goes_first(sqs: SQSClient) -> None:
    """GIVEN tenant a with 40 in flight and tenant b with 30 (both noisy), a's backlog first
    WHEN received
    THEN b's messages come before a's."""
    url, _ = _queue(sqs)
    _send(sqs, url, "a", 40)
    _take(sqs, url, 40)
    _send(sqs, url, "b", 30)
    _take(sqs, url, 30)
    _send(sqs, url, "a", 2)
    _send(sqs, url, "b", 2)

    assert _receive(sqs, url, 4) == ["b-30", "b-31", "a-40", "a-41"]


def test_a_tenant_with_most_of_the_processing_time_is_noisy(
    sqs: SQSClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN a tenant whose one message took 50 s between receive and delete and another whose
    three messages took no time (no tenant has many in flight)
    WHEN both have messages waiting, the slow tenant's first
    THEN the fast tenant's are delivered first: the slow one has > 10 % of the processing time."""
    clock = SimpleNamespace(now=1_000_000.0)
    fake_time = SimpleNamespace(time=lambda: clock.now, monotonic=time.monotonic)
    monkeypatch.setattr(sqs_delivery, "time", fake_time)
    url, _ = _queue(sqs)

    def process(group: str, seconds: float, count: int) -> None:
        _send(sqs, url, group, count)
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=count)["Messages"]
        clock.now += seconds
        for message in got:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    process("slow", 50.0, 1)
    process("fast", 0.0, 3)
    _send(sqs, url, "slow", 2)
    _send(sqs, url, "fast", 2)

    assert _receive(sqs, url, 4) == ["fast-3", "fast-4", "slow-1", "slow-2"]


def test_processing_time_older_than_the_window_is_forgotten(
    sqs: SQSClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN the slow tenant above, then more than the window (60 s) without processing
    WHEN both have messages waiting
    THEN queue order again: the slow tenant is no longer noisy."""
    clock = SimpleNamespace(now=1_000_000.0)
    monkeypatch.setattr(
        sqs_delivery, "time", SimpleNamespace(time=lambda: clock.now, monotonic=time.monotonic)
    )
    url, _ = _queue(sqs)
    _send(sqs, url, "slow", 1)
    got = sqs.receive_message(QueueUrl=url)["Messages"]
    clock.now += 50.0
    sqs.delete_message(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"])
    clock.now += sqs_delivery.PROCESSING_WINDOW_SECONDS + 1
    _send(sqs, url, "slow", 1)
    _send(sqs, url, "fast", 1)

    assert _receive(sqs, url, 2) == ["slow-1", "fast-0"]


def test_messages_without_a_group_are_each_a_tenant_of_their_own(sqs: SQSClient) -> None:
    """GIVEN a noisy tenant's backlog, then two messages without MessageGroupId
    WHEN received
    THEN the two come first (each is a quiet tenant of one message)."""
    url, _ = _queue(sqs)
    _send(sqs, url, "noisy", 35)
    _take(sqs, url, 35)
    _send(sqs, url, "noisy", 5)
    sqs.send_message(QueueUrl=url, MessageBody="plain-0")
    sqs.send_message(QueueUrl=url, MessageBody="plain-1")

    assert _receive(sqs, url, 3) == ["plain-0", "plain-1", "noisy-35"]
