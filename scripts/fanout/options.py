"""Options several verbs share, declared once: output format, region, queue URLs.

Kept free of heavy imports: every verb module imports this one, and ``fanout --help`` loads
every verb module.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

import click

__all__ = [
    "DEFAULT_REGION",
    "DLQ_URL_ENV",
    "LEDGER_TABLE_ENV",
    "QUEUE_URL_ENV",
    "STATUS_ROLE_ENV",
    "output_option",
    "queue_url_option",
    "region_option",
    "resolve_region",
]

QUEUE_URL_ENV: Final = "FANOUT_QUEUE_URL"
DLQ_URL_ENV: Final = "FANOUT_DLQ_URL"
LEDGER_TABLE_ENV: Final = "LEDGER_TABLE"
# The read-only role `status --refresh` assumes (target-role.yaml's StatusRoleName).
STATUS_ROLE_ENV: Final = "FANOUT_STATUS_ROLE_NAME"
DEFAULT_REGION: Final = "us-east-1"
_SQS_HOST_RE = re.compile(r"^https://sqs[.-]([a-z0-9-]+)\.amazonaws\.com")

F = TypeVar("F", bound=Callable[..., Any])


def output_option(choices: Sequence[str]) -> Callable[[F], F]:
    """``--output/-o``, one of ``choices``; the first is the default."""
    return click.option(
        "--output",
        "-o",
        type=click.Choice(list(choices)),
        default=choices[0],
        show_default=True,
        help="output format; json is for pipes (only JSON on stdout)",
    )


def region_option(
    help_text: str = "default: from the queue URL, else $AWS_REGION",
) -> Callable[[F], F]:
    return click.option("--region", metavar="REGION", help=help_text)


def queue_url_option(*names: str, envvar: str, help_text: str) -> Callable[[F], F]:
    """A queue URL option that defaults to an environment variable (shown in the help)."""
    return click.option(*names, envvar=envvar, show_envvar=True, metavar="URL", help=help_text)


def resolve_region(explicit: str | None, queue_url: str | None = None) -> str:
    """--region, else the region in an AWS queue URL, else AWS_REGION/AWS_DEFAULT_REGION."""
    if explicit:
        return explicit
    match = _SQS_HOST_RE.match(queue_url or "")
    if match:
        return match.group(1)
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
