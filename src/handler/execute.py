"""One call in a target account: its clients, its rate limit, its retries, its recovery.

:meth:`CallRunner.run` makes the call (or, for a call whose earlier attempt may have taken
effect, settles it the only safe way the plugin offers: repeat it identically when idempotent,
look it up when it can be looked up, refuse otherwise) and says how it went as a
:class:`CallOutcome` - never raising, except for the worker's own misconfiguration.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from aws_lambda_powertools import Logger

from handler.clients import TargetClientKey, TargetClientProvider
from handler.deadline import Deadline
from handler.durations import CallDurations
from handler.exceptions import (
    ConfigurationError,
    FanoutError,
    OutcomeUnknownError,
    PermanentError,
    RetryableError,
    ThrottledError,
    classify_aws_error,
)
from handler.policy import session_policy
from handler.ratelimit import RateLimiter, TokenBucket
from handler.retry import call_with_retry
from handler.telemetry import BatchMetrics
from tasks.aws import partition_of
from tasks.base import TARGET, Call, Task, TaskResult

__all__ = ["CallOutcome", "CallRunner"]

logger = Logger(child=True)
T = TypeVar("T")

# Clock skew allowed between this worker and the service when looking an effect up by time.
LOOKUP_SKEW = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class CallOutcome:
    result: TaskResult | None = None
    error: FanoutError | None = None


class _TargetContext:
    """The :class:`TaskContext` handed to a plugin: clients in the accounts the call declared."""

    def __init__(
        self, clients: TargetClientProvider, call: Call, task: Task, *, narrow: bool
    ) -> None:
        self._clients = clients
        self._call = call
        self._task = task
        self._narrow = narrow
        self._others = task.other_accounts(call.params)
        # Calls of non-idempotent tasks get no botocore retries: a retried 5xx could run twice.
        self._attempts = 2 if task.idempotent else 1

    @property
    def account(self) -> str:
        return self._call.account

    @property
    def region(self) -> str:
        return self._call.region

    def client(self, service: str, *, account: str | None = None, region: str | None = None) -> Any:
        account = account or self._call.account
        region = region or self._call.region
        roles = {role for role, other in self._others.items() if other == account}
        if account == self._call.account:
            roles.add(TARGET)
        if not roles:
            raise PermanentError(
                f"{self._task.name} asked for a client in account {account}, which its "
                "parameters do not name: refused"
            )
        # The narrowest scope is the call's own resources; the default scope is the task's
        # resources in the account, which keeps one session (one STS call) per account.
        policy = session_policy(
            self._task,
            partition_of(region),
            account,
            roles,
            self._call.params if self._narrow else None,
        )
        key = TargetClientKey(
            account, region, service, policy, self._attempts, self._task.read_timeout
        )
        return self._clients.client(key, request_id=self._call.request_ids[0])


class CallRunner:
    def __init__(
        self,
        clients: TargetClientProvider,
        limiter: RateLimiter,
        durations: CallDurations,
        *,
        narrow_sessions: bool = False,
    ) -> None:
        self._clients = clients
        self._limiter = limiter
        self._durations = durations
        self._narrow = narrow_sessions

    def expected(self, task: Task) -> float:
        return self._durations.expected(task.name)

    def expect_calls(self, key: tuple[str, str, str], calls: int) -> AbstractContextManager[None]:
        """A lane of ``calls`` calls of rate key ``key`` runs inside this block."""
        return self._limiter.expect(key, calls)

    def run(
        self,
        task: Task,
        call: Call,
        deadline: Deadline,
        metrics: BatchMetrics,
        *,
        recover_since: float | None = None,
    ) -> CallOutcome:
        """Make ``call``, paced by its rate key's bucket and retried while time remains
        (``handler.retry``). With ``recover_since`` (the job's first claim, epoch seconds), an
        earlier attempt may have taken effect after that time.

        Its length is its two closures, the attempt and the retry hook handed to the retry
        loop: they share the call's context, bucket and deadline."""
        context = _TargetContext(self._clients, call, task, narrow=self._narrow)
        key = task.rate_key(call)
        bucket = self._limiter.bucket(key, task.rate)

        def attempt() -> TaskResult:
            try:
                if recover_since is not None:
                    previous = self._previous(task, context, call, recover_since, metrics)
                    if previous is not None:
                        return previous
                max_wait = deadline.remaining_s() - self.expected(task)
                self._limiter.acquire(key, task.rate, max_wait=max_wait)
                return self._timed(task, metrics, lambda: task.run(context, call))
            except ConfigurationError:
                raise
            except Exception as exc:
                raise classify_aws_error(exc, quota_codes=task.quota_codes) from exc

        def on_retry(error: FanoutError) -> None:
            _note_throttle(error, bucket, task, metrics)
            logger.info(
                "retrying call",
                extra={"account": key[0], "api": key[2], "error_class": error.error_class},
            )

        try:
            result = call_with_retry(
                attempt, idempotent=task.idempotent, deadline=deadline, on_retry=on_retry
            )
        except (PermanentError, RetryableError) as exc:
            if isinstance(exc, RetryableError):  # a throttle retried in vain slows the bucket
                _note_throttle(exc, bucket, task, metrics)
            return CallOutcome(error=exc)
        bucket.succeeded()
        return CallOutcome(result=result)

    def _timed(self, task: Task, metrics: BatchMetrics, fn: Callable[[], T]) -> T:
        started = time.monotonic()
        try:
            return fn()
        finally:
            elapsed = time.monotonic() - started
            self._durations.record(task.name, elapsed)
            metrics.duration(task.name, elapsed)

    def preflight(self, task: Task, call: Call) -> CallOutcome:
        """A dry run: everything but the task's own call - the role assumed in every account
        the call acts in, and one call in the target's region with it (GetCallerIdentity: no
        permission needed) which fails when the region is not enabled for the account or does
        not exist. An unassumable account or an unusable region is this target's answer, not a
        crash of the request."""
        context = _TargetContext(self._clients, call, task, narrow=self._narrow)
        accounts = {call.account, *task.other_accounts(call.params).values()}
        for account in sorted(accounts):
            try:
                sts = context.client("sts", account=account)
            except ConfigurationError:
                raise
            except Exception as exc:  # noqa: BLE001 - reported as "would not run: <reason>"
                error = classify_aws_error(exc)
                return CallOutcome(error=error.with_reason(f"would not run: {error.reason}"))
            try:
                sts.get_caller_identity()
            except Exception as exc:  # noqa: BLE001 - reported as "would not run: <reason>"
                error = classify_aws_error(exc)
                reason = f"would not run: {error.reason}"
                if isinstance(error, PermanentError):
                    reason = (
                        f"would not run: region {call.region} cannot be used in account "
                        f"{account} (not enabled for it, or no such region): {error.reason}"
                    )
                return CallOutcome(error=error.with_reason(reason))
        detail = {"would_run": task.name, "accounts": sorted(accounts)}
        return CallOutcome(result=TaskResult(resource_id="dry-run", detail=detail))

    def _previous(
        self,
        task: Task,
        context: _TargetContext,
        call: Call,
        since: float,
        metrics: BatchMetrics,
    ) -> TaskResult | None:
        """The earlier attempt's effect, or None when the call may (and must) be made."""
        if task.idempotent:
            return None  # the identical call is the recovery: the service deduplicates it
        if not task.recoverable:
            raise OutcomeUnknownError(
                f"an earlier attempt of this {task.name} call may have run (its answer was lost) "
                "and it can neither be repeated safely nor looked up: not run again; redrive "
                "the dead letter to run it anyway"
            )
        after = datetime.fromtimestamp(since, UTC) - LOOKUP_SKEW
        return self._timed(task, metrics, lambda: task.find_previous(context, call, since=after))


def _note_throttle(
    error: FanoutError, bucket: TokenBucket, task: Task, metrics: BatchMetrics
) -> None:
    """A throttle halves the rate key's bucket (``handler.ratelimit``) and is counted."""
    if isinstance(error, ThrottledError):
        bucket.throttled()
        metrics.count("Throttles", task.name)
