"""A worker process: the local poller and the real ``lambda_handler``, until the queue is empty.

Run as ``python -m tests.integration.faults.runner`` with the worker's environment (the tests
point ``AWS_ENDPOINT_URL`` at the fault proxy). A separate process (group: the poller and its
execution environment) is what a test can SIGKILL in the middle of a batch, and two of them
are two event source pollers.

``worker_invoker`` is how every poller of the suite, here and in the test process, runs an
invocation: in an execution environment's process of its own, killed at the function's
timeout, tuned by ``tuning.in_environment``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import boto3

from fanout.invoker import Call, ProcessInvoker
from fanout.poller import Poller

__all__ = ["worker_invoker"]


def worker_invoker(
    *, ledger_offset_s: float = 0.0, handler_factory: Call | None = None
) -> ProcessInvoker:
    """The real handler (or ``handler_factory``'s) in a killable process, with the suite's
    shortened waits and, with ``ledger_offset_s``, its ledger's clock shifted."""
    init = Call(
        "tests.integration.faults.tuning:in_environment", {"ledger_offset_s": ledger_offset_s}
    )
    return ProcessInvoker(init=init, handler_factory=handler_factory)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--sqs-endpoint", required=True, help="where the poller reads the queue")
    parser.add_argument("--function-timeout", type=float, default=20.0)
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--ledger-offset", type=float, default=0.0, help="seconds ahead")
    parser.add_argument("--stats", type=Path, required=True)
    parser.add_argument("--ready", type=Path, help="touched when about to poll")
    args = parser.parse_args(argv)

    sqs = boto3.client("sqs", endpoint_url=args.sqs_endpoint)
    with Poller(
        args.queue_url,
        invoker=worker_invoker(ledger_offset_s=args.ledger_offset),
        sqs=sqs,
        batch_size=args.batch_size,
        function_timeout_s=args.function_timeout,
    ) as poller:
        poller.queue_arn  # noqa: B018 - resolved before "ready": the next call receives
        if args.ready:
            args.ready.touch()
        stats = poller.run(until_empty=True, time_limit_s=args.time_limit)
    args.stats.write_text(json.dumps(asdict(stats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
