"""Rollout control: slots of a request (leases), the exponential ramp, and how a target that
waits for a slot comes back."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace

import boto3
import pytest
from moto import mock_aws

from fanout.status import StatusReport
from handler.envelope import Envelope, parse_message
from handler.exceptions import BadMessageError, RolloutWaitError
from handler.ledger import JobState
from handler.lifecycle import Limits, decide, retry_delay
from handler.outcome import JobOutcome, Result
from handler.requests import RequestLedger, RequestOpen, RequestRecord, RequestView
from handler.requests_dynamodb import DynamoDBRequests
from handler.requests_memory import InMemoryRequests
from handler.rollout import Lease, RolloutGate, ramp_allows, ramp_wave, waves_of
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


def test_concurrent_acquirers_never_hold_more_than_the_cap() -> None:
    """The in-memory ledger here; DynamoDB's on the emulator (tests/integration/
    test_rollout_slots.py): in-process moto's conditional writes are not atomic across threads,
    so a DynamoDB run here would test moto, not the ledger."""
    requests = InMemoryRequests(clock=Clock())
    assert_cap_holds_under_concurrency(requests)


def assert_cap_holds_under_concurrency(requests: RequestLedger) -> None:
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


# --- region by region (options.region_order) ---

ORDERED = RequestOpen(
    RID,
    "ssm.send_command",
    expected=4,
    options={"region_order": ["eu-west-1", "us-east-1"]},
    publisher="AIDAOPS",
    region_targets={"eu-west-1": 2, "us-east-1": 1, "ap-southeast-2": 1},
)


def regional(
    regions: str, *, options: str = '{"region_order":["eu-west-1","us-east-1"]}'
) -> Envelope:
    """One part (of 4 targets: 2 in eu-west-1, 1 each in us-east-1 and ap-southeast-2) with one
    target in each of ``regions``."""
    targets = ",".join(
        f'{{"account":"11111111111{i}","region":"{r}"}}' for i, r in enumerate(regions.split(","))
    )
    body = (
        '{"version":1,"task":"ssm.send_command","request_id":"' + RID + '",'
        '"request":{"targets":4,"part":1,"parts":2,'
        '"regions":{"eu-west-1":2,"us-east-1":1,"ap-southeast-2":1}},'
        f'"targets":[{targets}],'
        '"params":{"document_name":"AWS-RunShellScript","instance_ids":["i-0123456789abcdef0"]},'
        f'"options":{options}}}'
    )
    return parse_message(body, message_id="m-1", default_region="us-east-1")


def test_a_whole_message_counts_its_own_targets_per_region() -> None:
    body = (
        '{"version":1,"task":"ssm.send_command","targets":['
        '{"account":"111111111111","region":"eu-west-1"},'
        '{"account":"222222222222","region":"eu-west-1"},{"account":"111111111111"}],'
        '"params":{"document_name":"AWS-RunShellScript","instance_ids":["i-0123456789abcdef0"]},'
        '"options":{"region_order":["eu-west-1"]}}'
    )
    env = parse_message(body, message_id="m-1", default_region="us-east-1")
    assert env.request.region_targets == {"eu-west-1": 2, "us-east-1": 1}
    assert env.options.stage_of("eu-west-1") == 0
    assert env.options.stage_of("us-east-1") == 1, "a region not listed goes last"


@pytest.mark.parametrize(
    ("request_block", "reason"),
    [
        ('{"targets":4,"part":1,"parts":2}', r"needs body\.request\.regions"),
        (
            '{"targets":4,"part":1,"parts":2,"regions":{"eu-west-1":3}}',
            r"body\.request\.regions counts 3 targets, but body\.request\.targets is 4",
        ),
        (
            '{"targets":4,"part":1,"parts":2,"regions":{"eu-west-1":3,"us-east-1":1}}',
            r"says 0 targets in ap-southeast-2, but this part alone has 1",
        ),
    ],
)
def test_a_split_request_rolled_by_region_must_state_its_targets_per_region(
    request_block: str, reason: str
) -> None:
    body = (
        '{"version":1,"task":"ssm.send_command","request_id":"r",'
        f'"request":{request_block},'
        '"targets":[{"account":"111111111111","region":"ap-southeast-2"}],'
        '"params":{"document_name":"AWS-RunShellScript","instance_ids":["i-0123456789abcdef0"]},'
        '"options":{"region_order":["eu-west-1"]}}'
    )
    with pytest.raises(BadMessageError, match=reason):
        parse_message(body, message_id="m-1", default_region="us-east-1")


def test_each_region_keeps_the_keys_that_ended_there(requests: RequestLedger) -> None:
    requests.count_ended(ORDERED, {"a" * 64: JobState.FAILED}, {"a" * 64: "eu-west-1"})
    requests.count_ended(ORDERED, {"a" * 64: JobState.SUCCEEDED}, {"a" * 64: "eu-west-1"})
    record = requests.count_ended(
        ORDERED,
        {"b" * 64: JobState.NOT_RUN, "c" * 64: JobState.SUCCEEDED},
        {"b" * 64: "eu-west-1", "c" * 64: "us-east-1"},
    )
    record = requests.requests([RID])[RID]
    assert record.region_ended == {
        "eu-west-1": {"a" * 16, "b" * 16},  # a redriven key is still one ended target
        "us-east-1": {"c" * 16},
    }
    assert record.region_targets == {"eu-west-1": 2, "us-east-1": 1, "ap-southeast-2": 1}


def test_a_region_starts_only_once_every_target_of_the_regions_before_it_ended() -> None:
    gate = RolloutGate(InMemoryRequests(clock=Clock()), clock=lambda: 10.0)
    env = regional("eu-west-1,us-east-1,ap-southeast-2")
    eu, us, ap = env.jobs
    record = RequestRecord(RID, expected=4, region_ended={"eu-west-1": frozenset({"x" * 16})})
    view = RequestView(record, env)
    assert gate.admit(eu, view, lease_until=100.0, expected_s=1.0) is None
    wait = gate.admit(us, view, lease_until=100.0, expected_s=1.0)
    assert isinstance(wait, RolloutWaitError)
    assert wait.reason == (
        "waiting for region eu-west-1 to end first (region_order): 1 of its 2 targets ended"
    )
    assert isinstance(gate.admit(ap, view, lease_until=100.0, expected_s=1.0), RolloutWaitError)
    view.ended(eu.key, JobState.FAILED, region="eu-west-1")  # ended in this batch
    assert gate.admit(us, view, lease_until=100.0, expected_s=1.0) is None
    wait = gate.admit(ap, view, lease_until=100.0, expected_s=1.0)
    assert isinstance(wait, RolloutWaitError), "regions not listed wait for every listed one"
    assert "region us-east-1" in wait.reason
    view.ended(us.key, JobState.SUCCEEDED, region="us-east-1")
    assert gate.admit(ap, view, lease_until=100.0, expected_s=1.0) is None


def test_the_canary_runs_first_whatever_its_region() -> None:
    gate = RolloutGate(InMemoryRequests(clock=Clock()), clock=lambda: 10.0)
    options = (
        '{"region_order":["eu-west-1","us-east-1"],'
        '"canary":{"account":"111111111110","region":"us-east-1"}}'
    )
    env = regional("us-east-1,ap-southeast-2", options=options)
    canary, other = env.jobs
    view = RequestView(None, env)
    assert view.is_canary(canary.key)
    assert gate.admit(canary, view, lease_until=100.0, expected_s=1.0) is None
    assert isinstance(gate.admit(other, view, lease_until=100.0, expected_s=1.0), RolloutWaitError)


def test_region_order_with_a_cap_waits_for_its_region_before_asking_for_a_slot() -> None:
    requests = InMemoryRequests(clock=Clock())
    gate = RolloutGate(requests, clock=lambda: 10.0)
    env = regional(
        "eu-west-1,us-east-1", options='{"region_order":["eu-west-1"],"max_concurrency":1}'
    )
    eu, us = env.jobs
    view = RequestView(None, env)
    assert isinstance(gate.admit(us, view, lease_until=100.0, expected_s=1.0), RolloutWaitError)
    assert requests.requests([RID]) == {} or not requests.requests([RID])[RID].leases
    assert isinstance(gate.admit(eu, view, lease_until=100.0, expected_s=1.0), Lease)


def test_the_wait_budget_counts_every_regions_waves() -> None:
    env = regional("eu-west-1", options='{"region_order":["eu-west-1"],"max_concurrency":1}')
    view = RequestView(None, env)
    # stages: eu-west-1 (2 targets), the rest (2): two waves each at a cap of 1
    assert view.stage_sizes() == [2, 2]
    assert waves_of(view, 1) == 4
    assert waves_of(RequestView(None, regional("eu-west-1")), None) == 3  # one per stage
    assert waves_of(RequestView(None, envelope('{"max_concurrency":4}')), 4) == 5  # 20 / 4


def test_status_shows_each_region_ended_running_or_waiting_in_order() -> None:
    """GIVEN a record rolled eu-west-1 then us-east-1 (then the rest), eu-west-1 done and one
    of us-east-1's two targets ended WHEN `fanout status` reads it THEN eu-west-1 ended,
    us-east-1 runs, and ap-southeast-2 (not listed: last) waits."""
    record = RequestRecord(
        RID,
        expected=5,
        options={"region_order": ["eu-west-1", "us-east-1"]},
        region_targets={"ap-southeast-2": 1, "us-east-1": 2, "eu-west-1": 2},
        region_ended={"eu-west-1": frozenset({"a", "b"}), "us-east-1": frozenset({"c"})},
    )
    assert StatusReport(RID, (), record).regions == [
        {"region": "eu-west-1", "targets": 2, "ended": 2, "state": "ended"},
        {"region": "us-east-1", "targets": 2, "ended": 1, "state": "running"},
        {"region": "ap-southeast-2", "targets": 1, "ended": 0, "state": "waiting"},
    ]
    assert StatusReport(RID, (), replace(record, options={})).regions is None


def test_the_ramp_wave_numbers_follow_the_limits() -> None:
    # cap 8: wave 1 (1 target), 2 (up to 3), 3 (up to 7), then the cap
    assert [ramp_wave(ended, 8) for ended in range(9)] == [1, 2, 2, 3, 3, 3, 3, None, None]
    assert ramp_wave(0, 1) is None


def test_status_shows_the_wave_a_ramping_request_is_in() -> None:
    record = RequestRecord(
        RID,
        expected=20,
        options={"max_concurrency": 8, "ramp": "exponential"},
        ended={JobState.SUCCEEDED: frozenset({"a"})},
        started=frozenset({"a", "b", "c"}),
    )
    rollout = StatusReport(RID, (), record).rollout
    assert rollout is not None
    assert (rollout["wave"], rollout["wave_allows"]) == (2, 3)
