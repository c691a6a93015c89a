"""The ``context`` object Lambda passes to a handler, for local invocations.

Standard library only: the execution environment's process (``fanout.runtime``) rebuilds it
from the invoker's fields before anything of the worker is imported.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass
from typing import Any

__all__ = ["LocalLambdaContext"]


@dataclass
class LocalLambdaContext:
    """What Lambda passes as ``context``, with a deadline measured from creation."""

    function_name: str
    function_version: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    aws_request_id: str
    log_group_name: str
    log_stream_name: str
    # time.monotonic() at which the invocation times out. CLOCK_MONOTONIC is system-wide on
    # Linux and macOS, so the invoker and the environment's process compare the same instant.
    deadline: float

    @classmethod
    def create(
        cls, *, function_name: str, region: str, account: str, timeout_s: float, memory_mb: int
    ) -> LocalLambdaContext:
        return cls(
            function_name=function_name,
            function_version="$LATEST",
            invoked_function_arn=f"arn:aws:lambda:{region}:{account}:function:{function_name}",
            memory_limit_in_mb=memory_mb,
            aws_request_id=str(uuid.uuid4()),
            log_group_name=f"/aws/lambda/{function_name}",
            log_stream_name=time.strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex,
            deadline=time.monotonic() + timeout_s,
        )

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))

    def postponed(self, seconds: float) -> LocalLambdaContext:
        """The same invocation with its deadline ``seconds`` later (an Init phase took them)."""
        return dataclasses.replace(self, deadline=self.deadline + seconds)

    def to_fields(self) -> dict[str, Any]:
        """JSON-able fields; ``LocalLambdaContext(**fields)`` rebuilds it."""
        return dataclasses.asdict(self)
