"""``fanout status``: the per-target state of a request, from the worker's ledger."""

from __future__ import annotations

import sys
import time

import click
from botocore.exceptions import BotoCoreError, ClientError
from rich.table import Column, Table

from fanout import console
from fanout.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_STILL_PENDING,
    EXIT_USAGE,
    CliError,
    aws_error,
)
from fanout.options import (
    LEDGER_TABLE_ENV,
    STATUS_ROLE_ENV,
    output_option,
    region_option,
    resolve_region,
)
from fanout.status import (
    Outcome,
    Refresh,
    StatusReport,
    TargetSessions,
    ledger_for,
    read_status,
)
from handler import api

# How many failed/pending targets the exit-1 line on stderr names.
NAMED_TARGETS = 10


@click.command(
    "status",
    epilog="""\b
examples:
  fanout status 3f2a9c1e-...                      # table; exit 0 when all succeeded
  fanout status 3f2a9c1e-... --refresh --watch    # until invalidations complete
  fanout status release-42 --table fanout-prod-LedgerTable-ABC --output json
exit codes: 0 all succeeded, 1 some failed or (without --watch) still pending (named on
            stderr), 2 unknown request or usage error, 3 --watch timed out with targets
            still pending (or the request not picked up yet)""",
)
@click.argument("request_id", metavar="REQUEST_ID")
@click.option(
    "--table", envvar=LEDGER_TABLE_ENV, show_envvar=True, metavar="NAME", help="the ledger table"
)
@region_option("region of the table (default: $AWS_REGION)")
@click.option("--refresh", is_flag=True, help="ask the target accounts for the final state")
@click.option(
    "--role-name",
    envvar=STATUS_ROLE_ENV,
    show_envvar=True,
    metavar="NAME",
    help="role for --refresh: target-role.yaml's status role (default: $TARGET_ROLE_NAME)",
)
@click.option("--watch", is_flag=True, help="re-read until every target succeeded or failed")
@click.option(
    "--interval",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="seconds between reads with --watch",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="stop watching after this many seconds",
)
@output_option(("table", "json"))
def command(
    *,
    request_id: str,
    table: str | None,
    region: str | None,
    refresh: bool,
    role_name: str | None,
    watch: bool,
    interval: float,
    timeout: float | None,
    output: str,
) -> int:
    """One row per target from the worker's DynamoDB ledger: account, region, task, state,
    attempts, result id, last error.

    --refresh asks each target account for the final state of the submitted work (CloudFront
    invalidation, SSM command) through the target role (TARGET_ROLE_NAME, TARGET_ROLE_PATH,
    EXTERNAL_ID; your credentials must be allowed to assume it). --watch re-reads until every
    target succeeded or failed. Targets refused before they ran (bad input, account not
    allowed) and dry runs have no ledger record: they are in the dead-letter queue.
    """
    table = (table or "").strip()
    if not table:
        raise CliError(f"--table is required (or set {LEDGER_TABLE_ENV})")
    resolved_region = resolve_region(region)
    refresher = _refresher(request_id, role_name, resolved_region) if refresh else None
    report = _read_until_done(
        request_id,
        table,
        resolved_region,
        refresher,
        watch=watch,
        interval=interval,
        timeout=timeout,
    )
    if not report.known:
        waited = f" after waiting {timeout:g} s" if watch and timeout is not None else ""
        raise CliError(
            f"no record of request {request_id} in table {table}{waited}: an unknown id, or "
            "not picked up by the worker yet (a message that is not valid JSON is dead-lettered "
            f"without one: see 'fanout redrive --dry-run --filter-request-id {request_id}')",
            EXIT_STILL_PENDING if watch else EXIT_USAGE,
        )
    if output == "json":
        console.print_json({**report.as_dict(), "table": table})
    else:
        console.render(_status_table(report, refreshed=refresh))
        print()
        print(_summary(report))
    if report.succeeded:
        return EXIT_OK
    if watch and not report.finished:
        print(f"fanout: still pending after --timeout: {_which(report)}", file=sys.stderr)
        return EXIT_STILL_PENDING
    print(f"fanout: not all succeeded: {_which(report)}", file=sys.stderr)
    return EXIT_FAILED


def _refresher(request_id: str, role_name: str | None, region: str) -> Refresh:
    """Sessions in the target accounts through the worker's target role (or --role-name)."""
    try:
        settings = api.operator_settings()
    except api.ConfigurationError as exc:
        raise CliError(exc.reason) from None
    role = role_name or settings.target_role_name
    if not role:
        raise CliError("--refresh needs --role-name (or TARGET_ROLE_NAME): the role to assume")
    return Refresh(
        TargetSessions(
            role_name=role,
            role_path=settings.target_role_path,
            external_id=settings.external_id,
            region=region,
            request_id=request_id,
        )
    )


def _read_until_done(
    request_id: str,
    table: str,
    region: str,
    refresh: Refresh | None,
    *,
    watch: bool,
    interval: float,
    timeout: float | None,
) -> StatusReport:
    """One read, or with --watch reads until every target is final (or --timeout, Ctrl-C)."""
    ledger = ledger_for(table, region=region)
    progress = console.Progress("status", enabled=None if watch else False)
    deadline = None if timeout is None else time.monotonic() + timeout
    report = StatusReport(request_id, ())
    try:
        while True:
            report = read_status(ledger, request_id, refresh)
            if not watch or report.finished:
                break
            done = report.count(Outcome.SUCCEEDED) + report.count(Outcome.FAILED)
            note = (
                f"{report.count(Outcome.FAILED)} failed, {report.count(Outcome.PENDING)} pending"
                if report.known
                else "waiting for the worker to pick the request up"
            )
            progress.update(done, report.expected, note)
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        raise CliError(
            f"cannot read the ledger table {table}: {aws_error(exc)}",
            EXIT_USAGE if code == "ResourceNotFoundException" else EXIT_FAILED,
        ) from exc
    except BotoCoreError as exc:
        raise CliError(f"cannot read the ledger table {table}: {exc}", EXIT_FAILED) from exc
    finally:
        progress.close()
    return report


def _status_table(report: StatusReport, *, refreshed: bool) -> Table:
    hues = {Outcome.SUCCEEDED: "green", Outcome.FAILED: "red", Outcome.PENDING: "yellow"}
    columns = [
        Column("account", no_wrap=True),
        Column("region", no_wrap=True),
        Column("task", no_wrap=True),
        Column("state", no_wrap=True),
        Column("attempts", justify="right"),
        Column("result id", overflow="fold"),
        # The error is the point of the table when a target failed: wrapped, never cut.
        Column("last error", overflow="fold"),
    ]
    if refreshed:
        columns.insert(6, Column("remote status"))
    table = console.table(*columns)
    for target in report.targets:
        record = target.record
        error = (
            f"{record.error_class}: {record.last_error}"
            if record.error_class and record.last_error
            else record.last_error
        )
        row: list[console.Cell] = [
            record.account,
            record.region,
            record.task,
            (record.state.value, hues[target.ledger_outcome]),
            str(record.attempts),
            record.result_id or "-",
            console.one_line(error) or "-",
        ]
        if refreshed:
            remote = target.remote
            text = remote.text if remote else "-"
            hue = hues[target.outcome] if remote and remote.progress else None
            row.insert(6, (text, hue) if hue else text)
        table.add_row(*console.cells(row))
    for queued in report.queued:
        row = [queued.account, queued.region, queued.task, ("queued", hues[Outcome.PENDING])]
        row += ["0", "-", "-"] + (["-"] if refreshed else [])
        table.add_row(*console.cells(row))
    return table


def _summary(report: StatusReport) -> str:
    counts = ", ".join(f"{report.count(o)} {o.value}" for o in Outcome)
    text = f"request {report.request_id} ({report.state}): {report.expected} target(s): {counts}"
    notes = report.request.notes if report.request else ()
    results = report.request.results_uri if report.request else None
    text += "".join(f"\nnote: {note}" for note in notes)
    rollout = report.rollout
    if rollout is not None:
        cap, given = rollout["cap"], rollout["max_concurrency"]
        shown = f"{given} ({cap})" if isinstance(given, str) else str(cap)
        ramp = ", ramping up to it in waves from 1 (doubling)" if rollout["ramp"] else ""
        if rollout["ramp"]:
            wave = rollout["wave"]
            ramp += (
                f", now wave {wave} (up to {rollout['wave_allows']} started)"
                if wave
                else ", now at the cap"
            )
        text += (
            f"\nrollout: at most {shown} in flight{ramp}; "
            f"{rollout['in_flight']} in flight now, {rollout['started']} started"
        )
    if report.regions:
        stages = ", ".join(
            f"{r['region']} {r['ended']}/{r['targets']} {r['state']}" for r in report.regions
        )
        text += f"\nregions in order: {stages}"
    return text + (f"\nresults: {results}" if results else "")


def _which(report: StatusReport) -> str:
    """'1 failed: 2222.../us-east-1; 2 pending: ...' for the exit-1 line on stderr."""
    parts = []
    for outcome in (Outcome.FAILED, Outcome.PENDING):
        targets = report.of(outcome)
        count = report.count(outcome)
        if count:
            names = ", ".join(t.target for t in targets[:NAMED_TARGETS])
            extra = count - min(len(targets), NAMED_TARGETS)
            more = (" and " if names else "") + f"{extra} more" if extra > 0 else ""
            parts.append(f"{count} {outcome.value}: {names}{more}")
    return "; ".join(parts)
