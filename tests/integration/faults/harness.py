"""Workloads, runs and the bookkeeping of the promise: every job ends exactly once.

A *unit* is what must end exactly once: a job (task x target, keyed like the worker keys it), or
a message that cannot be parsed into jobs (a poison message, keyed by its message id). After a
run, each unit is looked up where its end would show:

- **succeeded**: its effect exists in the target account (and its ledger record must say so:
  an effect the ledger does not record, or a success the ledger records without an effect, is
  reported as a problem, which fails the scenario);
- **dead-lettered**: a dead letter names it (the dead letter's body parses back to its job key,
  or, for a poison message, the dead letter's source message id is its message id);
- **lost**: neither.

**Duplicated** counts side effects beyond one per unit, as the real service would have kept
them (the emulator deduplicates CloudFront's CallerReference as CloudFront does; counting
distinct references keeps the figure right on an emulator that would not):

- ``ssm.send_command``: the effect is a command on an instance. Every job gets instance ids of
  its own, so any command beyond the first on an instance is a duplicate (this does not depend
  on the worker's job token: a second command with another token counts too).
- ``cloudfront.invalidate``: real CloudFront creates one invalidation per distinct
  CallerReference (a repeat with the same reference and paths returns the existing one). A
  job's invalidations are those on its distribution that list one of its paths, or that its
  ledger record names; every distinct CallerReference beyond the first among them is a
  duplicate, and so is every distinct CallerReference on a scenario's distribution that no job
  accounts for. Every job gets distributions and paths of its own scenario.

A unit that both succeeded and was dead-lettered, or was dead-lettered more than once, *ended
twice*: reported in its own column.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import boto3

from fanout.emulator import Organisation
from handler.envelope import parse_message
from handler.exceptions import PermanentError

REGION = "us-east-1"
SSM_DOCUMENT = "AWS-RunShellScript"
_SSM_TASK = "ssm.send_command"
_CF_TASK = "cloudfront.invalidate"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def fake_instances(count: int) -> list[str]:
    """Instance ids nobody else uses (moto's SendCommand accepts unknown instances)."""
    return [f"i-{uuid.uuid4().hex[:17]}" for _ in range(count)]


def cf_body(
    request_id: str | None, targets: Sequence[tuple[str, str]], paths: Sequence[str]
) -> str:
    """A v1 invalidation of ``paths`` on each (account, distribution id)."""
    body: dict[str, Any] = {
        "version": 1,
        "task": _CF_TASK,
        "targets": [{"account": a, "params": {"distribution_id": d}} for a, d in targets],
        "params": {"paths": list(paths)},
    }
    if request_id:
        body["request_id"] = request_id
    return json.dumps(body)


def ssm_body(request_id: str | None, targets: Sequence[tuple[str, Sequence[str]]]) -> str:
    """A v1 SendCommand of ``uptime`` on each (account, instance ids)."""
    body: dict[str, Any] = {
        "version": 1,
        "task": _SSM_TASK,
        "targets": [{"account": a, "params": {"instance_ids": list(i)}} for a, i in targets],
        "params": {"document_name": SSM_DOCUMENT, "parameters": {"commands": ["uptime"]}},
    }
    if request_id:
        body["request_id"] = request_id
    return json.dumps(body)


@dataclass(frozen=True)
class Unit:
    key: str
    message_id: str
    request_id: str | None = None
    task: str | None = None
    account: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    region: str = REGION


@dataclass(frozen=True)
class Invalidation:
    id: str
    caller_reference: str
    paths: frozenset[str]


@dataclass
class Figures:
    scenario: str
    jobs: int = 0
    succeeded: int = 0
    dead_lettered: int = 0
    duplicated: int = 0
    lost: int = 0
    ended_twice: int = 0
    letter_copies: int = 0  # copies of a letter already counted (same letter id)
    problems: list[str] = field(default_factory=list)
    reasons: dict[str, list[str]] = field(default_factory=dict)  # unit key -> dead-letter reasons
    states: dict[str, str] = field(default_factory=dict)  # unit key -> succeeded/dead/lost

    def row(self) -> tuple[str, ...]:
        return (
            self.scenario,
            str(self.jobs),
            str(self.succeeded),
            str(self.dead_lettered),
            str(self.duplicated),
            str(self.lost),
            str(self.ended_twice),
            str(self.letter_copies),
        )

    def explain(self) -> str:
        head = " | ".join(self.row())
        return head + "".join(f"\n  - {p}" for p in self.problems[:20])


def covered(path: str, invalidated: Iterable[str]) -> bool:
    return any(p == path or (p.endswith("*") and path.startswith(p[:-1])) for p in invalidated)


class Inspector:
    """Looks into the emulator directly (never through the proxy): what "AWS" holds."""

    def __init__(self, org: Organisation) -> None:
        self.org = org
        self._clients: dict[tuple[str, str, str], Any] = {}
        ops = org.ops_session()
        self.sqs = ops.client("sqs", endpoint_url=org.endpoint_url)
        self.dynamodb = ops.client("dynamodb", endpoint_url=org.endpoint_url)

    def client(self, account: str, service: str, region: str = REGION) -> Any:
        key = (account, service, region)
        if key not in self._clients:
            session: boto3.Session = self.org.target_session(account, session_name="fault-verify")
            self._clients[key] = session.client(
                service, endpoint_url=self.org.endpoint_url, region_name=region
            )
        return self._clients[key]

    def create_distributions(self, account: str, count: int) -> list[str]:
        cloudfront = self.client(account, "cloudfront")
        ids = []
        for _ in range(count):
            reference = new_id("fault-dist")
            config = {
                "CallerReference": reference,
                "Comment": "fault-injection scenario",
                "Enabled": True,
                "Origins": {
                    "Quantity": 1,
                    "Items": [
                        {
                            "Id": "origin",
                            "DomainName": f"{reference}.s3.amazonaws.com",
                            "S3OriginConfig": {"OriginAccessIdentity": ""},
                        }
                    ],
                },
                "DefaultCacheBehavior": {
                    "TargetOriginId": "origin",
                    "ViewerProtocolPolicy": "redirect-to-https",
                    "CachePolicyId": "658327ea-f89d-4fab-a63d-7e88639e58f6",
                },
            }
            distribution = cloudfront.create_distribution(DistributionConfig=config)
            ids.append(str(distribution["Distribution"]["Id"]))
        return ids

    def invalidations(self, account: str, distribution_id: str) -> list[Invalidation]:
        cloudfront = self.client(account, "cloudfront")
        pages = cloudfront.get_paginator("list_invalidations").paginate(
            DistributionId=distribution_id
        )
        try:
            items = [i for page in pages for i in page["InvalidationList"].get("Items", [])]
        except cloudfront.exceptions.NoSuchDistribution:
            return []  # a poison message's made-up distribution
        found = []
        for item in items:
            batch = cloudfront.get_invalidation(DistributionId=distribution_id, Id=item["Id"])
            batch = batch["Invalidation"]["InvalidationBatch"]
            found.append(
                Invalidation(
                    item["Id"],
                    batch["CallerReference"],
                    frozenset(batch["Paths"].get("Items", [])),
                )
            )
        return found

    def commands_on(
        self, account: str, instance_id: str, region: str = REGION
    ) -> list[dict[str, Any]]:
        ssm = self.client(account, "ssm", region)
        return list(ssm.list_commands(InstanceId=instance_id)["Commands"])

    def ledger(self, request_id: str) -> dict[str, dict[str, Any]]:
        """Job key -> {state, result_id, last_error} of one request."""
        assert self.org.ledger_table
        items = self.dynamodb.query(
            TableName=self.org.ledger_table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": request_id}},
        )["Items"]
        return {
            item["sk"]["S"]: {name: value.get("S", value.get("N")) for name, value in item.items()}
            for item in items
            if not item["sk"]["S"].startswith("#")  # the request's own record
        }

    def drain(self, queue_url: str) -> list[dict[str, Any]]:
        """Every message of a (small) queue, each read once."""
        messages: list[dict[str, Any]] = []
        while batch := self.sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=300,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        ).get("Messages", []):
            messages.extend(dict(m) for m in batch)
        return messages


class Workload:
    """What was published, as units that must each end exactly once."""

    def __init__(self, queue_url: str, sqs: Any) -> None:
        self.queue_url = queue_url
        self._sqs = sqs
        self.units: dict[str, Unit] = {}
        self.messages = 0
        self.distributions: set[tuple[str, str]] = set()

    def publish(self, bodies: Sequence[str], *, copies: int = 1) -> list[str]:
        """Send each body ``copies`` times (one after another: copies land in other batches)."""
        ids = []
        for _ in range(copies):
            for body in bodies:
                message_id = self._sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)[
                    "MessageId"
                ]
                self.messages += 1
                ids.append(message_id)
                self._register(body, message_id)
        return ids

    def _register(self, body: str, message_id: str) -> None:
        try:
            envelope = parse_message(body, message_id=message_id, default_region=REGION)
        except PermanentError:
            key = f"message:{message_id}"
            self.units[key] = Unit(key, message_id)
            return
        for job in envelope.jobs:
            self.units.setdefault(
                job.key,
                Unit(
                    job.key,
                    message_id,
                    job.request_id,
                    job.task,
                    job.account,
                    job.params,
                    job.region,
                ),
            )
            if job.task == _CF_TASK:
                self.distributions.add((job.account, str(job.params["distribution_id"])))


def _dead_letters(
    inspector: Inspector, dlq_url: str, figures: Figures
) -> tuple[dict[str, list[str]], list[str]]:
    """Unit key -> reasons of the dead letters naming it; and dead letters naming no unit.

    Copies of one letter (the same ``fanout.letter_id``: a letter written again because its
    writer died before recording it) are one dead-lettering, counted in ``letter_copies``."""
    named: dict[str, list[str]] = defaultdict(list)
    strays: list[str] = []
    seen: set[str] = set()
    for message in inspector.drain(dlq_url):
        attributes = {
            k: v.get("StringValue", "") for k, v in message.get("MessageAttributes", {}).items()
        }
        letter = attributes.get("fanout.letter_id")
        if letter and letter in seen:
            figures.letter_copies += 1
            continue
        if letter:
            seen.add(letter)
        source = attributes.get("fanout.source_message_id") or message["MessageId"]
        reason = attributes.get("fanout.reason", "")
        if not reason or "\n" in reason:
            figures.problems.append(f"dead letter without a single-line reason: {reason!r}")
        try:
            envelope = parse_message(message["Body"], message_id=source, default_region=REGION)
            keys = [job.key for job in envelope.jobs]
        except PermanentError:
            keys = [f"message:{source}"]
        for key in keys:
            named[key].append(reason)
        if not keys:
            strays.append(message["Body"][:80])
    return named, strays


def verify(name: str, workload: Workload, inspector: Inspector, dlq_url: str) -> Figures:
    """Count, per unit, how it ended and how many side effects it had."""
    figures = Figures(name, jobs=len(workload.units))
    dead, strays = _dead_letters(inspector, dlq_url, figures)
    figures.problems += [f"dead letter naming no published job: {s}" for s in strays]
    figures.problems += [
        f"dead letter for {k} which was never published" for k in dead if k not in workload.units
    ]
    ledgers: dict[str, dict[str, dict[str, Any]]] = {}
    invalidations = {
        (account, dist): inspector.invalidations(account, dist)
        for account, dist in sorted(workload.distributions)
    }
    attributed: dict[tuple[str, str], set[str]] = defaultdict(set)  # references jobs account for
    records: dict[str, Mapping[str, Any]] = {}
    for key, unit in workload.units.items():
        if unit.request_id is not None:
            if unit.request_id not in ledgers:
                ledgers[unit.request_id] = inspector.ledger(unit.request_id)
            records[key] = ledgers[unit.request_id].get(key, {})
    # An invalidation a job's ledger record names is that job's (and its request's), even if
    # another request's job lists the same paths.
    owners = {str(r["result_id"]): k for k, r in records.items() if r.get("result_id")}
    for key, unit in sorted(workload.units.items()):
        record = records.get(key, {})
        effect, extra = _effects(unit, record, invalidations, attributed, inspector, owners=owners)
        _classify(figures, unit, record, effect=effect, extra=extra, reasons=dead.get(key, []))
    for where, found in invalidations.items():
        orphans = {i.caller_reference for i in found} - attributed[where]
        if orphans:
            figures.duplicated += len(orphans)
            figures.problems.append(f"{len(orphans)} invalidation(s) no job accounts for: {where}")
    return figures


def _classify(
    figures: Figures,
    unit: Unit,
    record: Mapping[str, Any],
    *,
    effect: bool,
    extra: int,
    reasons: list[str],
) -> None:
    """Count one unit: how it ended, its extra side effects, and what does not add up."""
    what = _describe(unit)
    figures.duplicated += extra
    if extra:
        figures.problems.append(f"{extra} duplicated side effect(s) of {what}")
    state = record.get("state")
    if state == "succeeded" and not effect:
        figures.problems.append(f"ledger says succeeded, no effect: {what}")
    elif effect and state != "succeeded" and not reasons:
        figures.problems.append(f"took effect, ledger says {state}: {what}")
    if reasons:
        figures.reasons[unit.key] = reasons
    if (effect and reasons) or len(reasons) > 1:
        figures.ended_twice += 1
        ended = f"{'succeeded, ' if effect else ''}{len(reasons)} dead letters"
        figures.problems.append(f"ended twice ({ended}): {what}")
    if effect:
        figures.succeeded += 1
        figures.states[unit.key] = "succeeded"
    elif reasons:
        figures.dead_lettered += 1
        figures.states[unit.key] = "dead-lettered"
    else:
        figures.lost += 1
        figures.states[unit.key] = "lost"
        figures.problems.append(f"lost (ledger: {state}): {what}")


def _effects(
    unit: Unit,
    record: Mapping[str, Any],
    invalidations: Mapping[tuple[str, str], list[Invalidation]],
    attributed: dict[tuple[str, str], set[str]],
    inspector: Inspector,
    *,
    owners: Mapping[str, str],
) -> tuple[bool, int]:
    """(the unit's effect exists, how many side effects it had beyond one)."""
    if unit.task == _CF_TASK and unit.account:
        where = (unit.account, str(unit.params["distribution_id"]))
        paths = set(unit.params["paths"])
        mine = [
            i
            for i in invalidations[where]
            if i.id == record.get("result_id")
            or (i.paths & paths and owners.get(i.id, unit.key) == unit.key)
        ]
        references = {i.caller_reference for i in mine}
        attributed[where] |= references
        invalidated = set().union(*(i.paths for i in mine)) if mine else set()
        effect = bool(mine) and all(covered(p, invalidated) for p in paths)
        return effect, max(0, len(references) - 1)
    if unit.task == _SSM_TASK and unit.account:
        counts = Counter(
            {
                i: len(inspector.commands_on(unit.account, i, unit.region))
                for i in unit.params["instance_ids"]
            }
        )
        return all(counts.values()), sum(max(0, n - 1) for n in counts.values())
    return False, 0


def _describe(unit: Unit) -> str:
    if unit.task is None:
        return f"message {unit.message_id}"
    target = unit.params.get("distribution_id") or ",".join(unit.params.get("instance_ids", []))
    return f"{unit.task} {unit.account} {target} (request {unit.request_id})"
