"""B6: one request selecting 1,000 accounts x 3 regions, drained by two worker processes.

An OU of its own in the emulated organisation holds N new accounts; one message selects it
(``select``: the OU, three regions) for ``ssm.send_command``. The worker's allow-list is the OU
(``ALLOWED_OU_IDS``, as a fleet this size would be configured: 1,000 account ids do not fit a
Lambda environment). Two worker processes (``worker_proc.py``, each a Lambda instance) poll one
queue: the first to get the selection expands it into parts on the work queue, and both drain
them.

Measured: wall time from publish to the last part processed; peak RSS per instance; AWS
requests per target by service, as the proxy counted the worker's calls (the event source's
ReceiveMessage/DeleteMessage are Lambda's, not the worker's, and go around the proxy); lost and
duplicated targets from moto's own record of the commands (one per job token, in the comment);
and the request's completion events, captured from its event bus.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from typing import Any, Final

from fanout.bench.common import ApiCalls, Host, Result, spawn_worker, worker_report
from fanout.bench.harness import fresh_queues, ops_sqs, worker_env
from fanout.emulator import Organisation, capture_events, fake_session
from fanout.publish import publish
from handler.api import job_key

__all__ = ["run"]

REGIONS: Final = ("us-east-1", "eu-west-1", "ap-southeast-2")
TASK: Final = "ssm.send_command"
PARAMS: Final = {
    "document_name": "AWS-RunShellScript",
    "parameters": {"commands": ["true"]},
    "targets": [{"key": "tag:Role", "values": ["web"]}],
}
PROCESSES: Final = 2
_TOKEN_RE: Final = re.compile(r"^\[fanout:([0-9a-f]{16})\]")


def _organisation_unit(org: Organisation, accounts: int) -> tuple[str, list[str]]:
    """A new OU under the root with ``accounts`` new member accounts (seeding, not measured)."""
    client: Any = fake_session(org.region).client("organizations", endpoint_url=org.endpoint_url)
    root = client.list_roots()["Roots"][0]["Id"]
    name = f"b6-{uuid.uuid4().hex[:8]}"
    ou = client.create_organizational_unit(ParentId=root, Name=name)["OrganizationalUnit"]["Id"]
    ids = []
    for n in range(accounts):
        account = client.create_account(AccountName=f"{name}-{n}", Email=f"{name}-{n}@example.com")[
            "CreateAccountStatus"
        ]["AccountId"]
        client.move_account(AccountId=account, SourceParentId=root, DestinationParentId=ou)
        ids.append(str(account))
    return ou, ids


def _events(org: Organisation, queue_url: str, request_id: str) -> int:
    sqs = ops_sqs(org)
    found = 0
    while batch := sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=300
    ).get("Messages", []):
        for message in batch:
            detail = json.loads(message["Body"]).get("detail", {})
            found += detail.get("request_id") == request_id
    return found


def run(host: Host, org: Organisation, *, quick: bool) -> Result:
    accounts = 100 if quick else 1000
    time_limit = 600.0 if quick else 1800.0
    seeded = time.perf_counter()
    ou, ids = _organisation_unit(org, accounts)
    seconds_to_seed = time.perf_counter() - seeded
    org = fresh_queues(org, "b6", visibility_timeout=360, max_receive_count=5)
    events_url = capture_events(
        org.endpoint_url,
        region=org.region,
        bus=org.event_bus or "",
        queue_name=f"b6-events-{uuid.uuid4().hex[:8]}",
    )
    request_id = f"b6-{uuid.uuid4().hex[:12]}"
    body = json.dumps(
        {
            "version": 1,
            "task": TASK,
            "request_id": request_id,
            "select": {"organizational_units": [ou], "regions": list(REGIONS)},
            "params": PARAMS,
        }
    )
    expected = {
        job_key(request_id, TASK, account, region, PARAMS)[:16]
        for account in ids
        for region in REGIONS
    }
    env = worker_env(
        org, host.proxy_url, ALLOWED_ACCOUNT_IDS="", ALLOWED_OU_IDS=ou, MAX_WORKERS="16"
    )
    before = {row[3] for row in host.effects()["commands"]}
    host.reset()
    started = time.perf_counter()
    publish([body], sqs=ops_sqs(org), queue_url=org.queue_url, default_region=org.region)
    args = ["--queue-url", org.queue_url, "--sqs-endpoint", host.moto_url, "--handler", "worker"]
    args += ["--time-limit", str(time_limit)]
    children = [spawn_worker(args, env) for _ in range(PROCESSES)]
    reports = [worker_report(child, time_limit + 60) for child in children]
    wall = time.perf_counter() - started
    calls = ApiCalls.from_stats(host.stats())
    commands = [row for row in host.effects()["commands"] if row[3] not in before]
    per_token = Counter(m.group(1) for row in commands if (m := _TOKEN_RE.match(row[2] or "")))
    done = set(per_token) & expected
    lost = len(expected - done)
    duplicated = sum(1 for token in expected if per_token.get(token, 0) > 1)
    completions = _events(org, events_url, request_id)
    targets = len(expected)
    by_service: Counter[str] = Counter()
    for service, _, _, _, count in calls.rows:
        by_service[service] += count
    per_target = {service: n / targets for service, n in sorted(by_service.items())}
    peaks = [r.get("peak_rss_mb", float("nan")) for r in reports]
    met = lost == 0 and duplicated == 0 and completions == 1
    shown = ", ".join(f"{s} {v:.2f}" for s, v in per_target.items())
    notes = (
        f"1 request selecting {accounts} accounts x {len(REGIONS)} regions = {targets} "
        f"{TASK} targets, {PROCESSES} worker processes: {lost} lost, {duplicated} duplicated, "
        f"{completions} completion event(s), {wall:.0f} s wall (seeding the OU "
        f"{seconds_to_seed:.0f} s, not counted), peak RSS per instance "
        f"{', '.join(f'{p:.0f}' for p in peaks)} MB; the worker's AWS requests per target: {shown}"
    )
    return Result(
        key="B6",
        title="Organisation scale (1 request, 1,000 accounts x 3 regions, 2 instances)",
        measured=float(lost + duplicated),
        display=f"{lost} lost, {duplicated} dup, {completions} event(s), {wall:.0f} s",
        target="0 lost, 0 duplicated, 1 completion event",
        met=met,
        notes=notes,
        details={
            "accounts": accounts,
            "regions": list(REGIONS),
            "targets": targets,
            "processes": PROCESSES,
            "wall_seconds": wall,
            "seed_seconds": seconds_to_seed,
            "lost": lost,
            "duplicated": duplicated,
            "completion_events": completions,
            "requests_per_target_by_service": per_target,
            "api_calls_by_operation": calls.by_operation(),
            "peak_rss_mb": peaks,
            "instances": reports,
        },
    )
