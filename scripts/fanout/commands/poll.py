"""``fanout poll``: the local stand-in for the Lambda SQS event source, calling the real handler."""

from __future__ import annotations

import dataclasses

import boto3
import click
from botocore.exceptions import BotoCoreError, ClientError

from fanout import console, local_worker
from fanout.errors import EXIT_FAILED, EXIT_OK, CliError, aws_error
from fanout.options import (
    QUEUE_URL_ENV,
    output_option,
    queue_url_option,
    region_option,
    resolve_region,
)
from fanout.poll_progress import PollProgress
from fanout.poller import Poller


@click.command(
    "poll",
    epilog="""\b
examples:
  fanout poll --queue-url $FANOUT_QUEUE_URL --until-empty
  fanout poll --until-empty -o json | python -m json.tool   # only JSON on stdout""",
)
@queue_url_option("--queue-url", envvar=QUEUE_URL_ENV, help_text="the work queue")
@region_option()
@click.option("--until-empty", is_flag=True, help="stop when the queue holds nothing")
@click.option(
    "--time-limit",
    type=click.FloatRange(min=0, min_open=True),
    default=120.0,
    show_default=True,
    help="seconds, with --until-empty",
)
@click.option(
    "--batch-size", type=click.IntRange(1, 10), default=10, show_default=True, help="records"
)
@click.option(
    "--wait-seconds",
    type=click.IntRange(0, 20),
    default=1,
    show_default=True,
    help="long-poll wait per receive",
)
@click.option(
    "--function-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="seconds the context reports",
)
@click.option(
    "--max-batches", type=click.IntRange(min=1), metavar="N", help="stop after this many batches"
)
@output_option(("table", "json"))
def command(
    *,
    queue_url: str | None,
    region: str | None,
    until_empty: bool,
    time_limit: float,
    batch_size: int,
    wait_seconds: int,
    function_timeout: float,
    max_batches: int | None,
    output: str,
) -> int:
    """Receive batches, call handler.app.lambda_handler with a Lambda-shaped event and
    context, delete what succeeded and leave reported failures to the visibility timeout and
    the redrive policy. Runs until Ctrl-C, or with --until-empty until the queue holds nothing
    (in flight included).

    The worker logs (JSON, WARNING and up unless LOG_LEVEL says otherwise) go to stderr;
    stdout has the summary only. On a terminal, a live line on stderr shows the batches,
    records and what the queue still holds (never on a pipe).
    """
    if not queue_url:
        raise CliError(f"--queue-url is required (or set {QUEUE_URL_ENV})")
    local_worker.quiet_environment()
    sqs = boto3.client("sqs", region_name=resolve_region(region, queue_url))
    # The real handler in a warm child process, killed at the function timeout as Lambda does
    # (it inherits the quiet environment, and its stdout goes to stderr).
    poller = Poller(
        queue_url,
        sqs=sqs,
        batch_size=batch_size,
        wait_seconds=wait_seconds,
        function_timeout_s=function_timeout,
    )
    failure: str | None = None
    with poller, PollProgress(poller) as progress:
        try:
            stats = poller.run(
                until_empty=until_empty,
                time_limit_s=time_limit if until_empty else None,
                max_batches=max_batches,
                progress=progress,
            )
        except KeyboardInterrupt:
            stats = poller.stats
        except (BotoCoreError, ClientError) as exc:
            failure = aws_error(exc)
            stats = poller.stats
    failed = bool(
        failure
        or stats.timed_out
        or stats.handler_errors
        or stats.function_timeouts
        or stats.delete_failures
    )
    if failure:
        console.error(failure)
    if output == "json":
        console.print_json(
            {**dataclasses.asdict(stats), "summary": stats.summary(), "ok": not failed}
        )
    else:
        print(f"poll: {stats.summary()}")
    return EXIT_FAILED if failed else EXIT_OK
