"""What a million targets cost in AWS requests, from a benchmark round's measured counts.

List prices, US East (N. Virginia), on-demand, no free tier - as the services' pricing pages
state them (aws.amazon.com/<service>/pricing). This machine cannot reach those pages: the
figures below are the ones known when this was written (2026); check them before relying on
a total. A price changes here, in one place.

What is priced is fanout's own overhead: the task's own API (CloudFront's per-path invalidation
charge, SSM's free Run Command, ...) costs the same whichever tool makes the call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["PRICES", "Price", "cost_per_million"]


@dataclass(frozen=True)
class Price:
    usd_per_million: float  # per million units
    unit: str
    source: str


PRICES: Final[Mapping[str, Price]] = {
    "lambda:requests": Price(0.20, "invocations", "aws.amazon.com/lambda/pricing"),
    # arm64, the template's architecture ($0.0000133334 per GB-second).
    "lambda:gb_seconds": Price(13.3334, "GB-seconds", "aws.amazon.com/lambda/pricing (arm64)"),
    "sqs": Price(0.40, "requests (each 64 KB chunk)", "aws.amazon.com/sqs/pricing (standard)"),
    # On-demand since the November 2024 price cut. A write of an item up to 1 KB is one write
    # request unit; a transactional write is two per item.
    "dynamodb:write_units": Price(
        0.625, "write request units", "aws.amazon.com/dynamodb/pricing/on-demand"
    ),
    "dynamodb:read_units": Price(
        0.125, "read request units", "aws.amazon.com/dynamodb/pricing/on-demand"
    ),
    "events": Price(
        1.00, "custom events (PutEvents entries)", "aws.amazon.com/eventbridge/pricing"
    ),
    "s3:write": Price(5.00, "PUT/COPY requests", "aws.amazon.com/s3/pricing (S3 Standard)"),
    "sts": Price(0.0, "AssumeRole calls (no charge)", "docs.aws.amazon.com/STS (no charge)"),
}


def cost_per_million(units_per_job: Mapping[str, float]) -> list[dict[str, Any]]:
    """One row per priced item: units per job, and USD per million jobs (the last row, the
    total). ``units_per_job`` keys are those of :data:`PRICES`."""
    rows: list[dict[str, Any]] = []
    for key, price in PRICES.items():
        per_job = units_per_job.get(key, 0.0)
        rows.append(
            {
                "item": key,
                "unit": price.unit,
                "per_job": per_job,
                "usd_per_million_jobs": per_job * price.usd_per_million,
                "source": price.source,
            }
        )
    total = sum(row["usd_per_million_jobs"] for row in rows)
    rows.append(
        {"item": "total", "unit": "", "per_job": None, "usd_per_million_jobs": total, "source": ""}
    )
    return rows
