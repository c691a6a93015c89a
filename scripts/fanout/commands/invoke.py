"""``fanout invoke EVENT``: an SQS event file through the real handler, without Docker."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Column

from fanout import console
from fanout.errors import EXIT_FAILED, EXIT_OK, CliError
from fanout.invoke import EventError, invoke_event, load_sqs_event, record_rows
from fanout.options import output_option


@click.command(
    "invoke",
    epilog="""\b
examples:
  fanout invoke events/sqs-cloudfront-invalidate.json     # or: make invoke EVENT=...
  fanout invoke events/sqs-mixed-bad.json -o json
\b
with Docker, the same event in the Lambda container (docs/development.md):
  fanout emulator --host 0.0.0.0 --port 5000 --lambda-echo
  sam local invoke WorkerFunction -e events/sqs-cloudfront-invalidate.json \\
    --env-vars local/env-vars.json --add-host host.docker.internal:host-gateway""",
)
@click.argument("event_file", metavar="EVENT", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--function-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="seconds the context reports; the handler is killed after them",
)
@click.option(
    "--embedded/--running",
    default=None,
    help="start an emulator for this event / use the one AWS_ENDPOINT_URL names "
    "(default: the running one if AWS_ENDPOINT_URL is set)",
)
@output_option(("table", "json"))
def command(
    *, event_file: Path, function_timeout: float, embedded: bool | None, output: str
) -> int:
    """Pass EVENT (an SQS event, as `sam local invoke -e` takes it) to
    handler.app.lambda_handler in a killable child process, as Lambda would, then read the
    ledger: one row per record with its request and targets. Exit 0 when the handler answered
    without batch-item failures and every request succeeded (a record that is not a task
    message is dead-lettered by the worker: that is its success).

    Without AWS_ENDPOINT_URL it starts an embedded emulator seeded with the ids events/ names
    (Lambda in moto's Docker-less mode: lambda.invoke shows the worker's path, not the
    function running), stopped afterwards. The worker's logs go to stderr."""
    try:
        event = load_sqs_event(event_file)
    except EventError as exc:
        raise CliError(exc.reason) from None
    result = invoke_event(event, timeout_s=function_timeout, embedded=embedded)
    for note in result.notes:
        console.note(note)
    if output == "json":
        console.print_json(result.as_dict())
    else:
        if result.error:
            print(f"the handler failed ({result.outcome}): {result.error}")
        table = console.table(
            Column("message id", no_wrap=True),
            Column("request id", overflow="fold"),
            Column("task", no_wrap=True),
            Column("outcome", no_wrap=True),
            Column("targets", overflow="fold"),
        )
        for row in record_rows(result.records):
            table.add_row(*console.cells(row))
        console.render(table)
        failures = (result.response or {}).get("batchItemFailures", [])
        print(f"\n{event_file}: {len(result.records)} records, {len(failures)} batch item failures")
    return EXIT_OK if result.ok else EXIT_FAILED
