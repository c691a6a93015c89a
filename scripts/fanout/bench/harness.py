"""Seeding, queues and environments shared by the emulator benchmarks (imports moto)."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING

from fanout.bench.common import QUIET_ENV
from fanout.emulator import Organisation, create_queues, fake_session, seed_organisation

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

__all__ = [
    "create_accounts",
    "fresh_queues",
    "ops_sqs",
    "seed",
    "worker_env",
]


def create_accounts(moto_url: str, count: int, *, region: str = "us-east-1") -> tuple[str, ...]:
    """An AWS Organization in the ops account with ``count`` member accounts; their ids.

    botocove insists that its targets are ACTIVE members of the caller's organisation.
    """
    client = fake_session(region).client("organizations", endpoint_url=moto_url)
    with contextlib.suppress(client.exceptions.AlreadyInOrganizationException):
        client.create_organization(FeatureSet="ALL")
    ids = []
    for n in range(count):
        status = client.create_account(
            Email=f"bench-{n}-{uuid.uuid4().hex[:6]}@example.com", AccountName=f"bench-{n}"
        )["CreateAccountStatus"]
        ids.append(str(status["AccountId"]))
    return tuple(ids)


def seed(moto_url: str, accounts: int, *, distributions: int) -> Organisation:
    """The seeded organisation, talking to moto directly (seeding is not measured)."""
    return seed_organisation(
        moto_url,
        create_accounts(moto_url, accounts),
        distributions_per_account=distributions,
        instances_per_account=1,
    )


def fresh_queues(
    org: Organisation, prefix: str, *, visibility_timeout: int = 30, max_receive_count: int = 5
) -> Organisation:
    """The organisation working from a new queue pair, so runs never see each other's messages."""
    suffix = f"{prefix}-{uuid.uuid4().hex[:8]}"
    queues = create_queues(
        org.endpoint_url,
        region=org.region,
        name=f"work-{suffix}",
        dlq_name=f"dlq-{suffix}",
        visibility_timeout=visibility_timeout,
        max_receive_count=max_receive_count,
    )
    return org.with_queues(queues)


def worker_env(org: Organisation, proxy_url: str, **extra: str) -> dict[str, str]:
    """The worker's environment with every AWS call going through the proxy."""
    env = replace(org, endpoint_url=proxy_url).handler_environment(log_level="ERROR")
    return {**env, **QUIET_ENV, **extra}


def ops_sqs(org: Organisation) -> SQSClient:
    """The ops account's SQS client, straight to moto: publishing and polling stand in for SQS
    and the Lambda event source, whose calls are not the worker's."""
    client: SQSClient = fake_session(org.region).client("sqs", endpoint_url=org.endpoint_url)
    return client
