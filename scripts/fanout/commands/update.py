"""``fanout update``: change a running request's request-wide limits."""

from __future__ import annotations

import re

import click
from botocore.exceptions import BotoCoreError, ClientError

from fanout import console
from fanout.errors import EXIT_FAILED, EXIT_OK, CliError, aws_error
from fanout.options import output_option, region_option, resolve_region
from fanout.requests import request_source, summary, table_option

_MAX_ERRORS_RE = re.compile(r"^(?:[0-9]+|(?:100|[1-9]?[0-9])%)$")
_MAX_CONCURRENCY_RE = re.compile(r"^(?:[1-9][0-9]*|(?:100|[1-9][0-9]?)%)$")


@click.command(
    "update",
    epilog="""\b
examples:
  fanout update release-42 --max-errors 5
  fanout update release-42 --max-errors 10%
  fanout update release-42 --max-concurrency 20""",
)
@click.argument("request_id", metavar="REQUEST_ID")
@click.option(
    "--max-errors",
    metavar="N|P%",
    help="stop fanning out once more targets than this failed (a count, or a percentage of "
    "the request's targets)",
)
@click.option(
    "--max-concurrency",
    metavar="N|P%",
    help="at most this many of the request's targets in flight at once, across every worker "
    "instance (a count >= 1, or a percentage)",
)
@table_option()
@region_option("region of the table (default: $AWS_REGION)")
@output_option(("table", "json"))
def command(
    *,
    request_id: str,
    max_errors: str | None,
    max_concurrency: str | None,
    table: str | None,
    region: str | None,
    output: str,
) -> int:
    """Replace the request's max_errors or max_concurrency while it runs (like Step
    Functions' UpdateMapRun). Workers read them at the start of every batch; targets already
    started are not affected (a lower cap lets no new target start until enough ended; a cap
    given to a request published without one counts only the targets that start after it)."""
    changes: dict[str, int | str] = {}
    if max_errors is not None:
        if not _MAX_ERRORS_RE.match(max_errors):
            raise CliError(
                f"--max-errors is a count or a percentage such as 10%, got {max_errors!r}"
            )
        changes["max_errors"] = _count_or_percentage(max_errors)
    if max_concurrency is not None:
        if not _MAX_CONCURRENCY_RE.match(max_concurrency):
            raise CliError(
                "--max-concurrency is a count (1 or more) or a percentage such as 10%, got "
                f"{max_concurrency!r}"
            )
        changes["max_concurrency"] = _count_or_percentage(max_concurrency)
    if not changes:
        raise CliError("give --max-errors or --max-concurrency (or both)")
    source = request_source(table, resolve_region(region))
    try:
        record = source.requests.update_request(request_id, changes)
    except (BotoCoreError, ClientError) as exc:
        raise CliError(f"cannot update {request_id}: {aws_error(exc)}", EXIT_FAILED) from exc
    if output == "json":
        console.print_json({"request_id": request_id, **changes, **summary(record)})
    else:
        said = ", ".join(f"{name} = {value}" for name, value in changes.items())
        print(f"request {request_id}: {said} ({record.outcome})")
    return EXIT_OK


def _count_or_percentage(text: str) -> int | str:
    return text if text.endswith("%") else int(text)
