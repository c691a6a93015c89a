"""``fanout publish``: envelopes from arguments or a file, validated as the worker will, sent."""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple

import boto3
import click
from botocore.exceptions import BotoCoreError, ClientError

from fanout import console
from fanout.errors import EXIT_FAILED, EXIT_OK, CliError, aws_error
from fanout.options import (
    QUEUE_URL_ENV,
    output_option,
    queue_url_option,
    region_option,
    resolve_region,
)
from fanout.publish import (
    MAX_TARGETS_PER_MESSAGE,
    PublishError,
    PublishResult,
    SendError,
    bodies_from_document,
    build_bodies,
    build_selection_body,
    publish,
    refused_accounts,
    split_list,
    validate_bodies,
)
from handler import api
from handler.api import MAX_CONCURRENCY

# Publishes of more messages than this draw a progress bar (on a terminal).
PROGRESS_MIN_MESSAGES: Final = 50
_PERCENT_RE = re.compile(r"^(100|[1-9]?[0-9])%$")


class MaxErrors(click.ParamType[int | str]):
    """A count of failed targets (``3``) or a percentage of the targets (``10%``)."""

    name = "N|P%"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> int | str:
        text = str(value).strip()
        if text.isdigit():
            return int(text)
        if not _PERCENT_RE.match(text):
            self.fail(
                f"{value!r} is neither a count (0, 1, ...) nor a percentage (0%-100%)", param, ctx
            )
        return text


class ConcurrencyCap(click.ParamType[int | str]):
    """Targets in flight at once: a count (1 to MAX_CONCURRENCY) or a percentage (1%-100%)."""

    name = "N|P%"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> int | str:
        text = str(value).strip()
        if text.isdigit() and 1 <= int(text) <= MAX_CONCURRENCY:
            return int(text)
        if not _PERCENT_RE.match(text) or text == "0%":
            self.fail(
                f"{value!r} is neither a count (1 to {MAX_CONCURRENCY:,}) nor a percentage of "
                "the request's targets (1%-100%)",
                param,
                ctx,
            )
        return text


EPILOG: Final = """\b
examples:
  fanout publish cloudfront.invalidate --accounts 111111111111,222222222222 \\
      --param 'paths=/index.html,/img/*' \\
      --target-param 111111111111:distribution_id=E2QWRUHEXAMPLE \\
      --target-param 222222222222:distribution_id=E1B2C3D4EXAMPLE
  fanout publish ssm.send_command --accounts 111111111111 \\
      --param document_name=AWS-RunShellScript --param 'parameters={"commands":["uptime"]}' \\
      --param 'targets=[{"key":"tag:Role","values":["web"]}]'
  fanout publish ssm.send_command --accounts ... --canary --max-errors 10%
  fanout publish ssm.send_command --accounts ... --alarms web-5xx,web-latency
  fanout publish ssm.send_command --ous ou-ab12-prod --max-concurrency 10% --ramp exponential
  fanout publish ssm.send_command --ous ou-ab12-prod --regions us-east-1,eu-west-1 \\
      --region-order us-east-1,eu-west-1 --max-errors 2    # one region, then the next
  fanout publish ssm.send_command --ous ou-ab12-prod1234 --include-child-ous \\
      --account-tag env=prod --exclude-accounts 210000000003 --regions us-east-1,eu-west-1 \\
      --param document_name=AWS-RunShellScript --param 'parameters={"commands":["uptime"]}' \\
      --param 'targets=[{"key":"tag:Role","values":["web"]}]'
  fanout targets --ous ou-ab12-prod1234 --include-child-ous   # what that selects
  fanout publish --file body.json --queue-url https://sqs.eu-west-1.amazonaws.com/...
  fanout tasks    # every task, its parameters and IAM actions"""


@click.command(
    "publish",
    epilog=EPILOG,
)
@click.argument("task", required=False, metavar="[TASK]")
@click.option("--accounts", metavar="IDS", help="comma-separated target account ids")
@click.option(
    "--regions", metavar="REGIONS", help="comma-separated regions (default: the worker's region)"
)
@click.option(
    "--ous",
    metavar="OU_IDS",
    help="select the accounts of these OUs (or r-... for the whole organisation); the worker "
    "expands the selection through AWS Organizations",
)
@click.option("--include-child-ous", is_flag=True, help="with --ous: their child OUs too")
@click.option(
    "--account-tag",
    "account_tags",
    multiple=True,
    metavar="KEY=VALUE",
    help="select accounts with this Organizations tag (repeatable: all must match)",
)
@click.option(
    "--exclude-accounts", metavar="IDS", help="with a selection: leave these accounts out"
)
@click.option(
    "--params-by-account",
    "params_file",
    metavar="PATH",
    help="JSON file mapping account id -> its own params (with a selection)",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="a parameter of every target (repeatable)",
)
@click.option(
    "--target-param",
    "target_params",
    multiple=True,
    metavar="ACCOUNT:KEY=VALUE",
    help="a parameter for one account only (e.g. its distribution_id)",
)
@click.option("--file", metavar="PATH", help="a prepared body, v1 or legacy ('-' reads stdin)")
@click.option("--request-id", metavar="ID", help="default: a new UUID")
@click.option("--dry-run", is_flag=True, help="the worker checks but does nothing")
@click.option(
    "--canary",
    is_flag=True,
    help="run the first target alone; the others only after it succeeded",
)
@click.option(
    "--max-errors",
    type=MaxErrors(),
    help="stop fanning out once more targets than this (a count, or a percentage) failed",
)
@click.option(
    "--max-concurrency",
    type=ConcurrencyCap(),
    help="at most this many of the request's targets in flight at once, across every worker "
    "instance: a count (1-1,000), or a percentage of its targets (rounded up, at least 1). "
    "Not SSM's own max_concurrency parameter, which --param sets per command",
)
@click.option(
    "--ramp",
    type=click.Choice(["exponential"]),
    help="start targets in waves of 1, 2, 4, ... up to --max-concurrency, each once the one "
    "before it ended (within --max-errors)",
)
@click.option(
    "--region-order",
    metavar="REGIONS",
    help="comma-separated regions to roll out one after another: a region's targets start "
    "once every target of the regions before it ended (within --max-errors); regions not "
    "listed go last, together",
)
@click.option(
    "--alarms",
    metavar="NAMES",
    help="comma-separated CloudWatch alarms (worker's account and region): one in ALARM stops "
    "the request; its targets not started end 'not run: alarm NAME'",
)
@click.option(
    "--on-alarm-unreadable",
    type=click.Choice(["stop", "continue"]),
    help="when the alarms cannot be read (or one does not exist) [worker default: stop]",
)
@click.option(
    "--force",
    is_flag=True,
    help="send even to accounts ALLOWED_ACCOUNT_IDS does not list (the worker refuses them)",
)
@click.option(
    "--republish",
    is_flag=True,
    help="send even when the ledger already has this request id (what ended runs nothing)",
)
@click.option(
    "--max-targets",
    type=click.IntRange(min=1),
    default=MAX_TARGETS_PER_MESSAGE,
    show_default=True,
    help="targets per message; more are split across messages with one request id",
)
@queue_url_option("--queue-url", envvar=QUEUE_URL_ENV, help_text="the work queue")
@region_option()
@output_option(("table", "json"))
def command(
    *,
    task: str | None,
    accounts: str | None,
    regions: str | None,
    ous: str | None,
    include_child_ous: bool,
    account_tags: tuple[str, ...],
    exclude_accounts: str | None,
    params_file: str | None,
    params: tuple[str, ...],
    target_params: tuple[str, ...],
    file: str | None,
    request_id: str | None,
    dry_run: bool,
    canary: bool,
    max_errors: int | str | None,
    max_concurrency: int | str | None,
    ramp: str | None,
    region_order: str | None,
    alarms: str | None,
    on_alarm_unreadable: str | None,
    force: bool,
    republish: bool,
    max_targets: int,
    queue_url: str | None,
    region: str | None,
    output: str,
) -> int:
    """Build envelope v1 messages (or send a prepared body), validate them exactly as the
    worker will, and send them in batches of 10. Nothing is sent if any is invalid.

    A --param value is JSON when it parses, else text; a repeated key makes a list. For a list
    parameter, a comma separates items (paths=/a,/b); to keep a comma inside an item, give a
    JSON list: 'paths=["/a,b"]'. --dry-run, --canary, --max-errors, --max-concurrency,
    --ramp, --region-order and --alarms set the envelope's options. Prints the request id and the
    `fanout status` command that follows it.
    """
    resolved_region = resolve_region(region, queue_url)
    progress = console.Progress("publish")
    selection = Selection(ous, include_child_ous, account_tags, exclude_accounts, params_file)
    try:
        bodies = _bodies(
            selection=selection,
            task=task,
            file=file,
            accounts=accounts,
            regions=regions,
            params=params,
            target_params=target_params,
            request_id=request_id,
            options={
                "dry_run": dry_run,
                "canary": canary,
                "max_errors": max_errors,
                "max_concurrency": max_concurrency,
                "ramp": ramp,
                "region_order": split_list(region_order),
                "alarms": split_list(alarms),
                "on_alarm_unreadable": on_alarm_unreadable,
            },
            max_targets=max_targets,
            region=resolved_region,
        )
        result = _send(
            bodies,
            queue_url,
            resolved_region,
            force=force,
            republish=republish,
            progress=progress,
        )
    except PublishError as exc:
        raise CliError(exc.reason) from None
    except OSError as exc:
        raise CliError(str(exc)) from None
    except SendError as exc:
        raise CliError(f"{exc.reason}; sent before the failure: {exc.sent}", EXIT_FAILED) from None
    except (BotoCoreError, ClientError) as exc:
        raise CliError(f"nothing sent: {aws_error(exc)}", EXIT_FAILED) from None
    finally:
        progress.close()
    _print_result(result, queue_url or "", output)
    return EXIT_OK


class Selection(NamedTuple):
    """The selection flags (targets by organisation)."""

    ous: str | None
    include_child_ous: bool
    account_tags: tuple[str, ...]
    exclude_accounts: str | None
    params_file: str | None

    @property
    def given(self) -> bool:
        return bool(self.ous or self.account_tags)


def _bodies(
    *,
    selection: Selection,
    task: str | None,
    file: str | None,
    accounts: str | None,
    regions: str | None,
    params: tuple[str, ...],
    target_params: tuple[str, ...],
    request_id: str | None,
    options: dict[str, Any],
    max_targets: int,
    region: str,
) -> list[str]:
    """The message bodies the arguments ask for; :class:`PublishError` when they are unusable."""
    if selection.given or selection.exclude_accounts or selection.params_file:
        if file is not None or task is None:
            raise PublishError("a selection (--ous, --account-tag) needs a TASK, not --file")
        if not selection.given:
            raise PublishError(
                "--exclude-accounts and --params-by-account need --ous or --account-tag"
            )
        return [
            build_selection_body(
                task,
                ous=selection.ous,
                include_child_ous=selection.include_child_ous,
                account_tags=selection.account_tags,
                exclude_accounts=selection.exclude_accounts,
                accounts=accounts,
                regions=regions,
                params=params,
                target_params=target_params,
                params_by_account=_params_file(selection.params_file),
                request_id=request_id,
                **options,
            )
        ]
    if selection.include_child_ous:
        raise PublishError("--include-child-ous needs --ous")
    if file is None:
        if task is None:
            raise PublishError("give a TASK (with --accounts or --ous) or --file")
        if not accounts:
            raise PublishError("--accounts is required with TASK")
        return build_bodies(
            task,
            accounts=accounts,
            regions=regions,
            params=params,
            target_params=target_params,
            request_id=request_id,
            max_targets=max_targets,
            default_region=region,
            **options,
        )
    if task is not None:
        raise PublishError("give a TASK or --file, not both")
    if accounts or regions or params or target_params:
        raise PublishError("--file takes the targets and params from the body")
    text = sys.stdin.read() if file == "-" else Path(file).read_text("utf-8")
    return bodies_from_document(
        text,
        request_id=request_id,
        max_targets=max_targets,
        default_region=region,
        source="stdin" if file == "-" else file,
        **options,
    )


def _params_file(path: str | None) -> dict[str, Any] | None:
    """--params-by-account: a JSON object of account id -> params object."""
    if path is None:
        return None
    try:
        document = json.loads(Path(path).read_text("utf-8"))
    except ValueError as exc:
        raise PublishError(f"--params-by-account {path} is not JSON: {exc}") from None
    if not isinstance(document, dict) or not all(isinstance(v, dict) for v in document.values()):
        raise PublishError(
            f"--params-by-account {path} must be a JSON object of account id -> params object"
        )
    return document


def _send(
    bodies: list[str],
    queue_url: str | None,
    region: str,
    *,
    force: bool,
    republish: bool,
    progress: console.Progress,
) -> PublishResult:
    """Validate (and check the allow-list unless ``force``, and the ledger for the request ids
    unless ``republish``), then send to the queue."""
    # A bad task is reported as such even before the queue is known.
    envelopes = validate_bodies(bodies, default_region=region)
    if not force:
        _check_allowed(envelopes)
    _check_new(envelopes, region, republish=republish)
    if not queue_url:
        raise PublishError(f"--queue-url is required (or set {QUEUE_URL_ENV})")
    large = len(bodies) > PROGRESS_MIN_MESSAGES
    return publish(
        bodies,
        sqs=boto3.client("sqs", region_name=region),
        queue_url=queue_url,
        default_region=region,
        progress=progress.update if large else None,
    )


def _check_allowed(envelopes: Sequence[api.Envelope]) -> None:
    """Refuse accounts the worker would dead-letter, as far as this environment tells."""
    try:
        settings = api.operator_settings()
    except api.ConfigurationError as exc:
        raise CliError(f"{exc.reason} (--force skips the allow-list check)") from None
    refused = refused_accounts(envelopes, settings)
    if refused:
        named = ", ".join(refused[:5]) + (
            f" and {len(refused) - 5} more" if len(refused) > 5 else ""
        )
        raise CliError(
            f"ALLOWED_ACCOUNT_IDS does not list {named}: the worker would dead-letter "
            "those targets; nothing sent (--force sends anyway)"
        )


def _check_new(envelopes: Sequence[api.Envelope], region: str, *, republish: bool) -> None:
    """A request id the ledger knows already: its ended targets would run nothing again (a
    re-publish is taken for the publisher's retry). Refuse, unless ``republish``; say so when
    the ledger cannot be read."""
    try:
        table = api.operator_settings().ledger_table
    except api.ConfigurationError:
        return  # _check_allowed reports a bad configuration
    ids = sorted({e.request_id for e in envelopes if not e.legacy})
    if not table or not ids:
        return
    try:
        source = api.status_source(table, lambda: boto3.client("dynamodb", region_name=region))
        known = source.requests.requests(ids)
    except (BotoCoreError, ClientError) as exc:
        console.note(f"could not check the ledger for these request ids: {aws_error(exc)}")
        return
    for request_id, record in sorted(known.items()):
        what = (
            f"request {request_id} exists already ({record.outcome}, "
            f"{record.ended_total} of {record.expected} targets ended): its targets that ended "
            "run nothing again. Use 'fanout redrive' for its dead letters, or a new --request-id"
        )
        if not republish:
            raise CliError(f"{what}; nothing sent (--republish sends anyway)")
        console.note(what)


def _print_result(result: PublishResult, queue_url: str, output: str) -> None:
    follow = [f"fanout status {shlex.quote(rid)} --watch" for rid in result.request_ids]
    if output == "json":
        console.print_json(
            {
                "request_ids": list(result.request_ids),
                "message_ids": list(result.message_ids),
                "messages": len(result.message_ids),
                "jobs": result.jobs,
                "selections": result.selections,
                "queue_url": queue_url,
                "follow": follow,
            }
        )
        return
    for request_id in result.request_ids:
        print(f"request id: {request_id}")
    if result.selections:
        explicit = f" and {result.jobs} explicit job(s)" if result.jobs else ""
        print(
            f"sent a selection{explicit} to {queue_url}: the worker expands it through AWS "
            "Organizations (preview with fanout targets)"
        )
    else:
        print(f"sent {len(result.message_ids)} message(s), {result.jobs} job(s), to {queue_url}")
    for command in follow:
        print(f"follow it:  {command}")
