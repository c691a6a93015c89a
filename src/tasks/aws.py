"""Facts about AWS identifiers that the worker, the plugins and the CLI share, stated once.

Patterns run on Python's ``re``, where ``\\d`` and ``\\w`` match any Unicode digit or letter:
they are spelled in ASCII classes, and every one is anchored for JSON Schema's search semantics.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "ACCOUNT_ID_PATTERN",
    "ACCOUNT_ID_RE",
    "GLOBAL_CONTROL_PLANE_REGION",
    "REGION_PATTERN",
    "REGION_RE",
    "is_account_id",
    "partition_of",
]

ACCOUNT_ID_PATTERN: Final = r"^[0-9]{12}$"
ACCOUNT_ID_RE: Final = re.compile(ACCOUNT_ID_PATTERN)
# us-east-1, eu-central-2, us-gov-west-1, cn-north-1, us-iso-east-1, us-isob-east-1, ...
REGION_PATTERN: Final = r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}$"
REGION_RE: Final = re.compile(REGION_PATTERN)
# Global services of the aws partition (CloudFront, WAF for CloudFront, IAM) are called here.
GLOBAL_CONTROL_PLANE_REGION: Final = "us-east-1"

# Longest prefix first: us-isob- before us-iso-.
_PARTITIONS: Final = (
    ("cn-", "aws-cn"),
    ("us-gov-", "aws-us-gov"),
    ("us-isob-", "aws-iso-b"),
    ("us-iso-", "aws-iso"),
)


def partition_of(region: str) -> str:
    """The AWS partition a region belongs to (``aws``, ``aws-cn``, ``aws-us-gov``, ...)."""
    for prefix, partition in _PARTITIONS:
        if region.startswith(prefix):
            return partition
    return "aws"


def is_account_id(value: object) -> bool:
    return isinstance(value, str) and ACCOUNT_ID_RE.match(value) is not None
