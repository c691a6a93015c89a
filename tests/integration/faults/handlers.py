"""Handler factories for the suite's execution environments: the real handler, wrapped.

A factory runs in the environment's process (``ProcessInvoker(handler_factory=...)``), after
the init hook, and returns the handler every invocation there calls.
"""

from __future__ import annotations

import copy
from typing import Any

from fanout.invoker import Call, Handler

__all__ = ["REDELIVERED", "redelivered", "redelivered_worker"]


def redelivered(handler: Handler) -> Handler:
    """Every batch handed to the handler twice, the second time as SQS redelivers a message
    whose first delivery was not acknowledged in time: same message ids, receive count + 1."""

    def twice(event: dict[str, Any], context: Any) -> Any:
        handler(event, context)
        again = copy.deepcopy(event)
        for record in again["Records"]:
            count = int(record["attributes"].get("ApproximateReceiveCount", "1"))
            record["attributes"]["ApproximateReceiveCount"] = str(count + 1)
        return handler(again, context)

    return twice


def redelivered_worker() -> Handler:
    """The real ``lambda_handler``, every batch delivered twice."""
    from handler.app import lambda_handler  # noqa: PLC0415 - imported in the environment

    return redelivered(lambda_handler)


REDELIVERED = Call(f"{__name__}:redelivered_worker")
