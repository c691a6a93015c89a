"""Lambda entry point: a thin adapter from the SQS event to the batch worker.

The worker (sessions, clients, rate buckets) is built on the first invocation and kept for the
life of the execution environment; ``reset()`` drops it (tests, local poller after env changes).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from handler.deadline import Deadline
from handler.settings import get_settings, tracing_enabled
from handler.worker import BatchWorker

logger = Logger()
metrics = Metrics()
# Every record failing is reported as such, not raised: SQS handles both the same way, and a
# raised error would count as a function error in the alarms.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@cache
def _worker() -> BatchWorker:
    settings = get_settings()
    # The environment is read here, not at import, so a poller or test may set it late.
    metrics.namespace = settings.metrics_namespace
    metrics.service = settings.service_name
    logger.service = settings.service_name
    return BatchWorker.from_settings(settings)


def reset() -> None:
    """Forget settings, sessions and clients (the next call reads the environment again)."""
    get_settings.cache_clear()
    _worker.cache_clear()


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    records = event.get("Records", [])
    # arn:aws:lambda:region:ACCOUNT:function:name - the account the worker must not target.
    own_account = context.invoked_function_arn.split(":")[4]
    verdicts = _worker().process(
        records, Deadline(context.get_remaining_time_in_millis), own_account=own_account
    )
    verdicts.metrics.publish(metrics)
    return process_partial_response(
        event=event, record_handler=verdicts.settle, processor=processor, context=context
    )


def _traced(handler: Callable[[dict[str, Any], LambdaContext], PartialItemFailureResponse]) -> Any:
    """X-Ray only when asked for: the SDK costs ~0.4 s of cold start, so it is never imported
    otherwise."""
    from aws_lambda_powertools import Tracer  # noqa: PLC0415 - deliberately lazy

    return Tracer().capture_lambda_handler(handler)


if tracing_enabled():
    lambda_handler = _traced(lambda_handler)
