"""The ``fanout`` command: ``demo``, ``emulator``, ``publish``, ``poll``.

Exit codes: 0 ok; 1 some targets failed or expected effects are missing; 2 usage or validation
error (nothing was sent).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from fanout.publish import (
    MAX_TARGETS_PER_MESSAGE,
    PublishError,
    SendError,
    bodies_from_document,
    build_bodies,
    publish,
    validate_bodies,
)

__all__ = ["main"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
QUEUE_URL_ENV: Final = "FANOUT_QUEUE_URL"
DLQ_URL_ENV: Final = "FANOUT_DLQ_URL"
DEFAULT_REGION: Final = "us-east-1"
# The CLI's own loggers: not under "fanout", which is the worker's Powertools logger (its
# service name), whose JSON handler would otherwise swallow them.
LOGGER: Final = "fanout_local"
_SQS_HOST_RE = re.compile(r"^https://sqs[.-]([a-z0-9-]+)\.amazonaws\.com")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples in each epilog as written."""


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


def _error(command: str, reason: str) -> int:
    print(f"fanout {command}: error: {reason}", file=sys.stderr)
    return EXIT_USAGE


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


def _cmd_publish(args: argparse.Namespace) -> int:
    try:
        bodies = _bodies(args)
        region = resolve_region(args.region, args.queue_url or os.environ.get(QUEUE_URL_ENV))
        # A bad task is reported as such even before the queue is known.
        validate_bodies(bodies, default_region=region)
        queue_url = _queue_url(args)
        sqs = boto3.client("sqs", region_name=region)
        result = publish(bodies, sqs=sqs, queue_url=queue_url, default_region=region)
    except PublishError as exc:
        return _error("publish", exc.reason)
    except OSError as exc:
        return _error("publish", str(exc))
    except SendError as exc:
        print(f"fanout publish: {exc.reason}; sent before the failure: {exc.sent}", file=sys.stderr)
        return EXIT_FAILED
    except (BotoCoreError, ClientError) as exc:
        print(f"fanout publish: nothing sent: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for request_id in result.request_ids:
        print(f"request id: {request_id}")
    print(f"sent {len(result.message_ids)} message(s), {result.jobs} job(s), to {queue_url}")
    for request_id in result.request_ids:
        print(f"follow it:  fanout status {request_id}")
    return EXIT_OK


# --- fanout poll ------------------------------------------------------------------------------


def _cmd_poll(args: argparse.Namespace) -> int:
    from fanout.poller import MAX_BATCH, Poller  # noqa: PLC0415 - keeps --help fast

    try:
        queue_url = _queue_url(args)
    except PublishError as exc:
        return _error("poll", exc.reason)
    if not 1 <= args.batch_size <= MAX_BATCH:
        return _error("poll", f"--batch-size must be 1-{MAX_BATCH}")
    sqs = boto3.client("sqs", region_name=resolve_region(args.region, queue_url))
    poller = Poller(
        queue_url,
        sqs=sqs,
        batch_size=args.batch_size,
        wait_seconds=args.wait_seconds,
        function_timeout_s=args.function_timeout,
    )
    try:
        stats = poller.run(
            until_empty=args.until_empty,
            time_limit_s=args.time_limit if args.until_empty else None,
            max_batches=args.max_batches,
        )
    except KeyboardInterrupt:
        stats = poller.stats
    except (BotoCoreError, ClientError) as exc:
        print(f"fanout poll: {exc}", file=sys.stderr)
        stats = poller.stats
        print(f"poll: {stats.summary()}")
        return EXIT_FAILED
    print(f"poll: {stats.summary()}")
    failed = stats.timed_out or stats.handler_errors or stats.delete_failures
    return EXIT_FAILED if failed else EXIT_OK


# --- the parser -------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fanout",
        description="Publish fan-out tasks and run the worker locally against an emulator.",
        epilog="exit codes: 0 ok, 1 some targets failed or effects are missing, 2 usage error",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="end-to-end run on an embedded emulator, with a report per account",
        description="Start an embedded AWS emulator with an ops account and three target "
        "accounts, publish a realistic workload (CloudFront invalidations, a legacy message, an "
        "SSM command, a poison message), run the real handler through the local poller, and "
        "check the effects in every account.",
        epilog="example:\n  fanout demo\n  fanout demo --log-level INFO   # with the audit log",
        formatter_class=_Formatter,
    )
    demo.add_argument("--log-level", default="WARNING", help="the worker's log level")
    demo.add_argument("--time-limit", type=float, default=50.0, help="seconds for the poller")
    demo.set_defaults(run=_cmd_demo)

    emulator = commands.add_parser(
        "emulator",
        help="start the embedded emulator with a seeded organisation; print variables to export",
        description="Start moto on 127.0.0.1, seed the ops account (work queue + DLQ) and the "
        "target accounts (distributions, instances), print the environment the worker and the "
        "CLI need, and run until Ctrl-C.",
        epilog="example:\n  fanout emulator --port 5000\n"
        "  # in another shell: paste the export lines, then\n"
        "  fanout publish ... && fanout poll --until-empty",
        formatter_class=_Formatter,
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

    pub = commands.add_parser(
        "publish",
        help="validate a task with the worker's own parser and send it",
        description="Build envelope v1 messages (or send a prepared body), validate them exactly "
        "as the worker will, and send them in batches of 10. Nothing is sent if any is invalid. "
        "A --param value is JSON when it parses, else text; a repeated key makes a list.",
        epilog="examples:\n"
        "  fanout publish cloudfront.invalidate --accounts 111111111111,222222222222 \\\n"
        "      --param paths=/index.html --param 'paths=/img/*' \\\n"
        "      --target-param 111111111111:distribution_id=E2QWRUHEXAMPLE \\\n"
        "      --target-param 222222222222:distribution_id=E1B2C3D4EXAMPLE\n"
        "  fanout publish ssm.send_command --accounts 111111111111 \\\n"
        "      --param document_name=AWS-RunShellScript "
        '--param \'parameters={"commands":["uptime"]}\' \\\n'
        '      --param \'targets=[{"key":"tag:Role","values":["web"]}]\'\n'
        "  fanout publish --file body.json --queue-url https://sqs.eu-west-1.amazonaws.com/...",
        formatter_class=_Formatter,
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
    pub.set_defaults(run=_cmd_publish)

    poll = commands.add_parser(
        "poll",
        help="local stand-in for the Lambda SQS event source, calling the real handler",
        description="Receive batches, call handler.app.lambda_handler with a Lambda-shaped event "
        "and context, delete what succeeded and leave reported failures to the visibility "
        "timeout and the redrive policy. Runs until Ctrl-C, or with --until-empty until the "
        "queue holds nothing (in flight included).",
        epilog="example:\n  fanout poll --queue-url $FANOUT_QUEUE_URL --until-empty",
        formatter_class=_Formatter,
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
    poll.set_defaults(run=_cmd_poll)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fanout`` console script; returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) and usage errors (2) return instead of exiting
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger(LOGGER).setLevel(logging.INFO)
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)
