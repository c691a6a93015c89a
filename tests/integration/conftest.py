"""Integration tier: the real moto server, the local poller and, where asked, the real handler.

One emulator and one seeded organisation serve the whole session (seeding takes seconds); each
test gets its own queue pair, so tests never see each other's messages, and its own environment
through ``monkeypatch``, so nothing leaks into ``os.environ``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from fanout.emulator import Emulator, Organisation, create_queues, seed_organisation, start_emulator
from fanout.poller import Handler

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

TARGETS = ("111111111111", "222222222222")
# Short enough that a redelivery test takes seconds; the poller is serial, so a record is never
# received twice while the handler still works on it.
VISIBILITY_TIMEOUT = 1
MAX_RECEIVE_COUNT = 2


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    with start_emulator() as running:
        yield running


@pytest.fixture(scope="session")
def _seeded() -> dict[str, Organisation]:
    return {}


@pytest.fixture
def organisation(emulator: Emulator, _seeded: dict[str, Organisation]) -> Organisation:
    """The seeded organisation, seeded once per session.

    moto's state is process-wide and ``mock_aws`` (the unit tier) resets it: when a unit test has
    run in between, the organisation is seeded again instead of failing in strange ways.
    """
    org = _seeded.get("org")
    if org is None or not _still_seeded(org):
        org = _seeded["org"] = seed_organisation(emulator.endpoint_url, TARGETS)
    return org


def _still_seeded(org: Organisation) -> bool:
    sqs = org.ops_session().client("sqs", endpoint_url=org.endpoint_url)
    try:
        sqs.get_queue_attributes(QueueUrl=org.queue_url, AttributeNames=["QueueArn"])
    except sqs.exceptions.QueueDoesNotExist:
        return False
    return True


@pytest.fixture
def org(organisation: Organisation) -> Organisation:
    """The seeded organisation working from a fresh work queue and DLQ of its own."""
    suffix = uuid.uuid4().hex[:12]
    queues = create_queues(
        organisation.endpoint_url,
        region=organisation.region,
        name=f"work-{suffix}",
        dlq_name=f"dlq-{suffix}",
        visibility_timeout=VISIBILITY_TIMEOUT,
        max_receive_count=MAX_RECEIVE_COUNT,
    )
    return organisation.with_queues(queues)


@pytest.fixture
def aws_env(org: Organisation, monkeypatch: pytest.MonkeyPatch) -> Organisation:
    """The worker's and the CLI's environment for ``org``, undone after the test."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE", "FANOUT_DLQ_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in org.handler_environment(log_level="WARNING").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FANOUT_QUEUE_URL", org.queue_url)
    return org


@pytest.fixture
def worker(aws_env: Organisation) -> Iterator[Handler]:
    """The real ``lambda_handler``, configured from ``aws_env`` and forgotten afterwards."""
    from handler import app  # noqa: PLC0415 - import only in tests that run the real worker

    app.reset()
    yield app.lambda_handler
    app.reset()


@pytest.fixture
def sqs(org: Organisation) -> SQSClient:
    client: SQSClient = org.ops_session().client("sqs", endpoint_url=org.endpoint_url)
    return client


@pytest.fixture
def read_queue(sqs: SQSClient) -> Callable[[str], list[dict[str, Any]]]:
    """Every message of a small queue, each read once (hidden for a minute)."""

    def read(queue_url: str) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        while batch := sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=60,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", []):
            messages.extend(dict(m) for m in batch)
        return messages

    return read


@pytest.fixture
def depth(sqs: SQSClient) -> Callable[[str], tuple[int, int]]:
    """(visible, in flight) message counts of a queue."""

    def count(queue_url: str) -> tuple[int, int]:
        attributes = sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
            ],
        )["Attributes"]
        return (
            int(attributes["ApproximateNumberOfMessages"]),
            int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        )

    return count


# How long a test waits for a message-move task to end (well under a second on an idle machine).
MOVE_TASK_WAIT_S = 120


@pytest.fixture
def settled(sqs: SQSClient) -> Callable[[str], dict[str, Any]]:
    """The newest message-move task of a source queue ARN, once it is no longer running."""

    def wait(source_arn: str) -> dict[str, Any]:
        deadline = time.monotonic() + MOVE_TASK_WAIT_S
        while True:
            [task] = sqs.list_message_move_tasks(SourceArn=source_arn)["Results"]
            if task["Status"] not in ("RUNNING", "CANCELLING"):
                return dict(task)
            assert time.monotonic() < deadline, f"the move task did not end: {task}"
            time.sleep(0.05)

    return wait
