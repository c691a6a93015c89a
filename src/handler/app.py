"""Lambda entry point: a thin adapter from the SQS event to the worker, and the one place the
worker's parts are wired together.

The worker (sessions, clients, rate buckets, the ledger) is built on the first invocation and
kept for the life of the execution environment; ``reset()`` drops it (tests, the local poller
after environment changes).

Where to look next: which accounts the worker may enter is decided in ``handler.authorization``;
what happens to each job (and to a throttled one) in ``handler.lifecycle``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cache
from typing import Any

import botocore.session
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext

from handler.alarms import Alarms
from handler.authorization import Authorizer
from handler.clients import OwnClients, TargetClients
from handler.completion import Completions
from handler.deadletter import DeadLetters
from handler.deadline import Deadline
from handler.dispatch import Dispatcher
from handler.durations import CallDurations
from handler.dynamo import Table
from handler.exceptions import ConfigurationError
from handler.execute import CallRunner
from handler.expansion import Expander
from handler.ledger import Ledger
from handler.ledger_dynamodb import DynamoDBLedger
from handler.ledger_memory import InMemoryLedger
from handler.organization import Directory
from handler.ratelimit import RateLimiter
from handler.ratelimit_shared import SharedRates
from handler.requests import RequestLedger
from handler.requests_dynamodb import DynamoDBRequests
from handler.requests_memory import InMemoryRequests
from handler.requeue import Requeue
from handler.rollout import RolloutGate
from handler.sessions import RoleSessions
from handler.settings import Settings, get_settings, tracing_enabled
from handler.settle import Settler
from handler.sqs import BatchResponse
from handler.tracking import RequestTracker
from handler.worker import Worker

logger = Logger()
metrics = Metrics()
_clock: Callable[[], float] = time.time


def build_worker(settings: Settings, *, clock: Callable[[], float] = time.time) -> Worker:
    """The worker and its parts, each built once, none reaching back for another.

    Long on purpose: the composition root is the one place that says what is wired to what,
    read top to bottom; splitting it would hide the wiring again."""
    base = botocore.session.get_session()
    # The worker's own calls use the regional STS endpoint (the only one an STS VPC interface
    # endpoint serves).
    base.set_config_variable("sts_regional_endpoints", "regional")
    own = OwnClients(settings, base)
    directory = Directory(lambda: own("organizations"))
    authorizer = Authorizer(settings, directory)
    sessions = RoleSessions(
        settings, sts=lambda: own("sts"), check=authorizer.check, base_session=base
    )
    ledger: Ledger
    requests: RequestLedger
    if settings.ledger_table:
        ledger = DynamoDBLedger(settings.ledger_table, lambda: own("dynamodb"), clock)
        requests = DynamoDBRequests(settings.ledger_table, lambda: own("dynamodb"), clock)
    else:
        ledger, requests = InMemoryLedger(clock), InMemoryRequests(clock)
    shared = None
    if settings.ledger_table and settings.rate_sharing == "table":
        shared = SharedRates(Table(settings.ledger_table, lambda: own("dynamodb")), clock)
    runner = CallRunner(
        TargetClients(settings, sessions),
        RateLimiter(overrides=settings.rate_limits, shared=shared),
        CallDurations(),
        narrow_sessions=settings.session_policy_scope == "resource",
    )
    dead_letters = DeadLetters(settings.dead_letter_queue_url, lambda: own("sqs"))
    requeue = Requeue(settings.work_queue_url, lambda: own("sqs"))
    return Worker(
        settings,
        authorizer=authorizer,
        dispatcher=Dispatcher(
            ledger,
            runner,
            max_workers=settings.max_workers,
            rollout=RolloutGate(requests, clock),
            clock=clock,
        ),
        settler=Settler(ledger, dead_letters, requeue),
        ledger=ledger,
        tracker=RequestTracker(
            requests,
            Completions(
                requests=requests,
                jobs=ledger.jobs,
                event_bus=settings.event_bus_name,
                events=lambda: own("events"),
                results_bucket=settings.results_bucket,
                s3=lambda: own("s3"),
                clock=clock,
            ),
            Alarms(lambda: own("cloudwatch")),
            max_workers=settings.max_workers,
        ),
        dead_letters=dead_letters,
        expander=Expander(
            directory=directory,
            authorizer=authorizer,
            requests=requests,
            requeue=requeue,
            default_region=settings.region,
        ),
        clock=clock,
    )


@cache
def _worker() -> Worker:
    settings = get_settings()
    # The environment is read here, not at import, so a poller or test may set it late.
    metrics.namespace = settings.metrics_namespace
    metrics.service = settings.service_name
    logger.service = settings.service_name
    return build_worker(settings, clock=_clock)


def reset(*, clock: Callable[[], float] | None = None) -> None:
    """Forget settings, sessions and clients (the next call reads the environment again);
    ``clock`` is the wall clock the next worker's ledger uses (tests shift it)."""
    global _clock  # noqa: PLW0603 - the one injectable of the cached worker
    _clock = clock or time.time
    get_settings.cache_clear()
    _worker.cache_clear()


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> BatchResponse:
    # arn:aws:lambda:region:ACCOUNT:function:name - the account the worker must not target.
    own_account = context.invoked_function_arn.split(":")[4]
    try:
        result = _worker().process(
            event.get("Records", []),
            Deadline(context.get_remaining_time_in_millis),
            own_account=own_account,
        )
    except ConfigurationError as exc:
        # Not the messages' fault: the whole batch comes back, and the error alarm fires.
        logger.exception("the worker is misconfigured", extra={"reason": exc.reason})
        raise
    result.metrics.publish(metrics)
    return result.response


def _traced(handler: Callable[[dict[str, Any], LambdaContext], BatchResponse]) -> Any:
    """X-Ray only when asked for: the SDK costs ~0.4 s of cold start, so it is never imported
    otherwise."""
    from aws_lambda_powertools import Tracer  # noqa: PLC0415 - deliberately lazy

    return Tracer().capture_lambda_handler(handler)


if tracing_enabled():
    lambda_handler = _traced(lambda_handler)
