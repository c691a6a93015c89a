"""Rollout slots on DynamoDB under concurrent acquirers, on the emulator: its conditional
writes are atomic (``fanout.emulator.dynamodb``), as DynamoDB's are; in-process moto's are not."""

from __future__ import annotations

import uuid

import boto3

from fanout.emulator import Organisation
from handler.requests_dynamodb import DynamoDBRequests
from tests.unit.test_ledger import Clock, create_ledger_table
from tests.unit.test_rollout import assert_cap_holds_under_concurrency


def test_concurrent_acquirers_never_hold_more_than_the_cap_on_dynamodb(
    aws_env: Organisation,
) -> None:
    table = create_ledger_table(f"rollout-slots-{uuid.uuid4().hex[:8]}")
    requests = DynamoDBRequests(table, lambda: boto3.client("dynamodb"), clock=Clock())
    assert_cap_holds_under_concurrency(requests)
