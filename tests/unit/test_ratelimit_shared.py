"""The quota shared by every instance through the ledger table (``handler.ratelimit_shared``).

Several ``SharedRates`` on one table play several Lambda instances; a fake clock makes the slot
times exact. The property every test leans on: all slots handed out, by every instance, form
one sequence that conforms to the rate and burst (GCRA), so the instances together never exceed
the quota whatever their interleaving.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws

from handler.dynamo import Table
from handler.exceptions import DeadlineExceededError
from handler.ratelimit import RateLimiter
from handler.ratelimit_shared import (
    JITTER_SLACK_SECONDS,
    LEASE_SECONDS,
    STALE_SECONDS,
    SharedRates,
    gcra_slots,
    lease_tolerance,
)
from tasks.base import RateLimit
from tests.unit.test_ledger import create_ledger_table

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

KEY = ("111111111111", "us-east-1", "ssm:SendCommand")
RATE, BURST = 5.0, 5
LEASED = lease_tolerance(RATE, BURST)  # 0.5 s: the burst's 0.8 s less lateness and jitter
# What the starts of every instance conform to, slots used late included (invariant 5).
STARTS = (BURST - 1) / RATE - JITTER_SLACK_SECONDS


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class CountingTable(Table):
    """The ledger table, counting the UpdateItem requests this instance sent."""

    def __init__(self, name: str, client: DynamoDBClient) -> None:
        super().__init__(name, lambda: client)
        self.updates = 0

    def update_or_found(self, *args: Any, **kwargs: Any) -> tuple[bool, Any]:
        self.updates += 1
        return super().update_or_found(*args, **kwargs)


@pytest.fixture
def ddb() -> Iterator[DynamoDBClient]:
    with mock_aws():
        client: DynamoDBClient = boto3.client("dynamodb", region_name="us-east-1")
        create_ledger_table("ledger")
        yield client


def conforms(slots: Sequence[float], *, per_second: float, tolerance: float) -> bool:
    """Whether the calls conform to the rate with a burst tolerance of ``tolerance`` seconds
    (GCRA): any ``k`` calls after a first span at least ``k`` intervals less the tolerance."""
    ordered, interval = sorted(slots), 1.0 / per_second
    return all(
        ordered[j] - ordered[i] >= (j - i) * interval - tolerance - 1e-6
        for i in range(len(ordered))
        for j in range(i + 1, len(ordered))
    )


def test_a_fresh_key_grants_the_burst_at_once_then_one_slot_per_interval() -> None:
    """GIVEN no lease yet WHEN 7 slots are asked at rate 5/s, burst 3
    THEN 3 start now and the rest 0.2 s apart; the tat is one interval after the last."""
    slots, tat = gcra_slots(None, 100.0, 7, per_second=5.0, burst=3)

    assert slots == pytest.approx([100.0, 100.0, 100.0, 100.2, 100.4, 100.6, 100.8])
    assert tat == pytest.approx(101.4)


def test_an_idle_key_grants_no_more_than_a_burst() -> None:
    """GIVEN a tat long past (the key idle for a minute) WHEN 6 slots are asked
    THEN only the burst (3) starts at once: idleness is not saved up beyond it."""
    slots, _ = gcra_slots(40.0, 100.0, 6, per_second=5.0, burst=3)

    assert slots == pytest.approx([100.0, 100.0, 100.0, 100.2, 100.4, 100.6])


def test_instances_interleaving_at_random_never_exceed_the_rate_together(
    ddb: DynamoDBClient,
) -> None:
    """GIVEN three instances sharing a key, each expecting lanes of 1 to 8 calls
    WHEN they take 150 slots in a random interleaving while time advances irregularly
    THEN all their starts together conform to 5/s with burst 5, its tolerance 50 ms short (the
    jitter slack), slots used late included."""
    clock, rng = Clock(), random.Random(7)
    instances = [SharedRates(Table("ledger", lambda: ddb), clock) for _ in range(3)]
    taken: list[float] = []
    for _ in range(150):
        instance = rng.choice(instances)
        with instance.expect(KEY, rng.randint(1, 8)):
            wait = instance.slot(KEY, per_second=RATE, burst=BURST, max_wait=600)
        taken.append(clock.now + wait)
        clock.now += rng.choice([0.0, 0.01, 0.05, 0.3, 1.5])

    assert len(taken) == 150
    assert conforms(taken, per_second=RATE, tolerance=STARTS)


def test_a_burst_started_late_still_leaves_the_jitter_slack(ddb: DynamoDBClient) -> None:
    """GIVEN a lease of 10 slots whose first calls (the burst) start just under STALE_SECONDS
    late, as on a busy instance, and whose later calls start on time
    WHEN the calls are made THEN their starts conform to the declared burst's tolerance less
    the 50 ms jitter slack: the lease left room for the lateness (invariant 5). Leased with the
    declared tolerance less the jitter alone, six calls would start within 10 ms."""
    clock = Clock()
    began, late = clock.now, STALE_SECONDS - 0.01
    shared = SharedRates(Table("ledger", lambda: ddb), clock)
    starts: list[float] = []
    with shared.expect(KEY, 10):
        for n in range(10):
            slot = clock.now + shared.slot(KEY, per_second=RATE, burst=BURST, max_wait=600)
            if n == 0:
                clock.now = slot + late  # busy: the burst's calls start late, together
            clock.now = max(clock.now, slot)
            starts.append(clock.now)

    assert starts[0] - began == pytest.approx(late)
    assert conforms(starts, per_second=RATE, tolerance=STARTS)


def test_instances_asking_at_once_share_the_whole_quota_with_no_gap(ddb: DynamoDBClient) -> None:
    """GIVEN three instances, each with a lane of 10 calls
    WHEN they take their slots in turn at one instant
    THEN the 30 slots are those of one GCRA sequence with the lease tolerance (0.5 s): 3 now,
    then one every 0.2 s from 0.1 s, the last 5.3 s out, as one instance alone would get them -
    the quota is shared, not split."""
    clock = Clock()
    instances = [SharedRates(Table("ledger", lambda: ddb), clock) for _ in range(3)]
    waits: list[float] = []
    with ExitStack() as lanes:
        for instance in instances:
            lanes.enter_context(instance.expect(KEY, 10))
        for _ in range(10):
            for instance in instances:
                waits.append(instance.slot(KEY, per_second=RATE, burst=BURST, max_wait=600))

    assert sorted(waits) == pytest.approx(
        [max(0.0, k / RATE - LEASED) for k in range(30)], abs=1e-3
    )


def test_a_lease_covers_the_calls_the_lane_still_has_up_to_two_seconds_of_rate(
    ddb: DynamoDBClient,
) -> None:
    """GIVEN a lane of 3 calls, then one of 25
    WHEN each call takes its slot THEN the first lane costs one write (3 slots), the second
    one write per two seconds of rate (10 slots) - 1 + 3 writes for 28 calls."""
    table, clock = CountingTable("ledger", ddb), Clock()
    shared = SharedRates(table, clock)

    with shared.expect(KEY, 3):
        for _ in range(3):
            shared.slot(KEY, per_second=RATE, burst=BURST, max_wait=600)
    assert table.updates == 1
    with shared.expect(KEY, 25):
        for _ in range(25):
            shared.slot(KEY, per_second=RATE, burst=BURST, max_wait=600)

    assert int(RATE * LEASE_SECONDS) == 10
    assert table.updates == 1 + 3


def test_a_lost_race_leases_again_from_the_tat_the_winner_wrote(ddb: DynamoDBClient) -> None:
    """GIVEN instance A has seen the key, then B leased 4 slots
    WHEN A leases again THEN its write on the stale tat fails, the second succeeds, and A's
    slot comes after B's (A learnt B's tat from the failed condition)."""
    clock = Clock()
    a_table = CountingTable("ledger", ddb)
    a, b = SharedRates(a_table, clock), SharedRates(Table("ledger", lambda: ddb), clock)
    a.slot(KEY, per_second=RATE, burst=BURST, max_wait=600)  # A: the first slot, now
    with b.expect(KEY, 4):
        b_waits = [b.slot(KEY, per_second=RATE, burst=BURST, max_wait=600) for _ in range(4)]
    a_table.updates = 0

    a_wait = a.slot(KEY, per_second=RATE, burst=BURST, max_wait=600)

    assert a_table.updates == 2
    # B's slots are the 2nd to 5th of the key's sequence, A's next the 6th.
    assert b_waits == pytest.approx([max(0.0, k / RATE - LEASED) for k in range(1, 5)], abs=1e-3)
    assert a_wait == pytest.approx(5 / RATE - LEASED, abs=1e-3)


def test_a_slot_further_off_than_the_time_left_is_refused_and_not_leased(
    ddb: DynamoDBClient,
) -> None:
    """GIVEN another instance leased the next 3 seconds
    WHEN a call with 1 s left asks for a slot THEN it is refused (a deadline, so the job is
    retried later) and the key's tat is unchanged: the refused call holds no quota."""
    clock = Clock()
    hog = SharedRates(Table("ledger", lambda: ddb), clock)
    with hog.expect(KEY, 20):
        for _ in range(20):
            hog.slot(KEY, per_second=RATE, burst=BURST, max_wait=600)
    late = SharedRates(Table("ledger", lambda: ddb), clock)
    late.slot(KEY, per_second=RATE, burst=BURST, max_wait=600)  # learns the tat: 1 write
    before = ddb.scan(TableName="ledger")["Items"]

    with pytest.raises(DeadlineExceededError, match="next slot in"):
        late.slot(KEY, per_second=RATE, burst=BURST, max_wait=1.0)

    assert ddb.scan(TableName="ledger")["Items"] == before


def test_a_slot_left_unused_is_dropped_not_spent_later_in_a_burst(ddb: DynamoDBClient) -> None:
    """GIVEN a lease of 5 slots of which one was used
    WHEN the instance comes back 10 s later THEN the 4 old slots are dropped (a new lease:
    waits measured from now), so slots used by the instance still conform."""
    table, clock = CountingTable("ledger", ddb), Clock()
    shared = SharedRates(table, clock)
    with shared.expect(KEY, 5):
        used = [clock.now + shared.slot(KEY, per_second=RATE, burst=BURST, max_wait=600)]
    clock.now += 10 * STALE_SECONDS + 10
    with shared.expect(KEY, 5):
        for _ in range(5):
            used.append(clock.now + shared.slot(KEY, per_second=RATE, burst=BURST, max_wait=600))

    assert table.updates == 2
    assert conforms(used[1:], per_second=RATE, tolerance=LEASED)


def test_a_refused_shared_slot_gives_the_local_token_back(ddb: DynamoDBClient) -> None:
    """GIVEN a limiter whose shared key is leased 4 s ahead by another instance
    WHEN its call (0.5 s left) is refused THEN its own bucket is as full as before."""
    clock = Clock()
    hog = SharedRates(Table("ledger", lambda: ddb), clock)
    with hog.expect(KEY, 25):
        for _ in range(25):
            hog.slot(KEY, per_second=RATE, burst=BURST, max_wait=600)
    limiter = RateLimiter(
        shared=SharedRates(Table("ledger", lambda: ddb), clock), sleep=lambda _: None
    )
    rate = RateLimit("ssm:SendCommand", RATE, BURST)
    bucket = limiter.bucket(KEY, rate)
    tokens = bucket.tokens

    with pytest.raises(DeadlineExceededError):
        limiter.acquire(KEY, rate, max_wait=0.5)

    assert bucket.tokens == pytest.approx(tokens, abs=0.01)


def test_a_tat_written_by_a_clock_hours_ahead_does_not_stop_the_others(
    ddb: DynamoDBClient,
) -> None:
    """GIVEN an instance whose clock is two hours ahead leased the key
    WHEN an instance with the right clock asks for a slot with 10 s left
    THEN it gets one now (the impossible tat is replaced, conditionally), instead of being
    refused for two hours."""
    right = Clock()
    ahead = Clock(right.now + 7200)
    SharedRates(Table("ledger", lambda: ddb), ahead).slot(
        KEY, per_second=RATE, burst=BURST, max_wait=600
    )
    shared = SharedRates(Table("ledger", lambda: ddb), right)

    waits = [shared.slot(KEY, per_second=RATE, burst=BURST, max_wait=10) for _ in range(2)]

    assert waits == pytest.approx([0.0, 0.0], abs=1e-3)
