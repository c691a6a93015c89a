"""Counting a batch's ends per request (``handler.tracking``): requests are counted and
announced concurrently, and one request's failure brings back only its own messages."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from handler.completion import Completions
from handler.envelope import Envelope, parse_message
from handler.exceptions import ConfigurationError
from handler.ledger import JobState
from handler.requests_memory import InMemoryRequests
from handler.sqs import Message
from handler.telemetry import BatchMetrics
from handler.tracking import Ended, RequestTracker
from tests.unit.fakes import v1_body
from tests.unit.test_ledger import Clock

REQUESTS = 3
WAIT_S = 30.0  # far beyond a request's count: only a serial count runs into it


def _ended(n: int) -> Ended:
    """Message ``n``: a request of its own with one target, which succeeded."""
    body = v1_body(
        "lambda.invoke",
        [{"account": "111111111111", "region": "us-east-1"}],
        request_id=f"req-{n}",
        params={"function_name": "f"},
    )
    message = Message(f"m-{n}", body, sender="AIDAOPS", attempt=1, waits=0, redriven=False)
    envelope: Envelope = parse_message(
        body, message_id=message.message_id, default_region="us-east-1", check=False
    )
    return Ended(message, envelope, {job.key: JobState.SUCCEEDED for job in envelope.jobs})


class _S3:
    """An S3 client whose PutObject returns only once ``parties`` calls are in it at the same
    time (a barrier): a tracker exporting one request's results after another's never gets
    there."""

    def __init__(self, parties: int) -> None:
        self._barrier = threading.Barrier(parties, timeout=WAIT_S)
        self.keys: list[str] = []

    def put_object(self, *, Key: str, **_: Any) -> dict[str, Any]:  # noqa: N803
        self._barrier.wait()
        self.keys.append(Key)
        return {}


class _Events:
    """An EventBridge client answering entry by entry; ``fail`` refuses that request's event,
    ``refuse`` finds the worker misconfigured."""

    def __init__(self, *, fail: str | None = None, refuse: str | None = None) -> None:
        self._fail, self._refuse = fail, refuse
        self.details: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def put_events(self, Entries: Sequence[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        answers: list[dict[str, Any]] = []
        for entry in Entries:
            detail = json.loads(entry["Detail"])
            if detail["request_id"] == self._refuse:
                raise ConfigurationError("the event bus does not exist")
            if detail["request_id"] == self._fail:
                answers.append({"ErrorCode": "InternalFailure"})
                continue
            with self._lock:
                self.details.append(detail)
            answers.append({"EventId": "e"})
        failed = sum(1 for a in answers if "ErrorCode" in a)
        return {"FailedEntryCount": failed, "Entries": answers}


def _tracker(events: _Events, *, max_workers: int) -> tuple[RequestTracker, InMemoryRequests]:
    clock = Clock()
    requests = InMemoryRequests(clock=clock)
    s3 = _S3(REQUESTS)
    completions = Completions(
        requests=requests,
        jobs=lambda _request_id: [],
        event_bus="fanout-bus",
        events=lambda: events,
        results_bucket="results",
        s3=lambda: s3,
        clock=clock,
    )
    return RequestTracker(requests, completions, max_workers=max_workers), requests


def test_requests_of_a_batch_are_counted_and_announced_concurrently() -> None:
    """GIVEN a batch of three messages, each a request of its own that ended
    WHEN the batch's ends are counted with workers to spare
    THEN the three exports are in flight together (the S3 client lets none return before all
    three arrived), each request is finished and announced, nothing comes back."""
    events = _Events()
    tracker, requests = _tracker(events, max_workers=16)

    failed = tracker.count([_ended(n) for n in range(REQUESTS)], BatchMetrics())

    assert failed == []
    assert sorted(d["request_id"] for d in events.details) == ["req-0", "req-1", "req-2"]
    records = requests.requests([f"req-{n}" for n in range(REQUESTS)])
    assert all(r.announced_at is not None for r in records.values())


def test_a_request_whose_count_fails_brings_back_only_its_own_messages() -> None:
    """GIVEN three requests counted concurrently, the announcement of one failing
    WHEN the batch's ends are counted
    THEN only that request's message comes back; the other two are announced."""
    events = _Events(fail="req-1")
    tracker, _ = _tracker(events, max_workers=16)

    failed = tracker.count([_ended(n) for n in range(REQUESTS)], BatchMetrics())

    assert failed == ["m-1"]
    assert sorted(d["request_id"] for d in events.details) == ["req-0", "req-2"]


def test_a_configuration_error_in_one_request_brings_the_whole_batch_back() -> None:
    """GIVEN three requests counted concurrently WHEN one announcement finds the worker
    misconfigured THEN the error is raised (the handler returns the whole batch), not
    swallowed as that request's failure."""
    events = _Events(refuse="req-2")
    tracker, _ = _tracker(events, max_workers=16)

    with pytest.raises(ConfigurationError):
        tracker.count([_ended(n) for n in range(REQUESTS)], BatchMetrics())
