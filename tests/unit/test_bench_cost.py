"""The cost per million targets `make bench` reports: units counted per job, priced once."""

from __future__ import annotations

import pytest

from fanout.bench.b1_throughput import units_per_job
from fanout.bench.cost import PRICES, cost_per_million


def test_units_per_job_price_transactions_per_item_and_count_every_service() -> None:
    """GIVEN a round of 10 jobs: 2 transactions of 5 items each, 3 plain updates, 1 query, SQS
    requests from the harness and the worker, one event, one copy, 2 AssumeRole
    WHEN its units per job are counted THEN a transaction's items are 2 write units each."""
    round_ = {
        "paths_invalidated": 10,
        "invocations": 2,
        "handler_seconds": 4.0,
        "sqs_requests": {"send_message_batch": 1, "receive_message": 2, "delete_message_batch": 1},
        "dynamodb_requests": {
            "jobs:transact_write_items": 2,
            "jobs:items_in_transactions": 10,
            "jobs:query": 1,
            "requests:update_item": 3,
        },
        "api_calls_by_operation": {
            "sqs:SendMessage": 1,
            "events:PutEvents": 1,
            "s3:CopyObject": 1,
            "s3:GetObject": 4,
            "sts:AssumeRole": 2,
            "dynamodb:TransactWriteItems": 2,
        },
    }
    units = units_per_job(round_)
    assert units["dynamodb:write_units"] == pytest.approx((3 + 2 * 10) / 10)
    assert units["dynamodb:read_units"] == pytest.approx(0.1)
    assert units["sqs"] == pytest.approx(5 / 10)
    assert units["s3:write"] == pytest.approx(0.1)  # reads are not priced as writes
    assert units["lambda:gb_seconds"] == pytest.approx(4.0 * 0.25 / 10)
    assert units["sts"] == pytest.approx(0.2)
    assert set(units) == set(PRICES)


def test_cost_per_million_multiplies_each_unit_by_its_price_and_totals() -> None:
    rows = cost_per_million({"sqs": 2.0, "dynamodb:write_units": 4.0})
    by_item = {row["item"]: row["usd_per_million_jobs"] for row in rows}
    assert by_item["sqs"] == pytest.approx(2.0 * PRICES["sqs"].usd_per_million)
    assert by_item["lambda:requests"] == 0.0
    assert by_item["total"] == pytest.approx(
        2.0 * PRICES["sqs"].usd_per_million + 4.0 * PRICES["dynamodb:write_units"].usd_per_million
    )


def test_events_are_priced_per_entry_not_per_putevents_call() -> None:
    """GIVEN a round whose 4 completion events went out in 2 PutEvents calls
    WHEN its units per job are counted THEN EventBridge counts the 4 entries (its price unit)."""
    round_ = {
        "paths_invalidated": 8,
        "invocations": 1,
        "handler_seconds": 1.0,
        "sqs_requests": {},
        "dynamodb_requests": {},
        "api_calls_by_operation": {"events:PutEvents": 2},
        "event_entries": 4,
    }

    assert units_per_job(round_)["events"] == pytest.approx(4 / 8)
