"""What the request verbs (``cancel``, ``update``) share: the ledger table and a summary."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import boto3
import click

from fanout.errors import CliError
from fanout.options import LEDGER_TABLE_ENV
from handler import api

__all__ = ["request_source", "summary", "table_option"]

F = TypeVar("F", bound=Callable[..., Any])


def table_option() -> Callable[[F], F]:
    return click.option(
        "--table",
        envvar=LEDGER_TABLE_ENV,
        show_envvar=True,
        metavar="NAME",
        help="the ledger table",
    )


def request_source(table: str | None, region: str) -> api.StatusSource:
    table = (table or "").strip()
    if not table:
        raise CliError(f"--table is required (or set {LEDGER_TABLE_ENV})")
    return api.status_source(table, lambda: boto3.client("dynamodb", region_name=region))


def summary(record: api.RequestRecord) -> dict[str, Any]:
    return {"counts": record.counts(), "options": dict(record.options)}
