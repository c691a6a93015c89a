"""The nightly schedule, delivered as Scheduler delivers it, through the real handler.

The schedule's input comes from template.yaml (resolved, then rendered with Scheduler's context
attributes for a fake clock: ``tests/template/schedule.py``). Each night's run is a new SQS
message; so is a retried delivery of the same run (Scheduler sends again). The ledger, not the
message id, decides: a retry does nothing, the next night invalidates again.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cfnlint.decode import cfn_yaml

from handler.app import lambda_handler
from tests.template.resolver import resolve_template
from tests.template.schedule import Delivery, FakeClock, render
from tests.unit.fakes import (
    TARGET_ACCOUNTS,
    FakeLambdaContext,
    create_distribution,
    failures,
    invalidations,
    sqs_event,
    sqs_record,
)

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = TARGET_ACCOUNTS[0]


@pytest.mark.usefixtures("worker_env")
def test_a_retried_run_is_deduplicated_and_the_next_night_runs_again(
    context: FakeLambdaContext,
) -> None:
    """GIVEN the nightly purge schedule of one distribution and a fake clock
    WHEN tonight's run is delivered, then delivered again (a Scheduler retry, a new message),
    then tomorrow's run is delivered
    THEN the distribution gets two invalidations of /*: tonight's and tomorrow's."""
    distribution = create_distribution(ACCOUNT)
    targets = json.dumps([{"account": ACCOUNT, "params": {"distribution_id": distribution}}])
    template = cfn_yaml.load(str(ROOT / "template.yaml"))
    stack = resolve_template(template, ScheduleTargets=targets)
    input_template = stack.properties("Schedule")["Target"]["Input"]
    expression = stack.parameters["ScheduleExpression"]
    clock = FakeClock(datetime(2026, 3, 1, 9, 30, tzinfo=UTC))

    tonight = clock.next_run(expression)
    deliveries = [Delivery(tonight, attempt=1), Delivery(tonight, attempt=2)]
    clock.advance(timedelta(days=1))
    deliveries.append(Delivery(clock.next_run(expression)))
    responses = [
        lambda_handler(sqs_event(sqs_record(render(input_template, d))), context)
        for d in deliveries
    ]

    assert [failures(r) for r in responses] == [[], [], []]
    batches = invalidations(ACCOUNT, distribution)
    assert [b["Paths"]["Items"] for b in batches] == [["/*"], ["/*"]]
