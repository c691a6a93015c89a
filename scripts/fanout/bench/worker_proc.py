"""One worker instance in a process of its own: a poller feeding a handler until the queue is
empty, then one JSON line on stdout with what it did (and its peak RSS).

A separate process is what a Lambda execution environment is: its own sessions, clients and
token buckets (B2 runs two of these against one quota), and its own memory high-water mark (B4).
The handler's environment comes from the parent. Nothing here imports moto.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import warnings
from dataclasses import asdict

import boto3

from fanout.bench import baseline
from fanout.bench.poll import TimedHandler, drain, worker_handler

__all__ = ["main", "peak_rss_mb", "vm_hwm_mb"]


def peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB. It survives execve, so the launcher must be small (see
    # common.spawn): a process forked from a big parent would report the parent's peak.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def vm_hwm_mb() -> float:
    """The kernel's high-water mark of this process image alone (Linux), as a cross-check."""
    try:
        with open("/proc/self/status") as status:  # noqa: PTH123 - a procfs read
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--sqs-endpoint", required=True, help="moto, directly (not the proxy)")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--handler", choices=("worker", "baseline-ssm"), default="worker")
    parser.add_argument("--time-limit", type=float, default=300.0)
    args = parser.parse_args()
    # Powertools warns on every invocation whose metrics it already auto-flushed.
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    started = time.perf_counter()
    if args.handler == "worker":
        handler = TimedHandler(worker_handler())
    else:
        baseline.reset()
        handler = TimedHandler(baseline.ssm_handler)
    # Credentials come from the environment the parent set (the emulator's fake ones).
    sqs = boto3.client("sqs", region_name=args.region, endpoint_url=args.sqs_endpoint)
    rss_ready = peak_rss_mb()
    ready_at = time.time()  # when this instance starts polling (B7 times completions from it)
    drained = drain(args.queue_url, sqs, handler, time_limit_s=args.time_limit)
    report = {
        **asdict(drained),
        "handler_seconds": handler.seconds,
        "invocations": handler.invocations,
        "process_seconds": time.perf_counter() - started,
        "ready_at": ready_at,
        "rss_ready_mb": rss_ready,
        "peak_rss_mb": peak_rss_mb(),
        "vm_hwm_mb": vm_hwm_mb(),
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
