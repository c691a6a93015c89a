"""A worker process: the local poller and the real ``lambda_handler``, until the queue is empty.

Run as ``python -m tests.integration.faults.runner`` with the worker's environment (the tests
point ``AWS_ENDPOINT_URL`` at the fault proxy). A separate process is what a test can SIGKILL in
the middle of a batch, and two of them are two Lambda execution environments.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import boto3

from fanout.poller import Poller
from tests.integration.faults.tuning import shorten_waits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--sqs-endpoint", required=True, help="where the poller reads the queue")
    parser.add_argument("--function-timeout", type=float, default=20.0)
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--stats", type=Path, required=True)
    parser.add_argument("--ready", type=Path, help="touched when about to poll")
    args = parser.parse_args(argv)

    shorten_waits(setattr)
    from handler import app  # noqa: PLC0415 - after the patch, as the tests do

    sqs = boto3.client("sqs", endpoint_url=args.sqs_endpoint)
    poller = Poller(
        args.queue_url,
        handler=app.lambda_handler,
        sqs=sqs,
        batch_size=args.batch_size,
        function_timeout_s=args.function_timeout,
    )
    poller.queue_arn  # noqa: B018 - resolved before "ready": the next call receives
    if args.ready:
        args.ready.touch()
    stats = poller.run(until_empty=True, time_limit_s=args.time_limit)
    args.stats.write_text(json.dumps(asdict(stats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
