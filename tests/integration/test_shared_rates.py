"""Instances sharing a quota through the ledger table, racing over HTTP on the emulator.

Four threads play four Lambda instances, each with its own ``SharedRates`` and its own boto3
client, leasing slots of one rate key from the emulator's DynamoDB at the same instants. The
clock is frozen while they race (moved on between rounds), so every slot's time is exact: all
of them together must conform to the rate, whatever order the conditional writes landed in.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from fanout.emulator import Emulator, create_ledger_table, fake_session
from handler.dynamo import Table
from handler.ratelimit_shared import SharedRates, lease_tolerance
from tests.unit.test_ratelimit_shared import Clock, conforms

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

pytestmark = pytest.mark.integration

KEY = ("111111111111", "us-east-1", "ssm:SendCommand")
RATE, BURST = 5.0, 5
INSTANCES, ROUNDS, PER_ROUND = 4, 12, 3


def _client(emulator: Emulator) -> DynamoDBClient:
    client: DynamoDBClient = fake_session("us-east-1").client(
        "dynamodb", endpoint_url=emulator.endpoint_url
    )
    return client


@pytest.fixture
def table(emulator: Emulator) -> Iterator[str]:
    """A ledger table of its own, keyed as the template's (the seeder's own helper)."""
    name = create_ledger_table(
        emulator.endpoint_url, region="us-east-1", name=f"rates-{uuid.uuid4().hex[:12]}"
    )
    yield name
    _client(emulator).delete_table(TableName=name)


def test_instances_racing_for_slots_never_exceed_the_rate_together(
    emulator: Emulator, table: str
) -> None:
    """GIVEN 4 instances, each its own client, and a key at 5/s (burst 5)
    WHEN in each of 12 rounds they all lease 3 slots at once, the clock moving 0-1 s between
    rounds THEN all 144 slots conform to 5/s with the lease tolerance (burst 5's, less the
    lateness and jitter allowances), and none was refused or lost."""
    clock, rng = Clock(), random.Random(11)
    instances = [SharedRates(Table(table, lambda: _client(emulator)), clock) for _ in range(4)]
    taken: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start, done = threading.Barrier(INSTANCES + 1), threading.Barrier(INSTANCES + 1)

    def instance(shared: SharedRates) -> None:
        for _ in range(ROUNDS):
            start.wait()
            try:
                with shared.expect(KEY, PER_ROUND):
                    for _ in range(PER_ROUND):
                        wait = shared.slot(KEY, per_second=RATE, burst=BURST, max_wait=600)
                        with lock:
                            taken.append(clock.now + wait)
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)
            done.wait()

    threads = [threading.Thread(target=instance, args=(s,)) for s in instances]
    for thread in threads:
        thread.start()
    for _ in range(ROUNDS):
        start.wait(timeout=120)
        done.wait(timeout=120)
        clock.now += rng.uniform(0.0, 1.0)
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert len(taken) == INSTANCES * ROUNDS * PER_ROUND
    assert conforms(taken, per_second=RATE, tolerance=lease_tolerance(RATE, BURST))
