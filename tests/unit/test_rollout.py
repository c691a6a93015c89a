"""Rollout control: slots of a request (leases), the exponential ramp, and how a target that
waits for a slot comes back."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace

import boto3
import pytest
from moto import mock_aws

from handler.envelope import Envelope, parse_message
from handler.exceptions import BadMessageError, RolloutWaitError
from handler.ledger import JobState
from handler.lifecycle import Limits, decide, retry_delay
from handler.outcome import JobOutcome, Result
from handler.requests import RequestLedger, RequestOpen, RequestRecord, RequestView
from handler.requests_dynamodb import DynamoDBRequests
from handler.requests_memory import InMemoryRequests
from handler.rollout import Lease, RolloutGate, ramp_allows
from tasks.base import Job
from tests.unit.test_ledger import Clock, create_ledger_table

RID = "req-rollout"
OPENING = RequestOpen(RID, "ssm.send_command", expected=20, options={}, publisher="AIDAOPS")


@pytest.fixture(params=["memory", "dynamodb"])
def requests(request: pytest.FixtureRequest) -> Iterator[RequestLedger]:
    if request.param == "memory":
        yield InMemoryRequests(clock=Clock())
        return
    with mock_aws():
        table = create_ledger_table()
        yield DynamoDBRequests(table, lambda: boto3.client("dynamodb"), clock=Clock())


def acquire(requests: RequestLedger, key: str, *, cap: int = 2, limit: int | None = None) -> bool:
    return requests.acquire_slot(RID, key, cap=cap, started_limit=limit, until=1000.0, now=10.0)


def envelope(options: str, targets: int = 20) -> Envelope:
    body = (
        '{"version":1,"task":"ssm.send_command","request_id":"' + RID + '",'
        f'"request":{{"targets":{targets},"part":1,"parts":{targets}}},'
        '"targets":[{"account":"111111111111"}],'
        '"params":{"document_name":"AWS-RunShellScript","instance_ids":["i-0123456789abcdef0"]},'
        f'"options":{options}}}'
    )
    return parse_message(body, message_id="m-1", default_region="us-east-1")


def test_the_ramp_doubles_each_wave_up_to_the_cap() -> None:
    # cap 8: waves of 1, 2, 4, then the cap alone
    assert [ramp_allows(ended, 8) for ended in range(9)] == [1, 3, 3, 7, 7, 7, 7, None, None]
    assert ramp_allows(0, 1) is None  # a cap of 1 needs no ramp


def test_no_more_than_cap_leases_are_held_and_a_holder_may_ask_again(
    requests: RequestLedger,
) -> None:
    requests.count_ended(OPENING, {})
    assert acquire(requests, "aaaa")
    assert acquire(requests, "bbbb")
    assert not acquire(requests, "cccc"), "a third lease with cap 2"
    assert acquire(requests, "aaaa"), "the holder of a lease is not refused its own slot"
    record = requests.requests([RID])[RID]
    assert set(record.leases) == {"aaaa", "bbbb"}


def test_a_duplicate_delivery_of_a_held_job_is_refused_and_cannot_free_the_slot(
    requests: RequestLedger,
) -> None:
    """GIVEN a lease held for job "aaaa" (cap 1) WHEN a duplicate delivery of the same job, with
    its own lease end, asks and then gives its lease back THEN it was refused, and the first
    holder's lease still stands (no other target can start beside its call)."""
    assert acquire(requests, "aaaa", cap=1)
    assert not requests.acquire_slot(RID, "aaaa", cap=1, started_limit=None, until=2000.0, now=10.0)
    requests.release_slot(RID, "aaaa", until=2000.0)
    assert not acquire(requests, "bbbb", cap=1)


def test_a_released_slot_is_free_again_but_only_its_own_holder_releases_it(
    requests: RequestLedger,
) -> None:
    assert acquire(requests, "aaaa")
    assert acquire(requests, "bbbb")
    requests.release_slot(RID, "aaaa", until=999.0)  # not its lease: stays
    assert not acquire(requests, "cccc")
    requests.release_slot(RID, "aaaa", until=1000.0)
    assert acquire(requests, "cccc")


def test_a_dead_holders_lease_is_taken_back_once_it_expired(requests: RequestLedger) -> None:
    assert requests.acquire_slot(RID, "dead", cap=1, started_limit=None, until=50.0, now=10.0)
    assert not requests.acquire_slot(RID, "next", cap=1, started_limit=None, until=90.0, now=40.0)
    assert requests.acquire_slot(RID, "next", cap=1, started_limit=None, until=90.0, now=60.0)


def test_the_ramp_limit_counts_targets_started_not_leases_held(requests: RequestLedger) -> None:
    requests.count_ended(OPENING, {})
    assert acquire(requests, "aaaa", cap=4, limit=1)
    requests.release_slot(RID, "aaaa", until=1000.0)
    assert not acquire(requests, "bbbb", cap=4, limit=1), "wave 1 is one target, ended or not"
    assert acquire(requests, "aaaa", cap=4, limit=1), "a started target may start again"
    assert acquire(requests, "bbbb", cap=4, limit=3)
    assert requests.requests([RID])[RID].started == {"aaaa", "bbbb"}


def test_concurrent_acquirers_never_hold_more_than_the_cap(requests: RequestLedger) -> None:
    requests.count_ended(OPENING, {})
    granted: list[str] = []
    lock = threading.Lock()

    def take(key: str) -> None:
        if acquire(requests, key, cap=3):
            with lock:
                granted.append(key)

    threads = [threading.Thread(target=take, args=(f"k{i:03d}",)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(granted) == 3


def test_the_view_reads_the_cap_as_a_count_or_a_percentage_and_counts_started_ended() -> None:
    record = RequestRecord(
        RID,
        expected=20,
        ended={JobState.SUCCEEDED: frozenset({"a", "b", "z"})},
        started=frozenset({"a", "b", "c"}),
    )
    assert RequestView(record, envelope('{"max_concurrency":4}')).max_concurrency == 4
    view = RequestView(record, envelope('{"max_concurrency":"15%","ramp":"exponential"}'))
    assert view.max_concurrency == 3  # 15 % of 20 targets
    assert view.ramps
    assert view.started_ended == 2  # "z" ended without starting under the gate
    assert RequestView(record, envelope("{}")).max_concurrency is None


def test_a_ramp_without_a_cap_is_refused_with_its_reason() -> None:
    with pytest.raises(BadMessageError, match=r"ramp needs body\.options\.max_concurrency"):
        envelope('{"ramp":"exponential"}')


def test_the_gate_grants_a_lease_then_makes_the_next_target_wait() -> None:
    requests = InMemoryRequests(clock=Clock())
    gate = RolloutGate(requests, clock=lambda: 10.0)
    env = envelope('{"max_concurrency":1}')
    view = RequestView(None, env)
    first, second = env.jobs[0], _other_job(env)
    lease = gate.admit(first, view, lease_until=100.0, expected_s=0.5)
    assert isinstance(lease, Lease)
    wait = gate.admit(second, view, lease_until=100.0, expected_s=0.5)
    assert isinstance(wait, RolloutWaitError)
    assert "at most 1 targets of the request in flight" in wait.reason
    gate.release([lease])
    assert isinstance(gate.admit(second, view, lease_until=100.0, expected_s=0.5), Lease)


def test_a_request_without_rollout_control_is_not_gated() -> None:
    gate = RolloutGate(InMemoryRequests(clock=Clock()))
    env = envelope("{}")
    assert gate.admit(env.jobs[0], RequestView(None, env), lease_until=1.0, expected_s=1.0) is None


def test_a_target_waiting_for_a_slot_comes_back_soon_and_may_wait_once_per_wave() -> None:
    wait = RolloutWaitError("waiting for a slot", retry_after=4.0, waves=5)
    # not doubled per wait, unlike other waits
    assert all(2 <= retry_delay(wait, count, rand=lambda: 1.0) <= 4 for count in (1, 10, 50))
    env = envelope('{"max_concurrency":1}')
    outcome = JobOutcome(env.jobs[0], Result.RETRY, error=wait)
    limits = Limits(max_attempts=3, max_waits=2, can_defer=True)
    waiting = decide([outcome], attempt=1, waits=9, limits=limits)
    assert [d.waits for d in waiting.deferrals] == [10]
    assert not waiting.letters
    ended = decide([outcome], attempt=1, waits=10, limits=limits)
    assert not ended.deferrals
    assert "not started after 10 deliveries" in ended.letters[0].error.reason


def _other_job(env: Envelope) -> Job:
    return replace(env.jobs[0], key="f" * 64, account="222222222222")
