"""B1: throughput against peers on one workload of CloudFront invalidations.

The same legacy-format workload (M messages x one entry per account, each message's entries on
one of each account's two distributions, every path distinct) is processed by
(a) the worker: published to a queue, then the local poller calling the real ``lambda_handler``;
(b) the original pattern (``baseline.py``) through the same queue and poller;
(c) botocove, one thread per account, one CreateInvalidation per entry.
Every AWS call goes through the counting proxy; moto's state says what each one created.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, cast
from unittest import mock

import boto3

from fanout.bench import baseline
from fanout.bench.common import Host, Result, environment
from fanout.bench.cost import cost_per_million
from fanout.bench.harness import fresh_queues, ops_sqs, worker_env
from fanout.bench.poll import TimedHandler, drain, worker_handler
from fanout.emulator import Organisation, fake_session
from fanout.publish import publish
from tasks.registry import get_task

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

__all__ = ["run"]

# Issue 14's marks: as deployed, >= 5x the original pattern on the emulator and >= 10x with
# +20 ms per call (AWS's round trips), ahead of botocove in both.
TARGET_SPEEDUP = 5.0
TARGET_SPEEDUP_AT_LATENCY = 10.0
# The plugin's declared CreateInvalidation rate is enforced by the proxy in the last round.
QUOTA_API = "cloudfront:CreateInvalidation"
TIME_LIMIT_S = 90.0
# A conservative in-region round trip for STS/CloudFront/DynamoDB control-plane calls.
LATENCY_MS = 20.0
# The request record's cost budget (issue 11): one amortised write per job at most, and no read
# of a request's state beyond one per batch.
REQUEST_WRITES_PER_JOB = 1.0
REQUEST_READS_PER_BATCH = 1.0


def _bodies(org: Organisation, messages: int) -> tuple[list[str], int]:
    bodies = []
    for m in range(messages):
        entries = [
            {
                "aws_account_id": t.account,
                "cloudfront_distribution_id": t.distribution_ids[m % len(t.distribution_ids)],
                "invalidation_path": f"/b1/{uuid.uuid4().hex[:8]}/m{m:03d}.html",
            }
            for t in org.targets
        ]
        bodies.append(json.dumps({"entries": entries}))
    return bodies, messages * len(org.targets)


def _invalidation_ids(host: Host) -> set[str]:
    return {row[4] for row in host.effects()["invalidations"]}


def _created(host: Host, before: set[str]) -> list[list[Any]]:
    return [row for row in host.effects()["invalidations"] if row[4] not in before]


def _summary(host: Host, before: set[str], seconds: float) -> dict[str, Any]:
    calls = host.calls()
    created = _created(host, before)
    per_path = Counter(path for row in created for path in row[5])
    return {
        "seconds": seconds,
        "emulator_cpu_seconds": host.cpu_since_reset(),
        "assume_role": calls.count("AssumeRole"),
        "create_invalidation": calls.count("CreateInvalidation"),
        "create_invalidation_throttled": calls.count("CreateInvalidation", outcome="throttled"),
        "api_calls": sum(r[4] for r in calls.rows),
        "api_calls_by_operation": calls.by_operation(),
        "invalidations_created": len(created),
        # Every entry has a path of its own: distinct paths = entries done.
        "paths_invalidated": len(per_path),
        "paths_invalidated_twice": sum(1 for n in per_path.values() if n > 1),
    }


@contextmanager
def _phases() -> Iterator[dict[str, float]]:
    """Where the worker's dispatcher spends its time: ``run`` and ``lanes`` are wall seconds;
    ``claim`` and ``record`` (the ledger's claim and finish writes, made inside the lanes,
    concurrently) are seconds summed over the lanes' threads."""
    from handler.dispatch import Dispatcher  # noqa: PLC0415 - after the environment is set
    from handler.ledger_dynamodb import DynamoDBLedger  # noqa: PLC0415

    spent = {"run": 0.0, "claim": 0.0, "lanes": 0.0, "record": 0.0}
    lock = threading.Lock()

    def timed(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                with lock:
                    spent[name] += time.perf_counter() - started

        return wrapper

    with (
        mock.patch.object(Dispatcher, "run", timed("run", Dispatcher.run)),
        mock.patch.object(DynamoDBLedger, "claim", timed("claim", DynamoDBLedger.claim)),
        mock.patch.object(DynamoDBLedger, "finish", timed("record", DynamoDBLedger.finish)),
        mock.patch.object(Dispatcher, "_run_lane", timed("lanes", Dispatcher._run_lane)),
    ):
        yield spent


class _CountedClient:
    """A DynamoDB client whose calls are counted under ``<owner>:<operation>``."""

    def __init__(self, client: Any, owner: str, counts: Counter[str], lock: threading.Lock):
        self._client, self._owner, self._counts, self._lock = client, owner, counts, lock

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute) or name.startswith(("get_paginator", "can_")):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self._counts[f"{self._owner}:{name}"] += 1
                if name == "transact_write_items":  # priced per item, not per request
                    self._counts[f"{self._owner}:{TRANSACT_ITEMS}"] += len(kwargs["TransactItems"])
            return attribute(*args, **kwargs)

        return counted


@contextmanager
def _dynamodb_requests() -> Iterator[Counter[str]]:
    """DynamoDB requests made for job items (``jobs:``) and for request records
    (``requests:``), by operation. Both live in one table, so the proxy cannot tell them apart:
    each store's ``Table`` is tagged when the worker builds it, and calls through it counted."""
    from handler.dynamo import Table  # noqa: PLC0415 - after the environment is set
    from handler.ledger_dynamodb import DynamoDBLedger  # noqa: PLC0415
    from handler.requests_dynamodb import DynamoDBRequests  # noqa: PLC0415

    counts: Counter[str] = Counter()
    lock = threading.Lock()
    owners: dict[int, str] = {}  # id(Table) -> owner

    def tagging(owner: str, init: Callable[..., None]) -> Callable[..., None]:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            owners[id(self._table)] = owner

        return wrapper

    client = Table.client

    def counting_client(self: Table) -> Any:
        owner = owners.get(id(self))
        real = client(self)
        return real if owner is None else _CountedClient(real, owner, counts, lock)

    with (
        mock.patch.object(DynamoDBLedger, "__init__", tagging("jobs", DynamoDBLedger.__init__)),
        mock.patch.object(
            DynamoDBRequests, "__init__", tagging("requests", DynamoDBRequests.__init__)
        ),
        mock.patch.object(Table, "client", counting_client),
    ):
        yield counts


@contextmanager
def _event_entries() -> Iterator[Counter[str]]:
    """EventBridge entries the worker sent (priced per entry; one PutEvents carries several)."""
    from handler.event_sender import EventSender  # noqa: PLC0415 - after the environment is set

    counts: Counter[str] = Counter()
    send = EventSender._send

    def counting(self: EventSender, batch: list[Any]) -> None:
        counts["entries"] += len(batch)
        send(self, batch)

    with mock.patch.object(EventSender, "_send", counting):
        yield counts


READS: Final = ("get_item", "batch_get_item", "query")
TRANSACT_ITEMS: Final = "items_in_transactions"  # a count of items, not of requests
MEMORY_GB: Final = 256 / 1024  # the template's default MemorySize


def _store_cost(counts: Counter[str], owner: str, jobs: int, batches: int) -> dict[str, Any]:
    """Requests per job (writes) and per batch (reads) one store made, and by operation."""
    mine = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith(f"{owner}:")}
    reads = sum(v for k, v in mine.items() if k in READS)
    writes = sum(v for k, v in mine.items() if k != TRANSACT_ITEMS) - reads
    return {
        "by_operation": mine,
        "writes": writes,
        "reads": reads,
        "writes_per_job": writes / jobs if jobs else None,
        "reads_per_batch": reads / batches if batches else None,
    }


def _through_queue(
    host: Host,
    org: Organisation,
    name: str,
    handler: Callable[[], Any],
    bodies: list[str],
    *,
    latency_ms: float,
    quota: tuple[float, int] | None = None,
    unset: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Publish, then poll until empty; wall time of both, as an operator waits for both."""
    # A short visibility timeout: a failed batch of the baseline comes back within the run.
    org = fresh_queues(org, f"b1-{name}", visibility_timeout=10, max_receive_count=3)
    before = _invalidation_ids(host)
    env = {k: v for k, v in worker_env(org, host.proxy_url).items() if k not in unset}
    with (
        environment(env, unset=unset),
        _phases() as phases,
        _dynamodb_requests() as dynamodb,
        _event_entries() as events,
    ):
        timed = TimedHandler(handler())
        # Made before the clock starts: the harness's cost, not a contender's. Its requests
        # (publishing, and receiving and deleting as the event source mapping would) count.
        sqs_requests: Counter[str] = Counter()
        sqs = cast("SQSClient", _CountedClient(ops_sqs(org), "sqs", sqs_requests, threading.Lock()))
        host.reset(_quotas(quota), latency_ms=latency_ms)
        started = time.perf_counter()
        publish(bodies, sqs=sqs, queue_url=org.queue_url, default_region=org.region)
        drained = drain(org.queue_url, sqs, timed, time_limit_s=TIME_LIMIT_S)
        seconds = time.perf_counter() - started
    summary = _summary(host, before, seconds)
    jobs, batches = summary["paths_invalidated"], timed.invocations
    return {
        **summary,
        "dispatcher_seconds": phases,
        "dynamodb_job_items": _store_cost(dynamodb, "jobs", jobs, batches),
        "dynamodb_request_records": _store_cost(dynamodb, "requests", jobs, batches),
        "sqs_requests": dict(sqs_requests),
        "dynamodb_requests": dict(dynamodb),
        "event_entries": events["entries"],
        "handler_seconds": timed.seconds,
        "invocations": timed.invocations,
        "batch_failures": drained.handler_errors,
        "timed_out": drained.timed_out,
        "dead_lettered_messages": _depth(org.dlq_url, org),
    }


def units_per_job(round_: dict[str, Any]) -> dict[str, float]:
    """The priced units (``fanout.bench.cost``) one job of a worker round used: requests by
    service as counted, DynamoDB write units as one per write and two per item written in a
    transaction (items under 1 KB: a larger item costs one unit per KB), read units as one per
    read request, EventBridge by entry (not by PutEvents call), Lambda GB-seconds from the
    handler's measured time at the template's memory."""
    jobs = round_["paths_invalidated"] or 1
    calls: dict[str, int] = round_["api_calls_by_operation"]
    dynamodb = Counter(round_["dynamodb_requests"])
    items = sum(v for k, v in dynamodb.items() if k.endswith(TRANSACT_ITEMS))
    transactions = sum(v for k, v in dynamodb.items() if k.endswith(":transact_write_items"))
    reads = sum(v for k, v in dynamodb.items() if k.split(":", 1)[1] in READS)
    plain_writes = sum(dynamodb.values()) - items - transactions - reads

    def calls_of(service: str, *operations: str) -> int:
        return sum(
            n
            for api, n in calls.items()
            if api.startswith(f"{service}:") and (not operations or api.split(":")[1] in operations)
        )

    return {
        "lambda:requests": round_["invocations"] / jobs,
        "lambda:gb_seconds": round_["handler_seconds"] * MEMORY_GB / jobs,
        "sqs": (sum(round_["sqs_requests"].values()) + calls_of("sqs")) / jobs,
        "dynamodb:write_units": (plain_writes + 2 * items) / jobs,
        "dynamodb:read_units": reads / jobs,
        "events": round_.get("event_entries", calls_of("events")) / jobs,
        "s3:write": calls_of("s3", "PutObject", "CopyObject") / jobs,
        "sts": calls_of("sts") / jobs,
    }


def _depth(queue_url: str, org: Organisation) -> int:
    attributes = ops_sqs(org).get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes.get("ApproximateNumberOfMessages", "0"))


def _quotas(quota: tuple[float, int] | None) -> dict[str, tuple[float, int]]:
    return {QUOTA_API: quota} if quota else {}


def _baseline_handler() -> Any:
    baseline.reset()
    return baseline.cloudfront_handler


def _botocove(
    host: Host,
    org: Organisation,
    bodies: list[str],
    *,
    latency_ms: float,
    quota: tuple[float, int] | None = None,
) -> dict[str, Any]:
    from botocove import cove  # noqa: PLC0415 - optional bench dependency

    per_account: dict[str, list[dict[str, str]]] = {}
    for body in bodies:
        for entry in json.loads(body)["entries"]:
            per_account.setdefault(entry["aws_account_id"], []).append(entry)
    before = _invalidation_ids(host)

    # botocove is typed only when the bench extra is installed (not in CI's dev install).
    @cove(  # type: ignore[untyped-decorator, unused-ignore]
        target_ids=list(org.account_ids),
        rolename=org.role_name,
        role_session_name="botocove-bench",
        assuming_session=fake_session(org.region),
        regions=[org.region],
    )
    def invalidate(session: boto3.Session) -> int:
        account = session.session_information["Id"]  # type: ignore[attr-defined]
        client = session.client("cloudfront")
        for entry in per_account[account]:
            client.create_invalidation(
                DistributionId=entry["cloudfront_distribution_id"],
                InvalidationBatch={
                    "Paths": {"Quantity": 1, "Items": [entry["invalidation_path"]]},
                    "CallerReference": str(uuid.uuid4()),
                },
            )
        return len(per_account[account])

    with environment(worker_env(org, host.proxy_url)):
        host.reset(_quotas(quota), latency_ms=latency_ms)
        started = time.perf_counter()
        output = invalidate()
        seconds = time.perf_counter() - started
    failures = len(output["Exceptions"]) + len(output["FailedAssumeRole"])
    return {**_summary(host, before, seconds), "failures": failures}


def _round(
    host: Host,
    org: Organisation,
    bodies: list[str],
    *,
    latency_ms: float = 0.0,
    quota: tuple[float, int] | None = None,
) -> dict[str, Any]:
    """The three contenders on one workload, one after another, under one condition."""
    return {
        "worker": _through_queue(
            host, org, "worker", worker_handler, bodies, latency_ms=latency_ms, quota=quota
        ),
        "baseline": _through_queue(
            host, org, "baseline", _baseline_handler, bodies, latency_ms=latency_ms, quota=quota
        ),
        "botocove": _botocove(host, org, bodies, latency_ms=latency_ms, quota=quota),
    }


def _quota_line(quota: dict[str, Any], entries: int) -> str:
    parts = []
    for name in ("worker", "baseline", "botocove"):
        r = quota[name]
        parts.append(
            f"{name} {r['seconds']:.1f} s, {r['paths_invalidated']}/{entries} paths, "
            f"{r['paths_invalidated_twice']} twice"
        )
    return "; ".join(parts)


def _cost_line(worker: dict[str, Any]) -> str:
    jobs, requests = worker["dynamodb_job_items"], worker["dynamodb_request_records"]
    return (
        f"DynamoDB requests of the worker round: request records {requests['writes_per_job']:.2f} "
        f"writes per job and {requests['reads_per_batch']:.2f} reads per batch (target <= "
        f"{REQUEST_WRITES_PER_JOB:g} and <= {REQUEST_READS_PER_BATCH:g}); job items "
        f"{jobs['writes_per_job']:.2f} writes per job, "
        f"{jobs['reads_per_batch']:.2f} reads per batch"
    )


def run(host: Host, org: Organisation, *, quick: bool) -> Result:
    messages = 6 if quick else 20
    bodies, entries = _bodies(org, messages)
    accounts = len(org.targets)
    main = _round(host, org, bodies)
    worker, base, cove = main["worker"], main["baseline"], main["botocove"]
    # Variants that explain the headline: the ledger's share, and a latency-bound "AWS".
    in_memory = _through_queue(
        host, org, "memledger", worker_handler, bodies, latency_ms=0.0, unset=("LEDGER_TABLE",)
    )
    latency = _round(host, org, bodies, latency_ms=LATENCY_MS)
    latency_in_memory = _through_queue(
        host,
        org,
        "memledger-latency",
        worker_handler,
        bodies,
        latency_ms=LATENCY_MS,
        unset=("LEDGER_TABLE",),
    )
    declared = get_task("cloudfront.invalidate").rate
    cloudfront_quota = (declared.per_second, declared.burst)
    quota = _round(host, org, bodies, quota=cloudfront_quota)
    speedup = base["seconds"] / worker["seconds"]
    vs_cove = cove["seconds"] / worker["seconds"]
    complete = worker["paths_invalidated"] == entries and not worker["timed_out"]
    lat_speedup = latency["baseline"]["seconds"] / latency["worker"]["seconds"]
    lat_cove = latency["botocove"]["seconds"] / latency["worker"]["seconds"]
    met = (
        speedup >= TARGET_SPEEDUP
        and vs_cove > 1.0
        and lat_speedup >= TARGET_SPEEDUP_AT_LATENCY
        and lat_cove > 1.0
        and worker["assume_role"] == accounts
        and complete
    )
    phases = worker["dispatcher_seconds"]
    notes = (
        f"{entries} entries ({messages} msgs x {accounts} accts, "
        f"{accounts * len(org.targets[0].distribution_ids)} distributions). "
        f"worker {worker['seconds']:.2f} s: {worker['assume_role']} AssumeRole, "
        f"{worker['create_invalidation']} CreateInvalidation, {worker['api_calls']} calls, "
        f"emulator CPU {worker['emulator_cpu_seconds']:.1f} s; "
        f"lanes {phases['lanes']:.2f} s wall, in them ledger claims {phases['claim']:.2f} s "
        f"and outcome writes {phases['record']:.2f} s summed over threads; "
        f"baseline {base['seconds']:.2f} s: {base['assume_role']} AssumeRole, "
        f"{base['api_calls']} calls; botocove {cove['seconds']:.2f} s: "
        f"{cove['assume_role']} AssumeRole, {cove['api_calls']} calls (worker {vs_cove:.2f}x). "
        f"In-memory ledger: worker {in_memory['seconds']:.2f} s "
        f"({base['seconds'] / in_memory['seconds']:.1f}x). "
        f"+{LATENCY_MS:.0f} ms/call: {lat_speedup:.1f}x vs baseline, {lat_cove:.2f}x vs botocove "
        f"({latency['baseline']['seconds'] / latency_in_memory['seconds']:.1f}x and "
        f"{latency['botocove']['seconds'] / latency_in_memory['seconds']:.2f}x with the "
        "in-memory ledger). "
        f"Under CloudFront's quota ({cloudfront_quota[0]:g}/s/acct, burst "
        f"{cloudfront_quota[1]}): "
        f"{_quota_line(quota, entries)}. "
        f"{_cost_line(worker)}"
    )
    return Result(
        key="B1",
        title="Throughput vs peers (baseline time / worker time)",
        measured=speedup,
        display=f"{speedup:.1f}x",
        target=(
            f">= {TARGET_SPEEDUP:.0f}x (>= {TARGET_SPEEDUP_AT_LATENCY:.0f}x at "
            f"+{LATENCY_MS:.0f} ms/call), ahead of botocove in both, AssumeRole = {accounts}"
        ),
        met=met,
        notes=notes,
        details={
            "messages": messages,
            "entries": entries,
            "accounts": accounts,
            **main,
            "worker_in_memory_ledger": in_memory,
            "latency_ms": LATENCY_MS,
            "with_latency": latency,
            "with_latency_worker_in_memory_ledger": latency_in_memory,
            "speedup_vs_baseline": speedup,
            "speedup_vs_botocove": vs_cove,
            "cloudfront_quota": cloudfront_quota,
            "with_quota": quota,
            "with_latency_speedup_vs_baseline": lat_speedup,
            "with_latency_speedup_vs_botocove": lat_cove,
            # fanout's own AWS bill per million targets of this workload, at list prices.
            "cost_per_million_jobs": cost_per_million(units_per_job(worker)),
        },
    )
