"""Rollout control across instances, measured where it matters: at the emulator's door.

The fault proxy holds every SendCommand for a moment and counts how many are in flight at once,
whichever worker process sent them.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from fanout.emulator.proxy import Forwarded, Proxy, Request, Rule, where
from fanout.status import ledger_for, read_status
from tests.integration.faults.conftest import ACCOUNTS, Scenario
from tests.integration.faults.harness import REGION, SSM_DOCUMENT, fake_instances, new_id
from tests.integration.faults.test_scenarios import assert_promise

pytestmark = pytest.mark.integration

TARGETS = 20
PARTS = 5
HOLD_S = 0.5  # each SendCommand is held this long at the proxy, so calls overlap


class InFlight:
    """A proxy rule: holds matching requests ``HOLD_S`` and records the peak held at once."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.calls = 0
        self._lock = threading.Lock()

    def rule(self, operation: str) -> Rule:
        def action(_request: Request, forward: Callable[[], Forwarded]) -> Forwarded:
            with self._lock:
                self.now += 1
                self.calls += 1
                self.peak = max(self.peak, self.now)
            try:
                time.sleep(HOLD_S)
                return forward()
            finally:
                with self._lock:
                    self.now -= 1

        return Rule(f"in flight: {operation}", where(operations=[operation]), action)


def rollout_bodies(request_id: str, options: dict[str, Any]) -> list[str]:
    """One request of ``TARGETS`` SendCommand targets (instances of their own) over the three
    accounts, published as ``PARTS`` messages."""
    targets = [
        {
            "account": ACCOUNTS[i % len(ACCOUNTS)],
            "params": {"instance_ids": fake_instances(1)},
        }
        for i in range(TARGETS)
    ]
    per = TARGETS // PARTS
    return [
        json.dumps(
            {
                "version": 1,
                "task": "ssm.send_command",
                "request_id": request_id,
                "request": {"targets": TARGETS, "part": part + 1, "parts": PARTS},
                "targets": targets[part * per : (part + 1) * per],
                "params": {"document_name": SSM_DOCUMENT, "parameters": {"commands": ["uptime"]}},
                "options": options,
            }
        )
        for part in range(PARTS)
    ]


def run_three_pollers(
    scenario: Scenario, faults: Proxy, options: dict[str, Any], request_id: str
) -> InFlight:
    gauge = InFlight()
    faults.add(gauge.rule("SendCommand"))
    # Every message twice (a publisher's retry): duplicate deliveries of one job meet at the
    # gate, and must not free a slot whose call is still in flight.
    scenario.workload.publish(rollout_bodies(request_id, options), copies=2)
    others = [scenario.spawn(wait_until_polling=True, time_limit_s=150) for _ in range(2)]
    scenario.poll(batch_size=2, time_limit_s=150)
    for other in others:
        assert other.wait(timeout=180) == 0
    return gauge


def test_max_concurrency_caps_a_requests_calls_in_flight_across_pollers(
    scenario: Scenario, faults: Proxy
) -> None:
    """GIVEN a request of 20 targets with max_concurrency 4, in 5 messages each sent twice, and
    three workers
    (two other processes and this one) polling the queue at once
    WHEN they drain it, each SendCommand held 0.5 s at the emulator's door
    THEN never more than 4 SendCommands were in flight at once, every target ran exactly once
    (0 lost, 0 duplicated), and the workers did run side by side; `fanout status` shows the
    rollout: no slot held any more, 20 targets started."""
    request_id = new_id("rollout")
    gauge = run_three_pollers(scenario, faults, {"max_concurrency": 4}, request_id)
    figures = scenario.verify("rollout: max_concurrency 4, three pollers")

    assert_promise(figures)
    assert figures.succeeded == figures.jobs == TARGETS
    assert gauge.peak <= 4, f"{gauge.peak} SendCommands in flight at once (max_concurrency 4)"
    assert gauge.peak >= 2, "the calls never overlapped: the test measured nothing"
    assert gauge.calls == TARGETS
    report = read_status(ledger_for(scenario.org.ledger_table or "", region=REGION), request_id)
    assert report.state == "succeeded"
    assert report.rollout == {
        "max_concurrency": 4,
        "cap": 4,
        "ramp": None,
        "in_flight": 0,
        "started": 20,
        "wave": None,
        "wave_allows": None,
    }


def test_an_exponential_ramp_starts_one_target_then_two_then_the_cap(
    scenario: Scenario, faults: Proxy
) -> None:
    """GIVEN the same request with max_concurrency 4 and ramp exponential
    WHEN three workers drain it
    THEN the first SendCommand ran alone (no other call in flight beside it), never more than
    4 ran at once, and every target ran exactly once."""
    starts: list[tuple[float, float]] = []
    lock = threading.Lock()

    def action(_request: Request, forward: Callable[[], Forwarded]) -> Forwarded:
        began = time.monotonic()
        try:
            time.sleep(HOLD_S)
            return forward()
        finally:
            with lock:
                starts.append((began, time.monotonic()))

    faults.add(Rule("ramp timeline", where(operations=["SendCommand"]), action))
    scenario.workload.publish(
        rollout_bodies(new_id("ramp"), {"max_concurrency": 4, "ramp": "exponential"})
    )
    others = [scenario.spawn(wait_until_polling=True, time_limit_s=150) for _ in range(2)]
    scenario.poll(batch_size=2, time_limit_s=150)
    for other in others:
        assert other.wait(timeout=180) == 0
    figures = scenario.verify("rollout: exponential ramp, three pollers")

    assert_promise(figures)
    assert figures.succeeded == figures.jobs == TARGETS
    starts.sort()
    _, first_ended = starts[0]
    overlapping_first = [b for b, _ in starts[1:] if b < first_ended]
    assert not overlapping_first, "wave 1 is one target: nothing may start beside it"
    peak = max(sum(1 for b, e in starts if b <= t < e) for t, _ in starts)
    assert peak <= 4, f"{peak} in flight at once"


REGION_ORDER = ("eu-west-1", "us-east-1", "ap-southeast-2")


def test_region_order_starts_a_region_only_after_every_target_of_the_one_before_ended(
    scenario: Scenario, faults: Proxy
) -> None:
    """GIVEN a request of 12 SendCommand targets, 4 in each of three regions, with
    region_order eu-west-1, us-east-1, ap-southeast-2, published as 3 messages that each mix
    all three regions (each sent twice), and two workers polling
    WHEN they drain it, each SendCommand held 0.5 s at the emulator's door
    THEN every call in a region began after the last call of the region before it ended
    (measured at the emulator, by the region each call was signed for), every target ran
    exactly once, and `fanout status` shows each region ended, in order."""
    calls: list[tuple[str, float, float]] = []  # (region, began, ended)
    lock = threading.Lock()

    def action(request: Request, forward: Callable[[], Forwarded]) -> Forwarded:
        began = time.monotonic()
        try:
            time.sleep(HOLD_S)
            return forward()
        finally:
            with lock:
                calls.append((request.region or "?", began, time.monotonic()))

    faults.add(Rule("region timeline", where(operations=["SendCommand"]), action))
    request_id = new_id("regions")
    targets = [
        {
            "account": ACCOUNTS[i % len(ACCOUNTS)],
            "region": REGION_ORDER[i % len(REGION_ORDER)],
            "params": {"instance_ids": fake_instances(1)},
        }
        for i in range(12)
    ]
    bodies = [
        json.dumps(
            {
                "version": 1,
                "task": "ssm.send_command",
                "request_id": request_id,
                "request": {
                    "targets": 12,
                    "part": part + 1,
                    "parts": 3,
                    "regions": dict.fromkeys(REGION_ORDER, 4),
                },
                "targets": targets[part * 4 : (part + 1) * 4],
                "params": {"document_name": SSM_DOCUMENT, "parameters": {"commands": ["uptime"]}},
                "options": {"region_order": list(REGION_ORDER)},
            }
        )
        for part in range(3)
    ]
    scenario.workload.publish(bodies, copies=2)
    other = scenario.spawn(wait_until_polling=True, time_limit_s=240)
    scenario.poll(batch_size=2, time_limit_s=240)
    assert other.wait(timeout=270) == 0
    figures = scenario.verify("rollout: region_order, two pollers")

    assert_promise(figures)
    assert figures.succeeded == figures.jobs == 12
    assert sorted(region for region, _, _ in calls) == sorted(REGION_ORDER * 4)
    for before, after in itertools.pairwise(REGION_ORDER):
        last_end = max(e for r, _, e in calls if r == before)
        first_start = min(b for r, b, _ in calls if r == after)
        assert first_start >= last_end, f"{after} started before {before} ended"
    report = read_status(ledger_for(scenario.org.ledger_table or "", region=REGION), request_id)
    assert report.state == "succeeded"
    assert report.regions == [
        {"region": region, "targets": 4, "ended": 4, "state": "ended"} for region in REGION_ORDER
    ]
