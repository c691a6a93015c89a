"""What a task plugin is: a parameter schema, the access it needs per account, a rate, ``run``.

A plugin subclasses :class:`Task`, declares its class attributes and implements :meth:`Task.run`;
``@register`` (in ``registry``) checks the declaration at import time. Plugins import only the
plugin API (``tasks.api``): this module, ``tasks.errors`` and ``tasks.aws``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Final, Protocol

from tasks.errors import InvalidParamsError

__all__ = [
    "TARGET",
    "Access",
    "Call",
    "Job",
    "Progress",
    "RateLimit",
    "RemoteStatus",
    "Task",
    "TaskContext",
    "TaskResult",
]

# The account role of the target account itself; a plugin acting in another account too (a
# directory account, say) names that role in `Task.access` and `Task.other_accounts`.
TARGET: Final = "target"


@dataclass(frozen=True, slots=True)
class RateLimit:
    """The API quota a plugin must respect, per account (and region unless ``global_api``)."""

    api: str  # e.g. "cloudfront:CreateInvalidation"
    per_second: float
    burst: int = 1
    global_api: bool = False  # one quota per account across regions (CloudFront, IAM, ...)
    # Where the figure comes from: an AWS documentation page, or why it is assumed.
    source: str = ""


@dataclass(frozen=True, slots=True)
class Access:
    """What a job may do in one account: the statements of its session policy there."""

    actions: tuple[str, ...] = ()  # scoped to `Task.resource_arns`
    unscoped: tuple[str, ...] = ()  # actions without resource-level permissions: on "*"

    @property
    def all_actions(self) -> tuple[str, ...]:
        return self.actions + self.unscoped


@dataclass(frozen=True, slots=True)
class Job:
    """One task on one target: the unit that ends exactly once (succeeded, or a reason)."""

    key: str  # stable across deliveries: request id + task + target + parameters
    request_id: str
    task: str
    account: str
    region: str
    params: Mapping[str, Any]
    message_id: str
    index: int  # position of the target in its message
    dry_run: bool = False
    # The message was sent back from the dead-letter queue on purpose: a failed job may run again.
    redriven: bool = False


@dataclass(frozen=True, slots=True)
class Call:
    """One AWS operation made on behalf of one or more jobs (several when coalesced)."""

    task: str
    account: str
    region: str
    params: Mapping[str, Any]
    jobs: tuple[Job, ...]
    # The service's idempotency token for this exact call (CloudFront's CallerReference), or a
    # marker the plugin can find the call's effect by (SSM's command comment); "" when none.
    idempotency_key: str = ""

    @property
    def request_ids(self) -> tuple[str, ...]:
        return tuple(sorted({job.request_id for job in self.jobs}))


@dataclass(frozen=True, slots=True)
class TaskResult:
    """What a call produced: the id to follow it by (invalidation id, command id, ...)."""

    resource_id: str
    detail: Mapping[str, Any] = field(default_factory=dict)


class Progress(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PENDING = "pending"


@dataclass(frozen=True, slots=True)
class RemoteStatus:
    """What the target account says about a result; ``progress`` None when it cannot tell."""

    text: str
    progress: Progress | None = None

    @property
    def final(self) -> bool:
        return self.progress in (Progress.SUCCEEDED, Progress.FAILED)


class TaskContext(Protocol):
    """What ``run`` may use: clients in the call's accounts, already assumed-role."""

    @property
    def account(self) -> str: ...

    @property
    def region(self) -> str: ...

    def client(self, service: str, *, account: str | None = None, region: str | None = None) -> Any:
        """A boto3 client for ``service`` in the target account (or one the plugin declared in
        ``other_accounts`` for these parameters; any other account is refused)."""
        ...


class Task(ABC):
    """Base class of task plugins. Subclasses declare every ``ClassVar`` below."""

    name: ClassVar[str]
    description: ClassVar[str]
    service: ClassVar[str]  # boto3 service name of the main API
    params_schema: ClassVar[Mapping[str, Any]]  # JSON Schema of the merged target params
    # What a job may do per account role; TARGET is required.
    access: ClassVar[Mapping[str, Access]]
    rate: ClassVar[RateLimit]
    # True when repeating the identical call (same params and idempotency key) cannot duplicate
    # its effect. Only idempotent calls are retried after 5xx/timeouts or repeated on recovery.
    idempotent: ClassVar[bool] = False
    # Error codes meaning "too much work in progress, later" (deferred, not failed).
    quota_codes: ClassVar[frozenset[str]] = frozenset()
    # Seconds to wait for a response: a call that outlives it is retried or deferred, so it
    # must cover the API's longest legitimate answer (e.g. a synchronous Lambda invoke).
    read_timeout: ClassVar[int] = 30
    # Read-only actions `remote_status` needs (the operators' status role grants them).
    status_actions: ClassVar[tuple[str, ...]] = ()

    @property
    def iam_actions(self) -> tuple[str, ...]:
        """Every action of every account role: what the target role must allow."""
        actions: dict[str, None] = {}
        for access in self.access.values():
            actions.update(dict.fromkeys(access.all_actions))
        return tuple(actions)

    def other_accounts(self, params: Mapping[str, Any]) -> Mapping[str, str]:
        """Accounts a job acts in besides its target, by role (e.g. ``{"directory": ...}``).

        Every one is authorized like a target before any STS call.
        """
        return {}

    def check(self, params: Mapping[str, Any], *, account: str, region: str) -> None:  # noqa: B027
        """Semantic checks beyond the schema, for the target ``account``/``region``; raise
        :class:`InvalidParamsError` (``raise self.fail(...)``)."""

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
        self, role: str, partition: str, account: str, params: Mapping[str, Any] | None
    ) -> tuple[str, ...]:
        """ARNs the scoped actions of ``role`` may touch in ``account``.

        ``params`` is a call's parameters (narrowest scope), or None for every resource of this
        task in the account. They go into the session policy of each AssumeRole, so a job can do
        nothing else even if the target role allows more.
        """
        raise NotImplementedError(f"{self.name} does not declare resource_arns")

    def find_previous(
        self,
        ctx: TaskContext,
        call: Call,
        *,
        since: datetime,
    ) -> TaskResult | None:
        """The effect of an earlier attempt of ``call`` whose outcome is unknown, made after
        ``since`` (its holder died, or the answer was lost to a 5xx or timeout).

        Only non-idempotent plugins that can look their effect up override this. Return that
        result to avoid running twice; None runs the call.
        """
        return None

    @property
    def recoverable(self) -> bool:
        """A call whose outcome is unknown can be settled: repeated (idempotent) or looked up."""
        return self.idempotent or type(self).find_previous is not Task.find_previous

    def remote_status(self, ctx: TaskContext, result: TaskResult) -> RemoteStatus | None:
        """Where the submitted work stands now in the target account (``fanout status
        --refresh``): e.g. an invalidation InProgress, a command Failed. None: nothing to ask."""
        return None

    @abstractmethod
    def run(self, ctx: TaskContext, call: Call) -> TaskResult:
        """Do the call in the target account. Raise botocore errors as they come."""

    @staticmethod
    def fail(reason: str) -> InvalidParamsError:
        """Helper for :meth:`check`: ``raise self.fail("...")``."""
        return InvalidParamsError(reason)
