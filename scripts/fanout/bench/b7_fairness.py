"""B7: fairness between accounts - a noisy account's backlog must not hold back quiet ones.

Workload (``ssm.send_command``, one call per job, Q per account enforced by the proxy as in B2):
one noisy account's jobs published first, then nine quiet accounts with 10 jobs each (one
message per account), drained by three worker processes configured as the capacity guidance
says (``RATE_LIMITS`` = Q shared through the ledger table, visibility 360 s, batches of 10
messages). A quiet
job's completion time is its SendCommand's request time (moto's clock, this machine) minus
the moment the last worker started polling (every consumer present, as a warm fleet is).

Rounds: the quiet accounts alone; then with the noisy backlog published as ``fanout publish``
chunks it (50 targets per message); then with the noisy backlog published one target per
message (an ops center that sends a message per target). The figure is the worse ratio of the
quiet accounts' p95 completion time with the backlog to their p95 alone. Every round drains
the whole queue and counts effects: 0 lost and 0 duplicated hold or the round fails.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections import Counter
from typing import Any, Final

from fanout.bench.b2_goodput import API, BURST, QUOTA, command_token, job_effects, job_tokens
from fanout.bench.common import ApiCalls, Host, Result, spawn_worker, worker_report
from fanout.bench.harness import fresh_queues, ops_sqs, worker_env
from fanout.emulator import Organisation
from fanout.publish import publish

__all__ = ["run"]

PROCESSES: Final = 3
QUIET_ACCOUNTS: Final = 9
QUIET_JOBS: Final = 10
TARGET_RATIO: Final = 2.0


def _body(request_id: str, account: str, first: int, count: int) -> str:
    return json.dumps(
        {
            "version": 1,
            "task": "ssm.send_command",
            "request_id": request_id,
            "targets": [
                {"account": account, "params": {"instance_ids": [f"i-{n:017x}"]}}
                for n in range(first, first + count)
            ],
            "params": {"document_name": "AWS-RunShellScript", "parameters": {"commands": ["true"]}},
        }
    )


def _p95(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def _round(
    host: Host,
    org: Organisation,
    *,
    name: str,
    noisy_jobs: int,
    noisy_per_message: int,
    time_limit: float,
) -> dict[str, Any]:
    noisy_account, *others = org.account_ids
    quiet_accounts = others[:QUIET_ACCOUNTS]
    noisy_request, quiet_request = (f"b7-{uuid.uuid4().hex[:12]}" for _ in range(2))
    noisy = [
        _body(noisy_request, noisy_account, n, min(noisy_per_message, noisy_jobs - n))
        for n in range(0, noisy_jobs, noisy_per_message)
    ]
    quiet = [
        _body(quiet_request, account, 100_000 + k * QUIET_JOBS, QUIET_JOBS)
        for k, account in enumerate(quiet_accounts)
    ]
    noisy_tokens, quiet_tokens = job_tokens(noisy, org.region), job_tokens(quiet, org.region)
    expected = noisy_tokens | quiet_tokens
    org = fresh_queues(org, f"b7-{name}", visibility_timeout=360, max_receive_count=5)
    env = worker_env(
        org, host.proxy_url, RATE_LIMITS=f"{API}={QUOTA:g}", RATE_SHARING="table", MAX_WORKERS="16"
    )
    before = {row[3] for row in host.effects()["commands"]}
    host.reset({API: (QUOTA, BURST)})
    sqs = ops_sqs(org)
    started = time.perf_counter()
    # The backlog first, then the quiet accounts: in the queue behind it.
    publish(noisy, sqs=sqs, queue_url=org.queue_url, default_region=org.region)
    publish(quiet, sqs=sqs, queue_url=org.queue_url, default_region=org.region)
    args = ["--queue-url", org.queue_url, "--sqs-endpoint", host.moto_url, "--handler", "worker"]
    args += ["--time-limit", str(time_limit)]
    children = [spawn_worker(args, env) for _ in range(PROCESSES)]
    reports = [worker_report(child, time_limit + 60) for child in children]
    wall = time.perf_counter() - started
    emulator_cpu = host.cpu_since_reset()
    calls = ApiCalls.from_stats(host.stats())
    commands = [row for row in host.effects()["commands"] if row[3] not in before]
    first_at: dict[str, float] = {}
    per_token: Counter[str] = Counter()
    for _account, _region, comment, _id, requested_at in commands:
        if (token := command_token(comment)) is None:
            continue
        per_token[token] += 1
        first_at[token] = min(requested_at, first_at.get(token, math.inf))
    ready = [r["ready_at"] for r in reports if "ready_at" in r]
    origin = max(ready) if ready else math.nan
    quiet_times = [first_at[t] - origin for t in quiet_tokens if t in first_at]
    noisy_times = [first_at[t] - origin for t in noisy_tokens if t in first_at]
    sent = calls.count("SendCommand")
    throttled = calls.count("SendCommand", outcome="throttled")
    return {
        "noisy_jobs": noisy_jobs,
        "noisy_targets_per_message": noisy_per_message,
        "quiet_jobs": len(quiet_tokens),
        "quiet_p95_seconds": _p95(quiet_times),
        "quiet_max_seconds": max(quiet_times, default=math.nan),
        "noisy_last_seconds": max(noisy_times, default=math.nan),
        "wall_seconds": wall,
        "emulator_cpu_seconds": emulator_cpu,
        "send_command_requests": sent,
        "throttled_ratio": throttled / sent if sent else 0.0,
        **job_effects(org, expected, per_token),
        "api_calls_by_operation": calls.by_operation(),
        "instances": reports,
    }


def run(host: Host, org: Organisation, *, quick: bool) -> Result:
    noisy_jobs = 200 if quick else 1000
    # The backlog drains at Q: a full round takes noisy_jobs / Q seconds at least.
    limit = 300.0 if quick else 900.0
    alone = _round(host, org, name="alone", noisy_jobs=0, noisy_per_message=1, time_limit=limit)
    rounds = {
        "chunked": _round(
            host,
            org,
            name="chunked",
            noisy_jobs=noisy_jobs,
            noisy_per_message=50,
            time_limit=limit,
        ),
        "one_per_message": _round(
            host,
            org,
            name="single",
            noisy_jobs=noisy_jobs,
            noisy_per_message=1,
            time_limit=limit,
        ),
    }
    base = alone["quiet_p95_seconds"]
    ratios = {k: v["quiet_p95_seconds"] / base if base > 0 else math.nan for k, v in rounds.items()}
    worst = max(ratios.values())
    clean = all(
        v["lost"] == 0 and v["duplicated_jobs"] == 0 and v["jobs_done"] == v["jobs"]
        for v in (alone, *rounds.values())
    )
    notes = (
        f"quiet p95 alone {base:.1f} s; with {noisy_jobs} noisy jobs published first: "
        + "; ".join(
            f"{label} {rounds[k]['quiet_p95_seconds']:.1f} s ({ratios[k]:.1f}x, "
            f"{rounds[k]['lost']} lost, {rounds[k]['duplicated_jobs']} dup)"
            for k, label in (("chunked", "50 per message"), ("one_per_message", "1 per message"))
        )
    )
    return Result(
        key="B7",
        title="Fairness: quiet accounts' p95 with a noisy backlog / alone",
        measured=worst,
        display=f"{worst:.1f}x; {'0 lost, 0 dup' if clean else 'LOST OR DUPLICATED'}",
        target=f"<= {TARGET_RATIO:g}x, 0 lost, 0 dup",
        met=bool(worst <= TARGET_RATIO and clean),
        notes=notes,
        details={
            "quota_per_account": QUOTA,
            "processes": PROCESSES,
            "quiet_accounts": QUIET_ACCOUNTS,
            "quiet_jobs_per_account": QUIET_JOBS,
            "noisy_jobs": noisy_jobs,
            "alone": alone,
            "rounds": rounds,
            "ratios": ratios,
        },
    )
