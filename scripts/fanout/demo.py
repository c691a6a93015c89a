"""``fanout demo``: the whole path on one machine, then proof from every account.

Starts the emulator, seeds an ops account and three target accounts, publishes a realistic
workload through the same code as ``fanout publish``, runs the real ``lambda_handler`` through the
local poller until the queue is empty, and then looks in each account for the effects (as an
operator would in the console): invalidations and their paths, SSM commands, dead letters.
It exits 1 when an expected effect is missing, so ``make demo`` doubles as a smoke test.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from rich.table import Column, Table

from fanout import console, local_worker
from fanout.emulator import (
    DEFAULT_TARGET_ACCOUNTS,
    Organisation,
    assumed_role_sessions,
    seed_organisation,
    start_emulator,
)
from fanout.poll_progress import PollProgress
from fanout.poller import Poller, PollStats
from fanout.publish import PublishResult, bodies_from_document, build_bodies, publish
from handler.api import covered

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

__all__ = ["AccountReport", "run_demo"]

POISON_BODY: Final = "not json {"
SSM_DOCUMENT: Final = "AWS-RunShellScript"
VERIFY_SESSION: Final = "demo-verify"
SITE_PATHS: Final = ("/index.html", "/css/*")
LEGACY_PATH: Final = "/promo/banner.jpg"
# Overlapping invalidations of one distribution, sent as separate messages: the worker
# coalesces them into one CreateInvalidation when they arrive in the same batch.
OVERLAPPING_PATHS: Final = ("/img/hero.jpg", "/img/*", "/img/logo.png")


@dataclass
class AccountReport:
    """What one target account shows after the run."""

    account: str
    invalidations: int = 0
    paths: set[str] = field(default_factory=set)
    ssm_commands: int = 0
    assume_roles: int = 0
    dead_letters: int = 0
    per_distribution: dict[str, int] = field(default_factory=dict)


@dataclass
class _Expectations:
    """Paths that must be invalidated per (account, distribution), and SSM targets."""

    paths: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    instances: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def expect_paths(self, account: str, distribution: str, paths: Sequence[str]) -> None:
        self.paths.setdefault((account, distribution), set()).update(paths)


def _workload(org: Organisation) -> tuple[list[str], _Expectations]:
    """The bodies to publish (through the publisher's own builders) and what they must do."""
    expected = _Expectations()
    accounts = ",".join(org.account_ids)
    bodies = build_bodies(
        "cloudfront.invalidate",
        accounts=accounts,
        params=[f"paths={path}" for path in SITE_PATHS],
        target_params=[f"{t.account}:distribution_id={t.distribution_ids[0]}" for t in org.targets],
        request_id="demo-release-42",
    )
    for target in org.targets:
        expected.expect_paths(target.account, target.distribution_ids[0], SITE_PATHS)
    first = org.targets[0]
    for n, path in enumerate(OVERLAPPING_PATHS):
        bodies += build_bodies(
            "cloudfront.invalidate",
            accounts=first.account,
            params=[f"paths={path}"],
            target_params=[f"{first.account}:distribution_id={first.distribution_ids[1]}"],
            request_id=f"demo-img-{n + 1}",
        )
    expected.expect_paths(first.account, first.distribution_ids[1], OVERLAPPING_PATHS)
    legacy = {
        "entries": [
            {
                "aws_account_id": t.account,
                "cloudfront_distribution_id": t.distribution_ids[1],
                "invalidation_path": LEGACY_PATH,
            }
            for t in org.targets
        ]
    }
    bodies += bodies_from_document(json.dumps(legacy), default_region=org.region)
    for target in org.targets:
        expected.expect_paths(target.account, target.distribution_ids[1], [LEGACY_PATH])
    bodies += build_bodies(
        "ssm.send_command",
        accounts=accounts,
        params=[f"document_name={SSM_DOCUMENT}", 'parameters={"commands": ["uptime"]}'],
        target_params=[
            f"{t.account}:instance_ids={json.dumps(t.instance_ids)}" for t in org.targets
        ],
        request_id="demo-uptime",
    )
    expected.instances = {t.account: t.instance_ids for t in org.targets}
    return bodies, expected


def _drain(sqs: SQSClient, queue_url: str) -> list[dict[str, Any]]:
    """Every message of a (small) queue, hidden for a minute so each is read once."""
    messages: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=60,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not batch:
            return messages
        messages.extend(dict(m) for m in batch)


def _inspect(
    org: Organisation,
    expected: _Expectations,
    reports: dict[str, AccountReport],
    problems: list[str],
) -> None:
    """Look in each account for the invalidations and SSM commands the workload asked for."""
    for target in org.targets:
        report = reports[target.account]
        session = org.target_session(target.account, session_name=VERIFY_SESSION)
        cloudfront = session.client("cloudfront", endpoint_url=org.endpoint_url)
        for distribution in target.distribution_ids:
            listing = cloudfront.list_invalidations(DistributionId=distribution)
            items = listing["InvalidationList"].get("Items", [])
            got: set[str] = set()
            for item in items:
                batch = cloudfront.get_invalidation(DistributionId=distribution, Id=item["Id"])
                got.update(batch["Invalidation"]["InvalidationBatch"]["Paths"].get("Items", []))
            report.invalidations += len(items)
            report.per_distribution[distribution] = len(items)
            report.paths |= got
            for path in sorted(expected.paths.get((target.account, distribution), set())):
                if not covered(path, got):
                    problems.append(
                        f"{target.account}: {distribution} has no invalidation of {path}"
                    )
        ssm = session.client("ssm", endpoint_url=org.endpoint_url)
        commands = [
            c for c in ssm.list_commands()["Commands"] if c.get("DocumentName") == SSM_DOCUMENT
        ]
        report.ssm_commands = len(commands)
        wanted = set(expected.instances.get(target.account, ()))
        if not any(wanted <= set(c.get("InstanceIds", [])) for c in commands):
            problems.append(f"{target.account}: no {SSM_DOCUMENT} command on {sorted(wanted)}")


def _check_dead_letters(
    dead: list[dict[str, Any]], reports: dict[str, AccountReport], problems: list[str]
) -> str:
    """The DLQ must hold exactly the poison message, with its reason; returns that reason."""
    reason = ""
    for message in dead:
        attributes = message.get("MessageAttributes", {})
        targets = attributes.get("fanout.targets", {}).get("StringValue", "")
        for account in {t.split("/")[0] for t in targets.split(",") if t}:
            if account in reports:
                reports[account].dead_letters += 1
        if message["Body"] == POISON_BODY:
            reason = attributes.get("fanout.reason", {}).get("StringValue", "")
    if len(dead) != 1 or not reason:
        bodies = [m["Body"][:60] for m in dead]
        problems.append(
            f"the DLQ should hold only the poison message with a fanout.reason; holds {bodies}"
        )
    return reason


def _table(reports: Sequence[AccountReport]) -> Table:
    table = console.table(
        Column("account", no_wrap=True),
        Column("invalidations", justify="right"),
        Column("paths", overflow="fold"),
        Column("ssm commands", justify="right"),
        Column("assume-role", justify="right"),
        Column("dead letters", justify="right"),
    )
    for r in reports:
        table.add_row(
            r.account,
            str(r.invalidations),
            ", ".join(sorted(r.paths)) or "-",
            str(r.ssm_commands),
            str(r.assume_roles),
            str(r.dead_letters),
        )
    return table


def _run(org: Organisation, time_limit_s: float) -> int:
    sqs: SQSClient = org.ops_session().client("sqs", endpoint_url=org.endpoint_url)
    bodies, expected = _workload(org)
    result: PublishResult = publish(
        bodies, sqs=sqs, queue_url=org.queue_url, default_region=org.region
    )
    sqs.send_message(QueueUrl=org.queue_url, MessageBody=POISON_BODY)
    print(
        f"published {len(result.message_ids)} messages ({len(result.request_ids)} requests, "
        f"{result.jobs} jobs) and 1 poison message"
    )
    # The worker logs dead-lettering at ERROR: say beforehand that this one is on purpose.
    console.note("the worker will log one ERROR line, for the poison message: expected")
    before = {a: len(assumed_role_sessions(a)) for a in org.account_ids}
    # The real handler in a child process, as Lambda runs it (it inherits the environment).
    # On a terminal, a live line on stderr while it runs (erased before the report).
    with Poller(org.queue_url, sqs=sqs) as poller, PollProgress(poller) as progress:
        stats: PollStats = poller.run(
            until_empty=True, time_limit_s=time_limit_s, progress=progress
        )
    reports = {
        a: AccountReport(a, assume_roles=len(assumed_role_sessions(a)) - before[a])
        for a in org.account_ids
    }
    print(f"poller: {stats.summary()}")
    problems: list[str] = []
    if stats.timed_out or stats.handler_errors or stats.function_timeouts:
        problems.append("the poller did not empty the queue cleanly")
    _inspect(org, expected, reports, problems)
    reason = _check_dead_letters(_drain(sqs, org.dlq_url), reports, problems)

    first = org.targets[0]
    print()
    console.render(_table(list(reports.values())))
    print()
    if reason:
        print(f"dead letter: the poison message, reason: {reason}")
    merged = reports[first.account].per_distribution.get(first.distribution_ids[1], 0)
    print(
        f"coalescing: {len(OVERLAPPING_PATHS)} overlapping messages and 1 legacy entry for "
        f"{first.account}/{first.distribution_ids[1]} -> {merged} invalidation(s)"
    )
    calls = sum(r.assume_roles for r in reports.values())
    print(
        f"AssumeRole calls by the worker: {calls} for {result.jobs} jobs in {len(reports)} "
        "accounts (counted by the emulator)"
    )
    if problems:
        print("\nMISSING EFFECTS:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print("\nall expected effects are present")
    return 0


def run_demo(
    *,
    log_level: str = "WARNING",
    accounts: Sequence[str] = DEFAULT_TARGET_ACCOUNTS,
    time_limit_s: float = 50.0,
) -> int:
    """Run the demo; 0 when every expected effect is present, 1 otherwise."""
    started = time.monotonic()
    with start_emulator() as emulator:
        org = seed_organisation(emulator.endpoint_url, tuple(accounts))
        print(
            f"emulator at {org.endpoint_url}: ops account {org.ops_account}, "
            f"target accounts {', '.join(org.account_ids)}"
        )
        environment = {
            **org.handler_environment(log_level=log_level),
            # The worker runs with POWERTOOLS_METRICS_DISABLED here: its empty flush is not news.
            "PYTHONWARNINGS": "ignore:No application metrics to publish",
        }
        with local_worker.environment(environment):
            code = _run(org, time_limit_s)
    print(f"demo finished in {time.monotonic() - started:.1f} s")
    return code
