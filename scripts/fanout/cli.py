"""The ``fanout`` command: ``demo``, ``emulator``, ``publish``, ``poll``, ``status``, ``redrive``,
``tasks``, ``policy``.

Exit codes (the same for every verb): 0 done; 1 some targets failed or are still pending, or
AWS refused part of the work; 2 usage or validation error, unknown request (nothing was done).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import shlex
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from fanout import console
from fanout.catalog import (
    describe_params,
    markdown,
    rate_text,
    replace_readme_section,
    task_dict,
    to_yaml,
)
from fanout.publish import (
    MAX_TARGETS_PER_MESSAGE,
    PublishError,
    SendError,
    bodies_from_document,
    build_bodies,
    publish,
    validate_bodies,
)
from fanout.redrive import DeadLetter, Filters, RedriveResult, redrive
from fanout.status import (
    DEFAULT_ROLE_NAME,
    Outcome,
    Refresh,
    StatusReport,
    TargetSessions,
    ledger_for,
    read_status,
)
from handler.credentials import partition_of
from handler.exceptions import PermanentError
from handler.policy import session_policy, target_role_statements
from tasks.registry import all_tasks, get_task

__all__ = ["main"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
QUEUE_URL_ENV: Final = "FANOUT_QUEUE_URL"
DLQ_URL_ENV: Final = "FANOUT_DLQ_URL"
LEDGER_TABLE_ENV: Final = "LEDGER_TABLE"
DEFAULT_REGION: Final = "us-east-1"
# Publishes of more messages than this draw a progress bar (on a terminal).
PROGRESS_MIN_MESSAGES: Final = 50
# Table mode cuts the last error to this many characters (json keeps it whole).
ERROR_COLUMN: Final = 60
# The CLI's own loggers: not under "fanout", which is the worker's Powertools logger (its
# service name), whose JSON handler would otherwise swallow them.
LOGGER: Final = "fanout_local"
_SQS_HOST_RE = re.compile(r"^https://sqs[.-]([a-z0-9-]+)\.amazonaws\.com")
_ACCOUNT_RE = re.compile(r"^[0-9]{12}$")

EXIT_CODES_HELP: Final = """\
exit codes (every verb):
  0  done: every message sent / every target succeeded / every dead letter moved
  1  some targets failed or are still pending, or AWS refused part of the work
  2  usage or validation error, unknown request id: nothing was done

environment:
  FANOUT_QUEUE_URL, FANOUT_DLQ_URL  default --queue-url / --to and --from
  LEDGER_TABLE                      default --table of `fanout status`
  AWS_REGION, AWS_ENDPOINT_URL      as for every boto3 client (the emulator sets both)
  NO_COLOR                          no colours (they are only used on a terminal anyway)"""


class _Formatter(argparse.HelpFormatter):
    """Wraps prose (descriptions); keeps text with line breaks (the examples) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (``fanout: error: ...``), exit code 2."""

    def error(self, message: str) -> NoReturn:
        console.error(f"{message} (see '{self.prog} --help')")
        raise SystemExit(EXIT_USAGE)


class CliError(Exception):
    """Stops a verb: ``main`` prints ``fanout: error: <reason>`` and exits with ``code``."""

    def __init__(self, reason: str, code: int = EXIT_USAGE) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


def resolve_region(explicit: str | None, queue_url: str | None = None) -> str:
    """--region, else the region in an AWS queue URL, else AWS_REGION/AWS_DEFAULT_REGION."""
    if explicit:
        return explicit
    match = _SQS_HOST_RE.match(queue_url or "")
    if match:
        return match.group(1)
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def _queue_url(args: argparse.Namespace) -> str:
    url: str | None = args.queue_url or os.environ.get(QUEUE_URL_ENV)
    if not url:
        raise PublishError(f"--queue-url is required (or set {QUEUE_URL_ENV})")
    return url


def _error(reason: str, code: int = EXIT_USAGE) -> int:
    console.error(reason)
    return code


def _print_json(document: Any) -> None:
    print(json.dumps(document, indent=2, default=str))


def _aws_error(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', '?')}: {error.get('Message', '')}".strip()
    return str(exc)


def _progress_callback(progress: console.Progress) -> Callable[[int, int], None]:
    def update(done: int, total: int) -> None:
        progress.update(done, total)

    return update


# --- fanout demo ------------------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    from fanout.demo import run_demo  # noqa: PLC0415 - imports the worker; only for this verb

    return run_demo(log_level=args.log_level, time_limit_s=args.time_limit)


# --- fanout emulator --------------------------------------------------------------------------


def _cmd_emulator(args: argparse.Namespace) -> int:
    from fanout.emulator import seed_organisation, start_emulator  # noqa: PLC0415 - loads moto

    accounts = tuple(a.strip() for a in args.accounts.split(",") if a.strip())
    with start_emulator(port=args.port) as emulator:
        org = seed_organisation(
            emulator.endpoint_url,
            accounts,
            args.region,
            visibility_timeout=args.visibility_timeout,
            max_receive_count=args.max_receive_count,
        )
        environment = {
            **org.handler_environment(),
            QUEUE_URL_ENV: org.queue_url,
            DLQ_URL_ENV: org.dlq_url,
        }
        print(f"# fanout emulator at {org.endpoint_url}: ops account {org.ops_account}")
        for target in org.targets:
            print(
                f"#   {target.account}: distributions {' '.join(target.distribution_ids)}; "
                f"instances (Role=web) {' '.join(target.instance_ids)}"
            )
        for name, value in environment.items():
            print(f"export {name}={shlex.quote(value)}")
        first = org.targets[0] if org.targets else None
        if first is not None:
            print(
                "# try: fanout publish cloudfront.invalidate "
                f"--accounts {first.account} --param paths=/index.html "
                f"--target-param {first.account}:distribution_id={first.distribution_ids[0]}"
            )
        print("#      fanout poll --until-empty")
        print("#      fanout status REQUEST_ID --refresh")
        print("# Ctrl-C stops the emulator (its state is lost).", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("# stopped", file=sys.stderr)
    return EXIT_OK


# --- fanout publish ---------------------------------------------------------------------------


def _bodies(args: argparse.Namespace) -> list[str]:
    """The message bodies the arguments ask for; :class:`PublishError` when they are unusable."""
    if args.task is None and args.file is None:
        raise PublishError("give a TASK (with --accounts) or --file")
    if args.task is not None and args.file is not None:
        raise PublishError("give a TASK or --file, not both")
    if args.file is None:
        if not args.accounts:
            raise PublishError("--accounts is required with TASK")
        return build_bodies(
            args.task,
            accounts=args.accounts,
            regions=args.regions,
            params=args.param,
            target_params=args.target_param,
            request_id=args.request_id,
            dry_run=args.dry_run,
            max_targets=args.max_targets,
        )
    if args.accounts or args.regions or args.param or args.target_param:
        raise PublishError("--file takes the targets and params from the body")
    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text("utf-8")
    return bodies_from_document(
        text,
        request_id=args.request_id,
        dry_run=args.dry_run,
        max_targets=args.max_targets,
        default_region=resolve_region(args.region, args.queue_url),
    )


def _follow_command(request_id: str) -> str:
    return f"fanout status {shlex.quote(request_id)}"


def _cmd_publish(args: argparse.Namespace) -> int:
    progress = console.Progress("publish")
    try:
        bodies = _bodies(args)
        region = resolve_region(args.region, args.queue_url or os.environ.get(QUEUE_URL_ENV))
        # A bad task is reported as such even before the queue is known.
        validate_bodies(bodies, default_region=region)
        queue_url = _queue_url(args)
        sqs = boto3.client("sqs", region_name=region)
        large = len(bodies) > PROGRESS_MIN_MESSAGES
        result = publish(
            bodies,
            sqs=sqs,
            queue_url=queue_url,
            default_region=region,
            progress=_progress_callback(progress) if large else None,
        )
    except PublishError as exc:
        return _error(exc.reason)
    except OSError as exc:
        return _error(str(exc))
    except SendError as exc:
        return _error(f"{exc.reason}; sent before the failure: {exc.sent}", EXIT_FAILED)
    except (BotoCoreError, ClientError) as exc:
        return _error(f"nothing sent: {_aws_error(exc)}", EXIT_FAILED)
    finally:
        progress.close()
    follow = [_follow_command(request_id) for request_id in result.request_ids]
    if args.output == "json":
        _print_json(
            {
                "request_ids": list(result.request_ids),
                "message_ids": list(result.message_ids),
                "messages": len(result.message_ids),
                "jobs": result.jobs,
                "queue_url": queue_url,
                "follow": follow,
            }
        )
        return EXIT_OK
    for request_id in result.request_ids:
        print(f"request id: {request_id}")
    print(f"sent {len(result.message_ids)} message(s), {result.jobs} job(s), to {queue_url}")
    for command in follow:
        print(f"follow it:  {command}")
    return EXIT_OK


# --- fanout poll ------------------------------------------------------------------------------


def _cmd_poll(args: argparse.Namespace) -> int:
    from fanout.poller import MAX_BATCH, Poller  # noqa: PLC0415 - keeps --help fast

    try:
        queue_url = _queue_url(args)
    except PublishError as exc:
        return _error(exc.reason)
    if not 1 <= args.batch_size <= MAX_BATCH:
        return _error(f"--batch-size must be 1-{MAX_BATCH}")
    sqs = boto3.client("sqs", region_name=resolve_region(args.region, queue_url))
    poller = Poller(
        queue_url,
        sqs=sqs,
        batch_size=args.batch_size,
        wait_seconds=args.wait_seconds,
        function_timeout_s=args.function_timeout,
    )
    aws_error: str | None = None
    try:
        stats = poller.run(
            until_empty=args.until_empty,
            time_limit_s=args.time_limit if args.until_empty else None,
            max_batches=args.max_batches,
        )
    except KeyboardInterrupt:
        stats = poller.stats
    except (BotoCoreError, ClientError) as exc:
        aws_error = _aws_error(exc)
        stats = poller.stats
    failed = bool(aws_error or stats.timed_out or stats.handler_errors or stats.delete_failures)
    if aws_error:
        console.error(aws_error)
    if args.output == "json":
        _print_json({**dataclasses.asdict(stats), "summary": stats.summary(), "ok": not failed})
    else:
        print(f"poll: {stats.summary()}")
    return EXIT_FAILED if failed else EXIT_OK


# --- fanout status ----------------------------------------------------------------------------


def _status_table(report: StatusReport, *, refreshed: bool, colour: bool) -> str:
    hues = {Outcome.SUCCEEDED: "green", Outcome.FAILED: "red", Outcome.PENDING: "yellow"}
    headers = ["account", "region", "task", "state", "attempts", "result id", "last error"]
    if refreshed:
        headers.insert(6, "remote status")
    rows: list[list[console.Cell]] = []
    for target in report.targets:
        record = target.record
        state_hue = hues[target.ledger_outcome]
        row: list[console.Cell] = [
            record.account,
            record.region,
            record.task,
            (record.state.value, state_hue),
            str(record.attempts),
            record.result_id or "-",
            console.one_line(
                f"{record.error_class}: {record.last_error}"
                if record.error_class and record.last_error
                else record.last_error,
                ERROR_COLUMN,
            )
            or "-",
        ]
        if refreshed:
            remote = target.remote
            text = remote.text if remote else "-"
            row.insert(6, (text, hues[remote.outcome]) if remote and remote.outcome else text)
        rows.append(row)
    return console.render_table(headers, rows, colour=colour)


def _summary(report: StatusReport) -> str:
    counts = ", ".join(f"{report.count(o)} {o.value}" for o in Outcome)
    return f"request {report.request_id}: {len(report.targets)} target(s): {counts}"


def _which(report: StatusReport) -> str:
    """'1 failed: 2222.../us-east-1; 2 pending: ...' for the exit-1 line on stderr."""
    parts = []
    for outcome in (Outcome.FAILED, Outcome.PENDING):
        targets = report.of(outcome)
        if targets:
            names = ", ".join(t.target for t in targets[:10])
            more = f" and {len(targets) - 10} more" if len(targets) > 10 else ""
            parts.append(f"{len(targets)} {outcome.value}: {names}{more}")
    return "; ".join(parts)


def _refresher(args: argparse.Namespace, region: str) -> Refresh | None:
    if not args.refresh:
        return None
    role_name = args.role_name or os.environ.get("TARGET_ROLE_NAME", "").strip()
    return Refresh(
        TargetSessions(
            role_name=role_name or DEFAULT_ROLE_NAME,
            role_path=os.environ.get("TARGET_ROLE_PATH", "").strip() or "/",
            external_id=os.environ.get("EXTERNAL_ID", "").strip() or None,
            region=region,
            request_id=args.request_id,
        )
    )


def _read_until_done(args: argparse.Namespace, table: str, region: str) -> StatusReport:
    """One read, or with --watch reads until every target is final (or --timeout, Ctrl-C)."""
    ledger = ledger_for(table, region=region)
    refresh = _refresher(args, region)
    progress = console.Progress("status", enabled=None if args.watch else False)
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    report = StatusReport(args.request_id, ())
    try:
        while True:
            report = read_status(ledger, args.request_id, refresh)
            if not args.watch or report.finished:
                break
            done = report.count(Outcome.SUCCEEDED) + report.count(Outcome.FAILED)
            note = (
                f"{report.count(Outcome.FAILED)} failed, {report.count(Outcome.PENDING)} pending"
                if report.targets
                else "waiting for the first ledger record"
            )
            progress.update(done, len(report.targets), note, force=True)
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        raise CliError(
            f"cannot read the ledger table {table}: {_aws_error(exc)}",
            EXIT_USAGE if code == "ResourceNotFoundException" else EXIT_FAILED,
        ) from exc
    except BotoCoreError as exc:
        raise CliError(f"cannot read the ledger table {table}: {exc}", EXIT_FAILED) from exc
    finally:
        progress.close()
    return report


def _cmd_status(args: argparse.Namespace) -> int:
    table = args.table or os.environ.get(LEDGER_TABLE_ENV, "").strip()
    if not table:
        raise CliError(f"--table is required (or set {LEDGER_TABLE_ENV})")
    if args.interval <= 0:
        raise CliError("--interval must be positive")
    report = _read_until_done(args, table, resolve_region(args.region))
    if not report.targets:
        raise CliError(
            f"no ledger records for request {args.request_id} in table {table}: an unknown id, "
            "not processed yet, a dry run, or refused before it ran (see "
            f"'fanout redrive --dry-run --filter-request-id {args.request_id}')"
        )
    if args.output == "json":
        _print_json({**report.as_dict(), "table": table})
    else:
        print(_status_table(report, refreshed=args.refresh, colour=console.use_color(sys.stdout)))
        print()
        print(_summary(report))
    if report.finished and not report.count(Outcome.FAILED):
        return EXIT_OK
    print(f"fanout: not all succeeded: {_which(report)}", file=sys.stderr)
    return EXIT_FAILED


# --- fanout redrive ---------------------------------------------------------------------------


def _redrive_table(result: RedriveResult, colour: bool) -> str:
    hues = {"move": "green", "would move": "green", "skip": "dim", "failed": "red", "left": "dim"}
    rows: list[list[console.Cell]] = []

    def add(action: str, letter: DeadLetter) -> None:
        rows.append(
            [
                (action, hues.get(action, "")),
                letter.message_id,
                letter.task or "-",
                letter.request_id or "-",
                letter.error_class or "-",
                console.one_line(letter.reason, ERROR_COLUMN) or "-",
            ]
        )

    for letter in result.moved:
        add("would move" if result.dry_run else "move", letter)
    for letter, _ in result.failed:
        add("failed", letter)
    for letter in result.not_moved:
        add("left", letter)
    for letter in result.skipped:
        add("skip", letter)
    headers = ["action", "message id", "task", "request id", "error class", "reason"]
    return console.render_table(headers, rows, colour=colour)


def _redrive_queues(args: argparse.Namespace) -> tuple[str, str]:
    source = args.source or os.environ.get(DLQ_URL_ENV)
    destination = args.destination or os.environ.get(QUEUE_URL_ENV)
    if not source:
        raise CliError(f"--from is required (or set {DLQ_URL_ENV})")
    if not destination:
        raise CliError(f"--to is required (or set {QUEUE_URL_ENV})")
    if source == destination:
        raise CliError("--from and --to name the same queue")
    if source.endswith(".fifo") or destination.endswith(".fifo"):
        raise CliError("FIFO queues are not supported (the fanout queues are standard queues)")
    if args.max is not None and args.max < 1:
        raise CliError("--max must be at least 1")
    return source, destination


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
        print(_redrive_table(result, console.use_color(sys.stdout)))
        print()
    verb = "would move" if result.dry_run else "moved"
    print(
        f"{verb} {len(result.moved)}, skipped {len(result.skipped)} (not matching), "
        f"left {len(result.not_moved)} (over --max), failed {len(result.failed)}: "
        f"{result.source_url} -> {result.destination_url}"
        + (" (dry run: nothing changed)" if result.dry_run else "")
    )


def _cmd_redrive(args: argparse.Namespace) -> int:
    source, destination = _redrive_queues(args)
    region = resolve_region(args.region, source)
    sqs = boto3.client("sqs", region_name=region)
    # No retries: an endpoint without the move task answers 5xx, which botocore would retry.
    move_sqs = boto3.client(
        "sqs", region_name=region, config=Config(retries={"total_max_attempts": 1})
    )
    progress = console.Progress("redrive")
    try:
        result = redrive(
            sqs,
            source,
            destination,
            filters=Filters(args.filter_task, args.filter_reason, args.filter_request_id),
            max_messages=args.max,
            dry_run=args.dry_run,
            force_loop=args.loop,
            move_sqs=move_sqs,
            progress=_progress_callback(progress),
        )
    except (BotoCoreError, ClientError) as exc:
        raise CliError(f"redrive stopped: {_aws_error(exc)}", EXIT_FAILED) from exc
    finally:
        progress.close()
    if result.note:
        print(f"fanout: note: {result.note}", file=sys.stderr)
    if args.output == "json":
        _print_json(result.as_dict())
    else:
        _print_redrive(result)
    return EXIT_FAILED if result.failed else EXIT_OK


# --- fanout tasks / policy --------------------------------------------------------------------


def _cmd_tasks(args: argparse.Namespace) -> int:
    tasks = all_tasks()
    if args.update_readme:
        path = Path(args.update_readme)
        try:
            text = path.read_text("utf-8")
            path.write_text(replace_readme_section(text, markdown(tasks)), "utf-8")
        except (OSError, ValueError) as exc:
            return _error(str(exc))
        print(f"updated the plugin section of {path}")
        return EXIT_OK
    if args.output == "json":
        _print_json([task_dict(task) for task in tasks])
    elif args.output == "markdown":
        sys.stdout.write(markdown(tasks))
    else:
        rows: list[list[console.Cell]] = [
            [
                task.name,
                ", ".join(p.name + ("*" if p.required else "") for p in describe_params(task)),
                ", ".join(task.iam_actions),
                rate_text(task.rate),
            ]
            for task in tasks
        ]
        headers = ["task", "parameters (* required)", "IAM actions", "rate"]
        print(console.render_table(headers, rows))
    return EXIT_OK


def _cmd_policy(args: argparse.Namespace) -> int:
    if (args.session is None) != (args.account is None):
        return _error("--session and --account go together")
    if args.region and args.session is None:
        return _error("--region needs --session")
    if args.session is None:
        document: dict[str, Any] = {
            "Version": "2012-10-17",
            "Statement": target_role_statements(all_tasks()),
        }
        if args.output == "yaml":
            shaped = {"PolicyName": "fanout-tasks", "PolicyDocument": document}
            sys.stdout.write(to_yaml(shaped, sub=True))
        else:
            _print_json(document)
        return EXIT_OK
    if not _ACCOUNT_RE.match(args.account):
        return _error(f"--account must be 12 digits, got {args.account!r}")
    try:
        task = get_task(args.session)
    except PermanentError as exc:
        return _error(exc.reason)
    region = resolve_region(args.region)
    policy = json.loads(session_policy(task, partition_of(region), args.account))
    if args.output == "yaml":
        sys.stdout.write(to_yaml(policy))
    else:
        _print_json(policy)
    return EXIT_OK


# --- the parser -------------------------------------------------------------------------------


def _verb(
    commands: Any, name: str, *, help_text: str, description: str, epilog: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=help_text,
        description=description,
        epilog=epilog,
        formatter_class=_Formatter,
    )
    return parser


def _output(parser: argparse.ArgumentParser, choices: Sequence[str]) -> None:
    parser.add_argument(
        "--output",
        "-o",
        choices=list(choices),
        default=choices[0],
        help=f"{' or '.join(choices)} (default {choices[0]})",
    )


def _add_demo_and_emulator(commands: Any) -> None:
    demo = _verb(
        commands,
        "demo",
        help_text="end-to-end run on an embedded emulator, with a report per account",
        description="Start an embedded AWS emulator with an ops account and three target "
        "accounts, publish a realistic workload (CloudFront invalidations, a legacy message, an "
        "SSM command, a poison message), run the real handler through the local poller, and "
        "check the effects in every account.",
        epilog="examples:\n  fanout demo\n  fanout demo --log-level INFO   # with the audit log",
    )
    demo.add_argument("--log-level", default="WARNING", help="the worker's log level")
    demo.add_argument("--time-limit", type=float, default=50.0, help="seconds for the poller")
    demo.set_defaults(run=_cmd_demo)

    emulator = _verb(
        commands,
        "emulator",
        help_text="start the embedded emulator with a seeded organisation; print variables",
        description="Start moto on 127.0.0.1, seed the ops account (work queue + DLQ + ledger "
        "table) and the target accounts (distributions, instances), print the environment the "
        "worker and the CLI need, and run until Ctrl-C.",
        epilog="example:\n  fanout emulator --port 5000\n"
        "  # in another shell: paste the export lines, then\n"
        "  fanout publish ... && fanout poll --until-empty && fanout status REQUEST_ID",
    )
    emulator.add_argument("--port", type=int, default=0, help="0 picks a free port")
    emulator.add_argument(
        "--accounts",
        default="111111111111,222222222222,333333333333",
        help="target accounts to seed",
    )
    emulator.add_argument("--region", default=DEFAULT_REGION)
    emulator.add_argument("--visibility-timeout", type=int, default=5, help="seconds")
    emulator.add_argument("--max-receive-count", type=int, default=3, help="redrive after")
    emulator.set_defaults(run=_cmd_emulator)


def _add_publish_and_poll(commands: Any) -> None:
    pub = _verb(
        commands,
        "publish",
        help_text="validate a task with the worker's own parser and send it",
        description="Build envelope v1 messages (or send a prepared body), validate them exactly "
        "as the worker will, and send them in batches of 10. Nothing is sent if any is invalid. "
        "A --param value is JSON when it parses, else text; a repeated key makes a list. "
        "Prints the request id and the `fanout status` command that follows it.",
        epilog="examples:\n"
        "  fanout publish cloudfront.invalidate --accounts 111111111111,222222222222 \\\n"
        "      --param paths=/index.html --param 'paths=/img/*' \\\n"
        "      --target-param 111111111111:distribution_id=E2QWRUHEXAMPLE \\\n"
        "      --target-param 222222222222:distribution_id=E1B2C3D4EXAMPLE\n"
        "  fanout publish ssm.send_command --accounts 111111111111 \\\n"
        "      --param document_name=AWS-RunShellScript "
        '--param \'parameters={"commands":["uptime"]}\' \\\n'
        '      --param \'targets=[{"key":"tag:Role","values":["web"]}]\'\n'
        "  fanout publish --file body.json --queue-url https://sqs.eu-west-1.amazonaws.com/...\n"
        "  fanout tasks    # every task, its parameters and IAM actions",
    )
    pub.add_argument(
        "task", nargs="?", metavar="TASK", help="task name, e.g. cloudfront.invalidate"
    )
    pub.add_argument("--accounts", help="comma-separated target account ids")
    pub.add_argument("--regions", help="comma-separated regions (default: the worker's region)")
    pub.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    pub.add_argument(
        "--target-param",
        action="append",
        default=[],
        metavar="ACCOUNT:KEY=VALUE",
        help="a parameter for one account only (e.g. its distribution_id)",
    )
    pub.add_argument("--file", help="a prepared body, v1 or legacy ('-' reads stdin)")
    pub.add_argument("--request-id", help="default: a new UUID")
    pub.add_argument("--dry-run", action="store_true", help="the worker checks but does nothing")
    pub.add_argument(
        "--max-targets",
        type=int,
        default=MAX_TARGETS_PER_MESSAGE,
        help="targets per message; more are split across messages with one request id",
    )
    pub.add_argument("--queue-url", help=f"default: ${QUEUE_URL_ENV}")
    pub.add_argument("--region", help="default: from the queue URL, else $AWS_REGION")
    _output(pub, ("table", "json"))
    pub.set_defaults(run=_cmd_publish)

    poll = _verb(
        commands,
        "poll",
        help_text="local stand-in for the Lambda SQS event source, calling the real handler",
        description="Receive batches, call handler.app.lambda_handler with a Lambda-shaped event "
        "and context, delete what succeeded and leave reported failures to the visibility "
        "timeout and the redrive policy. Runs until Ctrl-C, or with --until-empty until the "
        "queue holds nothing (in flight included).",
        epilog="example:\n  fanout poll --queue-url $FANOUT_QUEUE_URL --until-empty",
    )
    poll.add_argument("--queue-url", help=f"default: ${QUEUE_URL_ENV}")
    poll.add_argument("--region", help="default: from the queue URL, else $AWS_REGION")
    poll.add_argument("--until-empty", action="store_true")
    poll.add_argument("--time-limit", type=float, default=120.0, help="seconds, with --until-empty")
    poll.add_argument("--batch-size", type=int, default=10, help="1-10")
    poll.add_argument("--wait-seconds", type=int, default=1, help="long-poll wait per receive")
    poll.add_argument(
        "--function-timeout", type=float, default=60.0, help="seconds the context reports"
    )
    poll.add_argument("--max-batches", type=int, help="stop after this many batches")
    _output(poll, ("table", "json"))
    poll.set_defaults(run=_cmd_poll)


def _add_status_and_redrive(commands: Any) -> None:
    status = _verb(
        commands,
        "status",
        help_text="per-target state of a request, from the ledger",
        description="One row per target from the worker's DynamoDB ledger: account, region, "
        "task, state, attempts, result id, last error. --refresh asks each target account for "
        "the final state of the submitted work (CloudFront invalidation, SSM command) through "
        "the target role (TARGET_ROLE_NAME, TARGET_ROLE_PATH, EXTERNAL_ID; your credentials must "
        "be allowed to assume it). --watch re-reads until every target succeeded or failed. "
        "Targets refused before they ran (bad input, account not allowed) and dry runs have no "
        "ledger record: they are in the dead-letter queue.",
        epilog="examples:\n"
        "  fanout status 3f2a9c1e-...                      # table; exit 0 when all succeeded\n"
        "  fanout status 3f2a9c1e-... --refresh --watch    # until invalidations complete\n"
        "  fanout status release-42 --table fanout-prod-LedgerTable-ABC --output json\n"
        "exit codes: 0 all succeeded, 1 some failed or still pending (named on stderr),\n"
        "            2 unknown request (no ledger record) or usage error",
    )
    status.add_argument("request_id", metavar="REQUEST_ID")
    status.add_argument("--table", help=f"the ledger table (default: ${LEDGER_TABLE_ENV})")
    status.add_argument("--region", help="region of the table (default: $AWS_REGION)")
    status.add_argument(
        "--refresh", action="store_true", help="ask the target accounts for the final state"
    )
    status.add_argument(
        "--role-name", help="role to assume for --refresh (default: $TARGET_ROLE_NAME)"
    )
    status.add_argument(
        "--watch", action="store_true", help="re-read until every target succeeded or failed"
    )
    status.add_argument(
        "--interval", type=float, default=5.0, help="seconds between reads with --watch"
    )
    status.add_argument("--timeout", type=float, help="stop watching after this many seconds")
    _output(status, ("table", "json"))
    status.set_defaults(run=_cmd_status)

    redrive = _verb(
        commands,
        "redrive",
        help_text="move dead letters back to the work queue, with filters and --dry-run",
        description="Without filters, start SQS's message-move task (server-side; it keeps "
        "message attributes as they are); where it is unavailable (the local emulator), the "
        "copy loop runs instead. With filters, --max or --loop, the copy loop: receive from the "
        "DLQ, send the body unchanged to the queue without the fanout.* attributes (reason, "
        "error class, the fanout.attempt counter: attempts start anew), delete from the DLQ "
        "only after the send succeeded. Messages that do not match stay in the DLQ and are "
        "made visible again. --filter-reason is a regular expression or a plain substring, "
        "searched in fanout.reason and fanout.error_class; --filter-task takes globs (ssm.*).",
        epilog="examples:\n"
        "  fanout redrive --from $FANOUT_DLQ_URL --to $FANOUT_QUEUE_URL --dry-run\n"
        "  fanout redrive --filter-task cloudfront.invalidate --filter-reason Throttl --dry-run\n"
        "  fanout redrive --filter-request-id release-42 --max 100\n"
        "  fanout redrive            # everything, with the move task",
    )
    redrive.add_argument("--from", dest="source", help=f"the DLQ URL (default: ${DLQ_URL_ENV})")
    redrive.add_argument(
        "--to", dest="destination", help=f"the work queue URL (default: ${QUEUE_URL_ENV})"
    )
    redrive.add_argument("--filter-task", metavar="TASK", help="task name or glob")
    redrive.add_argument("--filter-reason", metavar="REGEX", help="regex or substring")
    redrive.add_argument("--filter-request-id", metavar="ID")
    redrive.add_argument("--max", type=int, metavar="N", help="move at most N messages")
    redrive.add_argument(
        "--dry-run", action="store_true", help="list what would move; change nothing"
    )
    redrive.add_argument(
        "--loop", action="store_true", help="use the copy loop even without filters"
    )
    redrive.add_argument("--region", help="default: from the queue URL, else $AWS_REGION")
    _output(redrive, ("table", "json"))
    redrive.set_defaults(run=_cmd_redrive)


def _add_tasks_and_policy(commands: Any) -> None:
    tasks = _verb(
        commands,
        "tasks",
        help_text="list the task plugins: parameters, IAM actions, rate",
        description="Every registered plugin with its parameters (from its JSON Schema: name, "
        "type, required, description and constraints), the IAM actions its target role needs "
        "and the rate it keeps. --output markdown is the README's plugin section.",
        epilog="examples:\n"
        "  fanout tasks\n"
        "  fanout tasks --output json | jq '.[].name'\n"
        "  fanout tasks --update-readme README.md   # regenerate the README's section",
    )
    _output(tasks, ("table", "json", "markdown"))
    tasks.add_argument(
        "--update-readme",
        metavar="PATH",
        help="rewrite the section between the tasks markers of this file",
    )
    tasks.set_defaults(run=_cmd_tasks)

    policy = _verb(
        commands,
        "policy",
        help_text="print the target role's least-privilege policy, or a session policy",
        description="The target role's statements, derived from the plugins' declarations "
        "(what target-role.yaml grants): JSON, or YAML in the CloudFormation shape of "
        "target-role.yaml (!Sub strings). With --session, the session policy the worker passes "
        "on AssumeRole for that task and account.",
        epilog="examples:\n"
        "  fanout policy\n"
        "  fanout policy --output yaml      # paste under Policies: in target-role.yaml\n"
        "  fanout policy --session cloudfront.invalidate --account 111111111111",
    )
    _output(policy, ("json", "yaml"))
    policy.add_argument("--session", metavar="TASK", help="print the session policy for TASK")
    policy.add_argument("--account", metavar="ID", help="target account of --session")
    policy.add_argument("--region", help="region of --session (default: $AWS_REGION)")
    policy.set_defaults(run=_cmd_policy)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fanout",
        description="Publish fan-out tasks, follow them, work the dead-letter queue, and run "
        "the worker locally against an emulator.",
        epilog=EXIT_CODES_HELP,
        formatter_class=_Formatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo_and_emulator(commands)
    _add_publish_and_poll(commands)
    _add_status_and_redrive(commands)
    _add_tasks_and_policy(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fanout`` console script; returns the exit code."""
    # Locally the handler runs with POWERTOOLS_METRICS_DISABLED: its empty flush is not news.
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) and usage errors (2) return instead of exiting
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger(LOGGER).setLevel(logging.INFO)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except CliError as exc:
        console.error(exc.reason)
        return exc.code
