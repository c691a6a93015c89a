"""What a task plugin is: a parameter schema, IAM actions, a rate, and ``run``.

A plugin subclasses :class:`Task`, declares its class attributes and implements :meth:`Task.run`;
``@register`` (in ``registry``) checks the declaration at import time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from handler.exceptions import InvalidParamsError

__all__ = ["Call", "Job", "RateLimit", "Task", "TaskContext", "TaskResult"]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """The API quota a plugin must respect, per account (and region unless ``global_api``)."""

    api: str  # e.g. "cloudfront:CreateInvalidation"
    per_second: float
    burst: int = 1
    global_api: bool = False  # one quota per account across regions (CloudFront, IAM, ...)


@dataclass(frozen=True, slots=True)
class Job:
    """One task on one target: the unit that ends succeeded, retried or dead-lettered."""

    key: str  # stable across redeliveries: request id + target + parameters
    request_id: str
    task: str
    account: str
    region: str
    params: Mapping[str, Any]
    message_id: str
    index: int  # position of the target in its message
    dry_run: bool = False
    canary: bool = False  # runs first; the message's other jobs wait for its success
    after_canary: bool = False
    max_errors: int | None = None  # stop the message's fan-out after more failures than this
    # The message was redriven from the DLQ on purpose: a failed job may run again.
    redriven: bool = False


@dataclass(frozen=True, slots=True)
class Call:
    """One AWS operation made on behalf of one or more jobs (several when coalesced)."""

    task: str
    account: str
    region: str
    params: Mapping[str, Any]
    jobs: tuple[Job, ...]

    @property
    def request_ids(self) -> tuple[str, ...]:
        return tuple(sorted({job.request_id for job in self.jobs}))


@dataclass(frozen=True, slots=True)
class TaskResult:
    """What a call produced: the id to follow it by (invalidation id, command id, ...)."""

    resource_id: str
    detail: Mapping[str, Any] = field(default_factory=dict)


class TaskContext(Protocol):
    """What ``run`` may use: clients in the call's target account, already assumed-role."""

    @property
    def account(self) -> str: ...

    @property
    def region(self) -> str: ...

    def client(self, service: str, *, account: str | None = None, region: str | None = None) -> Any:
        """A boto3 client for ``service`` in the target (or another allowed) account."""
        ...


class Task(ABC):
    """Base class of task plugins. Subclasses declare every ``ClassVar`` below."""

    name: ClassVar[str]
    description: ClassVar[str]
    service: ClassVar[str]  # boto3 service name of the main API
    params_schema: ClassVar[Mapping[str, Any]]  # JSON Schema of the merged target params
    iam_actions: ClassVar[tuple[str, ...]]  # what the target role must allow
    # The subset of iam_actions without resource-level permissions (granted on "*").
    unscoped_actions: ClassVar[tuple[str, ...]] = ()
    rate: ClassVar[RateLimit]
    # True when repeating a call whose outcome is unknown cannot duplicate its effect
    # (e.g. a deterministic client token). Only idempotent calls are retried on 5xx/timeouts.
    idempotent: ClassVar[bool] = False
    # Error codes meaning "too much work in progress, later" (deferred, not failed).
    quota_codes: ClassVar[frozenset[str]] = frozenset()
    # Seconds to wait for a response: a call that outlives it is retried or deferred, so it
    # must cover the API's longest legitimate answer (e.g. a synchronous Lambda invoke).
    read_timeout: ClassVar[int] = 30

    def check(self, params: Mapping[str, Any]) -> None:  # noqa: B027 - optional hook
        """Semantic checks beyond the schema; raise :class:`InvalidParamsError`."""

    def plan(self, jobs: Sequence[Job]) -> list[Call]:
        """Turn the batch's jobs of this task into calls; the default is one call per job."""
        return [
            Call(task=self.name, account=j.account, region=j.region, params=j.params, jobs=(j,))
            for j in jobs
        ]

    def rate_key(self, call: Call) -> tuple[str, str, str]:
        """Calls with the same key share a token bucket and run one after another."""
        region = "global" if self.rate.global_api else call.region
        return (call.account, region, self.rate.api)

    def resource_arns(
        self, partition: str, account: str, params: Mapping[str, Any] | None
    ) -> tuple[str, ...]:
        """ARNs the scoped actions may touch in ``account``.

        ``params`` is a call's parameters (narrowest scope), or None for every resource of this
        task in the account. The worker puts these into the session policy of each AssumeRole,
        so a job can do nothing else even if the target role allows more.
        """
        raise NotImplementedError(f"{self.name} does not declare resource_arns")

    def find_previous(self, ctx: TaskContext, call: Call) -> TaskResult | None:  # noqa: ARG002
        """The effect of an earlier attempt whose outcome is unknown (its holder died, or the
        answer was lost to a 5xx or timeout).

        Called before re-running a call whose jobs the ledger shows may have run. Return that
        result to avoid running twice; None runs the call.
        """
        return None

    @abstractmethod
    def run(self, ctx: TaskContext, call: Call) -> TaskResult:
        """Do the call in the target account. Raise botocore errors as they come."""

    @staticmethod
    def fail(reason: str) -> InvalidParamsError:
        """Helper for :meth:`check`: ``raise self.fail("...")``."""
        return InvalidParamsError(reason)
