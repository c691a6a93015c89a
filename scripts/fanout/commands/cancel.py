"""``fanout cancel``: stop a request in flight - nothing of it starts any more."""

from __future__ import annotations

import click
from botocore.exceptions import BotoCoreError, ClientError

from fanout import console
from fanout.errors import EXIT_FAILED, EXIT_OK, CliError, aws_error
from fanout.options import output_option, region_option, resolve_region
from fanout.requests import request_source, summary, table_option


@click.command(
    "cancel",
    epilog="""\b
examples:
  fanout cancel release-42
  fanout cancel release-42 && fanout status release-42 --watch
exit codes: 0 cancelled (or it had finished already: said on stderr), 1 AWS refused,
            2 usage error""",
)
@click.argument("request_id", metavar="REQUEST_ID")
@table_option()
@region_option("region of the table (default: $AWS_REGION)")
@output_option(("table", "json"))
def command(*, request_id: str, table: str | None, region: str | None, output: str) -> int:
    """Mark the request cancelled in the ledger. Targets not started yet end "cancelled" as
    the worker reaches them (it reads the request's record at the start of every batch); calls
    already in flight finish and are recorded. When its last target has ended, the request
    finishes as cancelled (its completion event says so). Needs dynamodb:UpdateItem on the
    ledger table (the stack's operator policy)."""
    source = request_source(table, resolve_region(region))
    try:
        record = source.requests.cancel_request(request_id)
    except (BotoCoreError, ClientError) as exc:
        raise CliError(f"cannot cancel {request_id}: {aws_error(exc)}", EXIT_FAILED) from exc
    if record.outcome not in ("cancelling", "cancelled"):
        console.note(f"request {request_id} had already finished ({record.outcome}): unchanged")
    if output == "json":
        console.print_json({"request_id": request_id, "state": record.outcome, **summary(record)})
    else:
        print(f"request {request_id}: {record.outcome}")
    return EXIT_OK
