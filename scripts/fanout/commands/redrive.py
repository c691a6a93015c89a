"""``fanout redrive``: dead letters back to the work queue, all of them or a filtered few."""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
import click
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from rich.table import Column, Table

from fanout import console
from fanout.errors import EXIT_FAILED, EXIT_OK, CliError, aws_error
from fanout.options import (
    DLQ_URL_ENV,
    QUEUE_URL_ENV,
    output_option,
    queue_url_option,
    region_option,
    resolve_region,
)
from fanout.redrive import (
    DeadLetter,
    Filters,
    NotItsDeadLetterQueueError,
    RedriveResult,
    check_dead_letter_queue,
    redrive,
)

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

_HUES = {"move": "green", "would move": "green", "skip": "dim", "failed": "red", "left": "dim"}


@click.command(
    "redrive",
    epilog="""\b
examples:
  fanout redrive --from $FANOUT_DLQ_URL --to $FANOUT_QUEUE_URL --dry-run
  fanout redrive --filter-task cloudfront.invalidate --filter-reason Throttl --dry-run
  fanout redrive --filter-request-id release-42 --max 100
  fanout redrive            # everything, with the move task""",
)
@queue_url_option("--from", "source", envvar=DLQ_URL_ENV, help_text="the dead-letter queue")
@queue_url_option("--to", "destination", envvar=QUEUE_URL_ENV, help_text="the work queue")
@click.option("--filter-task", metavar="TASK", help="task name or glob (ssm.*)")
@click.option(
    "--filter-reason", metavar="REGEX", help="regex or substring of the reason or error class"
)
@click.option("--filter-request-id", metavar="ID", help="request id")
@click.option(
    "--max", "max_messages", type=click.IntRange(min=1), metavar="N", help="move at most N"
)
@click.option("--dry-run", is_flag=True, help="list what would move; change nothing")
@click.option("--loop", is_flag=True, help="use the copy loop even without filters")
@click.option(
    "--force",
    is_flag=True,
    help="redrive even when --from is not the dead-letter queue of --to (by --to's redrive policy)",
)
@region_option()
@output_option(("table", "json"))
def command(
    *,
    source: str | None,
    destination: str | None,
    filter_task: str | None,
    filter_reason: str | None,
    filter_request_id: str | None,
    max_messages: int | None,
    dry_run: bool,
    loop: bool,
    force: bool,
    region: str | None,
    output: str,
) -> int:
    """Without filters, start SQS's message-move task (server-side; it keeps message
    attributes as they are; the embedded emulator runs it too); where an endpoint lacks it,
    the copy loop runs instead.

    With filters, --max or --loop, the copy loop: receive from the DLQ, send the body unchanged
    to the queue without the fanout.* attributes (reason, error class, the fanout.attempt
    counter: attempts start anew), delete from the DLQ only after the send succeeded. Messages
    that do not match stay in the DLQ and are made visible again. --filter-reason is a regular
    expression or a plain substring, searched in fanout.reason and fanout.error_class;
    --filter-task takes globs (ssm.*).

    Before anything moves (dry runs included: a scan hides the messages it reads), --from must
    be the queue that --to's redrive policy names as its dead-letter queue; --force skips
    that check.
    """
    if not source:
        raise CliError(f"--from is required (or set {DLQ_URL_ENV})")
    if not destination:
        raise CliError(f"--to is required (or set {QUEUE_URL_ENV})")
    if source == destination:
        raise CliError("--from and --to name the same queue")
    if source.endswith(".fifo") or destination.endswith(".fifo"):
        raise CliError("FIFO queues are not supported (the fanout queues are standard queues)")
    resolved_region = resolve_region(region, source)
    sqs = boto3.client("sqs", region_name=resolved_region)
    # No retries: an endpoint without the move task answers 5xx, which botocore would retry.
    move_sqs = boto3.client(
        "sqs", region_name=resolved_region, config=Config(retries={"total_max_attempts": 1})
    )
    if not force:
        _check_queues(sqs, source, destination)
    progress = console.Progress("redrive")
    try:
        result = redrive(
            sqs,
            source,
            destination,
            filters=Filters(filter_task, filter_reason, filter_request_id),
            max_messages=max_messages,
            dry_run=dry_run,
            force_loop=loop,
            move_sqs=move_sqs,
            progress=progress.update,
        )
    except (BotoCoreError, ClientError) as exc:
        raise CliError(f"redrive stopped: {aws_error(exc)}", EXIT_FAILED) from exc
    finally:
        progress.close()
    if result.note:
        console.note(result.note)
    if output == "json":
        console.print_json(result.as_dict())
    else:
        _print_redrive(result)
    return EXIT_FAILED if result.failed else EXIT_OK


def _check_queues(sqs: SQSClient, source: str, destination: str) -> None:
    try:
        check_dead_letter_queue(sqs, source, destination)
    except NotItsDeadLetterQueueError as exc:
        raise CliError(f"{exc.reason} (--force to redrive anyway)") from None
    except (BotoCoreError, ClientError) as exc:
        raise CliError(
            f"cannot check that --from is the dead-letter queue of --to: {aws_error(exc)}",
            EXIT_FAILED,
        ) from exc


def _redrive_table(result: RedriveResult) -> Table:
    table = console.table(
        Column("action", no_wrap=True),
        Column("message id", no_wrap=True),
        Column("task", no_wrap=True),
        Column("request id", overflow="fold"),
        Column("error class", no_wrap=True),
        Column("reason", overflow="fold"),
    )

    def add(action: str, letter: DeadLetter) -> None:
        row: list[console.Cell] = [
            (action, _HUES.get(action, "")),
            letter.message_id,
            letter.task or "-",
            letter.request_id or "-",
            letter.error_class or "-",
            console.one_line(letter.reason) or "-",
        ]
        table.add_row(*console.cells(row))

    for letter in result.moved:
        add("would move" if result.dry_run else "move", letter)
    for letter, _ in result.failed:
        add("failed", letter)
    for letter in result.not_moved:
        add("left", letter)
    for letter in result.skipped:
        add("skip", letter)
    return table


def _print_redrive(result: RedriveResult) -> None:
    if result.mode == "move-task":
        if result.task_handle is None:
            print(f"the dead-letter queue is empty: nothing to move ({result.source_url})")
        else:
            print(
                f"started a message-move task: about {result.approximate_messages} message(s) "
                f"from {result.source_url} to {result.destination_url}\n"
                f"task handle: {result.task_handle}\n"
                f"follow it:   aws sqs list-message-move-tasks --source-arn {result.source_arn}"
            )
        return
    if result.dry_run or result.failed:
        console.render(_redrive_table(result))
        print()
    verb = "would move" if result.dry_run else "moved"
    print(
        f"{verb} {len(result.moved)}, skipped {len(result.skipped)} (not matching), "
        f"left {len(result.not_moved)} (over --max), failed {len(result.failed)}: "
        f"{result.source_url} -> {result.destination_url}"
        + (" (dry run: nothing changed)" if result.dry_run else "")
    )
