"""B2: goodput under a quota, and what happens when instances share it.

Workload: N ``ssm.send_command`` jobs over the accounts, each on its own instance id, so no
two jobs can be merged (SendCommand has no coalescing: every job is one call). The proxy grants
Q SendCommand per second per account (token bucket, burst Q) and answers the rest with
``ThrottlingException``. Each worker instance is a process of its own (``worker_proc.py``).

Variants: one worker with RATE_LIMITS = Q (the headline); the original pattern (baseline);
two workers each with its own bucket at Q (two Lambda instances sharing one quota); two workers
at Q/2 each (a static split, the alternative to a shared DynamoDB bucket).

Effects are counted in moto's state: commands per job token (the ``[fanout:<key>]`` prefix of
the comment), so a lost job (no command, not dead-lettered) or a duplicate (two commands) shows.
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
from fanout.emulator import Organisation
from fanout.publish import publish
from handler.api import parse_message

__all__ = ["command_token", "job_effects", "job_tokens", "run", "variant_round"]

API: Final = "ssm:SendCommand"
QUOTA: Final = 5.0  # per account per second: the plugin's declared SendCommand rate
BURST: Final = 5
TARGETS_PER_MESSAGE: Final = 50  # what `fanout publish` puts in one message
TARGET_GOODPUT: Final = 0.9
TARGET_THROTTLED: Final = 0.05
_TOKEN_RE: Final = re.compile(r"^\[fanout:([0-9a-f]{16})\]")


def _bodies(org: Organisation, jobs: int, per_message: int) -> list[str]:
    request_id = f"b2-{uuid.uuid4().hex[:12]}"
    targets = [
        {
            "account": org.account_ids[n % len(org.account_ids)],
            "params": {"instance_ids": [f"i-{n:017x}"]},
        }
        for n in range(jobs)
    ]
    return [
        json.dumps(
            {
                "version": 1,
                "task": "ssm.send_command",
                "request_id": request_id,
                "targets": targets[i : i + per_message],
                "params": {
                    "document_name": "AWS-RunShellScript",
                    "parameters": {"commands": ["true"]},
                },
            }
        )
        for i in range(0, jobs, per_message)
    ]


def job_tokens(bodies: list[str], region: str) -> set[str]:
    return {
        job.key[:16]
        for n, body in enumerate(bodies)
        for job in parse_message(body, message_id=f"m{n}", default_region=region).jobs
    }


def command_token(comment: str | None) -> str | None:
    """The job token a SendCommand's comment starts with (``[fanout:<token>]``), if any."""
    match = _TOKEN_RE.match(comment or "")
    return match.group(1) if match else None


def job_effects(org: Organisation, expected: set[str], per_token: Counter[str]) -> dict[str, int]:
    """How the ``expected`` jobs ended, from the commands run per token and the dead letters:
    a job neither run nor dead-lettered is lost, one run twice is duplicated."""
    dlq_messages, dlq_tokens = _dead_lettered(org)
    done = set(per_token) & expected
    return {
        "jobs": len(expected),
        "jobs_done": len(done),
        "dead_letter_messages": dlq_messages,
        "jobs_dead_lettered": len(dlq_tokens & expected - done),
        "lost": len(expected - done - dlq_tokens),
        "duplicated_jobs": sum(1 for n in per_token.values() if n > 1),
        "extra_commands": sum(n - 1 for n in per_token.values() if n > 1),
    }


def _dead_lettered(org: Organisation) -> tuple[int, set[str]]:
    """Messages in the DLQ and the job tokens they hold."""
    sqs = ops_sqs(org)
    messages = 0
    tokens: set[str] = set()
    while True:
        batch = sqs.receive_message(
            QueueUrl=org.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=300
        ).get("Messages", [])
        if not batch:
            return messages, tokens
        for message in batch:
            messages += 1
            try:
                envelope = parse_message(
                    message["Body"], message_id="dlq", default_region=org.region
                )
            except Exception:  # noqa: BLE001, S112 - an unparseable dead letter holds no job we sent
                continue
            tokens.update(job.key[:16] for job in envelope.jobs)


def variant_round(
    host: Host,
    org: Organisation,
    jobs: int,
    *,
    name: str,
    processes: int,
    handler: str,
    rate: float,
    time_limit: float,
    ledger: bool = True,
    targets_per_message: int = TARGETS_PER_MESSAGE,
    sharing: str = "table",
) -> dict[str, Any]:
    """Publish ``jobs`` SendCommand jobs, drain them with ``processes`` workers, count effects."""
    # A request of its own: the shared ledger would (rightly) replay jobs another variant ran.
    bodies = _bodies(org, jobs, targets_per_message)
    expected = job_tokens(bodies, org.region)
    # As deployed: visibility = 6 x the function timeout (the poller's is 60 s).
    org = fresh_queues(org, f"b2-{name}", visibility_timeout=360, max_receive_count=5)
    env = worker_env(
        org,
        host.proxy_url,
        RATE_LIMITS=f"{API}={rate:g}",
        # "table": the instances share the quota through the ledger table; "instance": each
        # paces itself alone (handler.ratelimit_shared).
        RATE_SHARING=sharing,
        # One lane per account must run at once: a lane waiting for tokens holds its thread.
        MAX_WORKERS="16",
    )
    if not ledger:
        env["LEDGER_TABLE"] = ""  # the in-memory ledger: what the ledger's round trips cost
    before = {row[3] for row in host.effects()["commands"]}
    host.reset({API: (QUOTA, BURST)})
    started = time.perf_counter()
    publish(bodies, sqs=ops_sqs(org), queue_url=org.queue_url, default_region=org.region)
    args = ["--queue-url", org.queue_url, "--sqs-endpoint", host.moto_url, "--handler", handler]
    args += ["--time-limit", str(time_limit)]
    children = [spawn_worker(args, env) for _ in range(processes)]
    reports = [worker_report(child, time_limit + 60) for child in children]
    wall = time.perf_counter() - started
    emulator_cpu = host.cpu_since_reset()
    stats = host.stats()
    calls = ApiCalls.from_stats(stats)
    line = stats["timelines"].get(API, {})
    span = (line["last_ok"] - line["first"]) if line.get("last_ok") else float("nan")
    ok = calls.count("SendCommand", outcome="ok")
    throttled = calls.count("SendCommand", outcome="throttled")
    sent = calls.count("SendCommand")
    commands = [row for row in host.effects()["commands"] if row[3] not in before]
    per_token = Counter(t for row in commands if (t := command_token(row[2])) is not None)
    achieved = ok / span if span > 0 else 0.0
    return {
        "processes": processes,
        "targets_per_message": targets_per_message,
        "handler": handler,
        "rate_limit": rate,
        "rate_sharing": sharing if ledger else "instance",
        "wall_seconds": wall,
        "emulator_cpu_seconds": emulator_cpu,
        "quota_span_seconds": span,
        "achieved_per_second": achieved,
        "goodput": achieved / (QUOTA * len(org.account_ids)),
        "send_command_requests": sent,
        "send_command_ok": ok,
        "throttled": throttled,
        "throttled_ratio": throttled / sent if sent else 0.0,
        **job_effects(org, expected, per_token),
        "api_calls_by_operation": calls.by_operation(),
        "instances": reports,
    }


def _line(v: dict[str, Any]) -> str:
    return (
        f"{v['goodput']:.2f} of quota, {v['throttled_ratio']:.1%} throttled, {v['lost']} lost, "
        f"{v['duplicated_jobs']} dup, {v['wall_seconds']:.0f} s"
    )


def run(host: Host, org: Organisation, *, quick: bool) -> Result:
    jobs = 200 if quick else 1000
    limit = 150.0 if quick else 240.0

    def variant(
        name: str,
        processes: int,
        handler: str,
        rate: float,
        *,
        ledger: bool = True,
        sharing: str = "table",
    ) -> dict[str, Any]:
        return variant_round(
            host,
            org,
            jobs,
            name=name,
            processes=processes,
            handler=handler,
            rate=rate,
            time_limit=limit,
            ledger=ledger,
            sharing=sharing,
        )

    one = variant("one", 1, "worker", QUOTA)
    memory = variant("memory", 1, "worker", QUOTA, ledger=False)
    base = variant("base", 1, "baseline-ssm", QUOTA)
    # Two instances pacing themselves alone: what sharing the quota through the table replaces.
    two = variant("two", 2, "worker", QUOTA, sharing="instance")
    split = variant("split", 2, "worker", QUOTA / 2, sharing="instance")
    met = (
        one["goodput"] >= TARGET_GOODPUT
        and one["throttled_ratio"] <= TARGET_THROTTLED
        and one["lost"] == 0
        and one["duplicated_jobs"] == 0
    )
    accounts = len(org.account_ids)
    notes = (
        f"{jobs} SendCommand jobs (one instance each: no coalescing), {accounts} accts, "
        f"Q={QUOTA:g}/s/acct. 1 worker: {_line(one)}. Same, in-memory ledger: {_line(memory)}. "
        f"Baseline: {_line(base)}. "
        f"2 workers at Q each: {_line(two)}. 2 workers at Q/2 each: {_line(split)}"
    )
    return Result(
        key="B2",
        title="Goodput under a quota (achieved rate / (Q x accounts))",
        measured=one["goodput"],
        display=f"{one['goodput']:.2f}; {one['throttled_ratio']:.1%} throttled; "
        f"{one['lost']} lost; {one['duplicated_jobs']} dup",
        target=f">= {TARGET_GOODPUT}, <= {TARGET_THROTTLED:.0%} throttled, 0 lost, 0 dup",
        met=met,
        notes=notes,
        details={
            "quota_per_account": QUOTA,
            "burst": BURST,
            "accounts": accounts,
            "jobs": jobs,
            "targets_per_message": TARGETS_PER_MESSAGE,
            "one_worker": one,
            "one_worker_in_memory_ledger": memory,
            "baseline": base,
            "two_workers_own_buckets": two,
            "two_workers_split_quota": split,
        },
    )
