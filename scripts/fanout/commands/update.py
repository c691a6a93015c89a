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


@click.command(
    "update",
    epilog="""\b
examples:
  fanout update release-42 --max-errors 5
  fanout update release-42 --max-errors 10%""",
)
@click.argument("request_id", metavar="REQUEST_ID")
@click.option(
    "--max-errors",
    metavar="N|P%",
    required=True,
    help="stop fanning out once more targets than this failed (a count, or a percentage of "
    "the request's targets)",
)
@table_option()
@region_option("region of the table (default: $AWS_REGION)")
@output_option(("table", "json"))
def command(
    *, request_id: str, max_errors: str, table: str | None, region: str | None, output: str
) -> int:
    """Replace the request's max_errors while it runs (like Step Functions' UpdateMapRun).
    Workers read it at the start of every batch; targets already started are not affected."""
    if not _MAX_ERRORS_RE.match(max_errors):
        raise CliError(f"--max-errors is a count or a percentage such as 10%, got {max_errors!r}")
    value: int | str = max_errors if max_errors.endswith("%") else int(max_errors)
    source = request_source(table, resolve_region(region))
    try:
        record = source.requests.update_request(request_id, {"max_errors": value})
    except (BotoCoreError, ClientError) as exc:
        raise CliError(f"cannot update {request_id}: {aws_error(exc)}", EXIT_FAILED) from exc
    if output == "json":
        console.print_json({"request_id": request_id, "max_errors": value, **summary(record)})
    else:
        print(f"request {request_id}: max_errors = {value} ({record.outcome})")
    return EXIT_OK
