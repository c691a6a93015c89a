"""B4: peak memory of one execution environment processing a large batch.

A fresh worker process (``worker_proc.py``, which imports no moto) polls one batch of 10
messages x 100 ``cloudfront.invalidate`` targets (10 per account, distinct paths) and runs it
through the real handler against the emulator, DynamoDB ledger included, as deployed. Its peak
RSS is ``ru_maxrss`` read at the end; the process is launched through a small shell so that the
figure is not inherited from this (larger) process.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Final

from fanout.bench.common import Host, Result, spawn_worker, worker_report
from fanout.bench.harness import fresh_queues, ops_sqs, worker_env
from fanout.emulator import Organisation
from fanout.publish import publish

__all__ = ["run"]

TARGET_MB: Final = 128.0


def _bodies(org: Organisation, messages: int, targets: int) -> list[str]:
    bodies = []
    for m in range(messages):
        entries = []
        for t in range(targets):
            account = org.targets[t % len(org.targets)]
            entries.append(
                {
                    "account": account.account,
                    "params": {
                        "distribution_id": account.distribution_ids[t % 2],
                        "paths": [f"/b4/{uuid.uuid4().hex[:8]}/{m}/{t}.html"],
                    },
                }
            )
        bodies.append(
            json.dumps(
                {
                    "version": 1,
                    "task": "cloudfront.invalidate",
                    "request_id": f"b4-{uuid.uuid4().hex[:12]}",
                    "targets": entries,
                }
            )
        )
    return bodies


def run(host: Host, org: Organisation, *, quick: bool) -> Result:
    messages, targets = (10, 40) if quick else (10, 100)
    org = fresh_queues(org, "b4")
    bodies = _bodies(org, messages, targets)
    publish(bodies, sqs=ops_sqs(org), queue_url=org.queue_url, default_region=org.region)
    host.reset()
    started = time.perf_counter()
    child = spawn_worker(
        ["--queue-url", org.queue_url, "--sqs-endpoint", host.moto_url, "--time-limit", "120"],
        worker_env(org, host.proxy_url),
    )
    report = worker_report(child, 180)
    seconds = time.perf_counter() - started
    calls = host.calls()
    peak = float(report.get("peak_rss_mb", float("nan")))
    jobs = messages * targets
    ok = report.get("deleted") == messages and not report.get("handler_errors")
    return Result(
        key="B4",
        title="Peak RSS, 10 messages x 100 targets",
        measured=peak,
        display=f"{peak:.0f} MB",
        target=f"<= {TARGET_MB:.0f} MB",
        met=peak <= TARGET_MB and ok,
        notes=(
            f"{jobs} jobs in {report.get('batches')} invocation(s), {seconds:.1f} s, "
            f"{report.get('deleted')}/{messages} messages done; after imports "
            f"{report.get('rss_ready_mb', float('nan')):.0f} MB; VmHWM "
            f"{report.get('vm_hwm_mb', float('nan')):.0f} MB; "
            f"{calls.count('CreateInvalidation')} CreateInvalidation, "
            f"{calls.count('UpdateItem')} ledger writes"
        ),
        details={
            "messages": messages,
            "targets_per_message": targets,
            "process": report,
            "api_calls_by_operation": calls.by_operation(),
        },
    )
