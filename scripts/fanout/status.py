"""``fanout status``: where a request stands, from the worker's ledger.

The request record says how many targets the whole request has and how many ended in each
state; the job records say, per target, its state, attempts, result id and last error. A request
is finished only when every expected target ended - not when the targets seen so far did
(pending = expected - ended). With ``refresh``, each plugin's ``remote_status`` hook asks the
target account where the submitted work stands (an invalidation may still be in progress after
CreateInvalidation succeeded; a command may fail on its instances), through a role assumed with
the operator's own credentials.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from handler.api import (
    JobRecord,
    JobState,
    Options,
    Progress,
    RemoteStatus,
    RequestRecord,
    StatusSource,
    TaskResult,
    get_task,
    parse_message,
    partition_of,
    ramp_allows,
    ramp_wave,
    role_arn,
    session_name,
    status_source,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sts import STSClient

__all__ = [
    "Outcome",
    "Queued",
    "Refresh",
    "RemoteStatus",
    "StatusReport",
    "TargetSessions",
    "TargetStatus",
    "ledger_for",
    "read_status",
]


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PENDING = "pending"


_LEDGER_OUTCOME: Final[Mapping[JobState, Outcome]] = {
    JobState.SUCCEEDED: Outcome.SUCCEEDED,
    JobState.DRY_RUN: Outcome.SUCCEEDED,
    JobState.FAILED: Outcome.FAILED,
    JobState.NOT_RUN: Outcome.FAILED,
    JobState.CANCELLED: Outcome.FAILED,
}
_PROGRESS: Final = {
    Progress.SUCCEEDED: Outcome.SUCCEEDED,
    Progress.FAILED: Outcome.FAILED,
    Progress.PENDING: Outcome.PENDING,
}


@dataclass(frozen=True, slots=True)
class TargetStatus:
    record: JobRecord
    remote: RemoteStatus | None = None

    @property
    def ledger_outcome(self) -> Outcome:
        return _LEDGER_OUTCOME.get(self.record.state, Outcome.PENDING)

    @property
    def outcome(self) -> Outcome:
        """The ledger's verdict, refined by the target account's when it was asked."""
        ledger = self.ledger_outcome
        remote = self.remote.progress if self.remote else None
        if ledger is Outcome.SUCCEEDED and remote is not None:
            return _PROGRESS[remote]
        return ledger

    @property
    def target(self) -> str:
        return f"{self.record.account}/{self.record.region}"

    def as_dict(self) -> dict[str, Any]:
        record = self.record
        return {
            "account": record.account,
            "region": record.region,
            "task": record.task,
            "state": record.state.value,
            "outcome": self.outcome.value,
            "attempts": record.attempts,
            "result_id": record.result_id,
            "error_class": record.error_class,
            "last_error": record.last_error,
            "remote_status": self.remote.text if self.remote else None,
            "job_key": record.job_key,
            "updated_at": record.updated_at,
        }


@dataclass(frozen=True, slots=True)
class Queued:
    """A target of an expanded selection that no worker has picked up yet (no job record)."""

    account: str
    region: str
    task: str

    @property
    def target(self) -> str:
        return f"{self.account}/{self.region}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "region": self.region,
            "task": self.task,
            "state": "queued",
            "outcome": Outcome.PENDING.value,
            "attempts": 0,
        }


@dataclass(frozen=True, slots=True)
class StatusReport:
    request_id: str
    targets: tuple[TargetStatus, ...]
    request: RequestRecord | None = None
    queued: tuple[Queued, ...] = ()  # a selection's targets not started yet

    @property
    def expected(self) -> int:
        """How many targets the whole request has (the record knows, even before they run)."""
        return max(self.request.expected if self.request else 0, len(self.targets))

    def count(self, outcome: Outcome) -> int:
        counted = sum(t.outcome is outcome for t in self.targets)
        if outcome is Outcome.PENDING:
            # Targets the worker has not reached yet have no record: still pending.
            return counted + self.expected - len(self.targets)
        return counted

    def of(self, outcome: Outcome) -> list[TargetStatus | Queued]:
        found: list[TargetStatus | Queued] = [t for t in self.targets if t.outcome is outcome]
        return found + list(self.queued) if outcome is Outcome.PENDING else found

    @property
    def known(self) -> bool:
        return bool(self.targets) or self.request is not None

    @property
    def rollout(self) -> dict[str, Any] | None:
        """Rollout control as the record shows it (``handler.rollout``), or None without it."""
        record = self.request
        if record is None or record.options.get("max_concurrency") is None:
            return None
        now = time.time()
        given = record.options["max_concurrency"]
        cap = Options(max_concurrency=given).max_concurrency_for(self.expected)
        ramp = record.options.get("ramp")
        ended = len(record.started & frozenset[str]().union(*record.ended.values()))
        wave = ramp_wave(ended, cap) if ramp and cap else None
        return {
            "max_concurrency": given,
            "cap": cap,
            "ramp": ramp,
            "in_flight": sum(until > now for until in record.leases.values()),
            "started": len(record.started),
            # Ramping: the wave open now (1 first) and the targets it lets have started.
            "wave": wave,
            "wave_allows": ramp_allows(ended, cap) if wave and cap else None,
        }

    @property
    def regions(self) -> list[dict[str, Any]] | None:
        """A request rolled region by region: each region in the order it goes (those
        ``region_order`` does not list last), its targets, how many ended, and whether it
        ended, runs now, or waits for the ones before it. None without region_order."""
        record = self.request
        order = record.options.get("region_order") if record else None
        if record is None or not order:
            return None
        options = Options(region_order=tuple(order))
        regions = sorted(record.region_targets, key=lambda r: (options.stage_of(r), r))
        rows: list[dict[str, Any]] = []
        blocked_from: int | None = None  # the first stage not ended: later stages wait
        for region in regions:
            targets = record.region_targets[region]
            ended = len(record.region_ended.get(region, ()))
            stage = options.stage_of(region)
            if blocked_from is not None and stage > blocked_from:
                state = "waiting"
            elif ended >= targets:
                state = "ended"
            else:
                state = "running"
                blocked_from = stage if blocked_from is None else blocked_from
            rows.append({"region": region, "targets": targets, "ended": ended, "state": state})
        return rows

    @property
    def finished(self) -> bool:
        """Every expected target ended (and, when refreshed, its work is final)."""
        return self.known and self.count(Outcome.PENDING) == 0

    @property
    def succeeded(self) -> bool:
        return self.finished and self.count(Outcome.SUCCEEDED) == self.expected

    @property
    def state(self) -> str:
        if self.request is not None:
            return self.request.outcome
        if not self.targets:
            return "unknown"
        return "running"

    def as_dict(self) -> dict[str, Any]:
        record = self.request
        summary = {o.value: self.count(o) for o in Outcome} | {"total": self.expected}
        return {
            "request_id": self.request_id,
            "state": self.state,
            "summary": summary,
            "counts": record.counts() if record else None,
            "task": record.task if record else None,
            "publisher": record.publisher if record else None,
            "created_at": record.created_at if record else None,
            "finished_at": record.finished_at if record else None,
            "notes": list(record.notes) if record else [],
            "results": record.results_uri if record else None,
            "rollout": self.rollout,
            "regions": self.regions,
            "targets": [t.as_dict() for t in self.targets] + [q.as_dict() for q in self.queued],
        }


class TargetSessions:
    """The plugin's TaskContext for ``remote_status``: clients in a target account through a
    role the operator's credentials may assume, one AssumeRole per account.

    The role ARN is built exactly as the worker builds it (name, path, partition of the
    region); ``EXTERNAL_ID`` is sent when set.
    """

    def __init__(
        self,
        *,
        role_name: str,
        role_path: str = "/",
        external_id: str | None = None,
        region: str,
        request_id: str,
        sts: STSClient | None = None,
    ) -> None:
        self._role_name = role_name
        self._role_path = role_path
        self._external_id = external_id
        self._region = region
        self._session_name = session_name(request_id, prefix="fanout-status-")
        self._sts = sts
        self._sessions: dict[str, boto3.Session] = {}
        self._clients: dict[tuple[str, str, str], Any] = {}
        self._lock = threading.Lock()

    def _session(self, account: str, region: str) -> boto3.Session:
        session = self._sessions.get(account)
        if session is None:
            arn = role_arn(partition_of(region), account, self._role_path, self._role_name)
            request: dict[str, Any] = {"RoleArn": arn, "RoleSessionName": self._session_name}
            if self._external_id:
                request["ExternalId"] = self._external_id
            sts = self._sts or boto3.client("sts", region_name=self._region)
            credentials = sts.assume_role(**request)["Credentials"]
            session = boto3.Session(
                aws_access_key_id=credentials["AccessKeyId"],
                aws_secret_access_key=credentials["SecretAccessKey"],
                aws_session_token=credentials["SessionToken"],
            )
            self._sessions[account] = session
        return session

    def client(self, service: str, *, account: str, region: str) -> Any:
        key = (account, region, service)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                session: Any = self._session(account, region)  # any service name
                client = session.client(service, region_name=region)
                self._clients[key] = client
            return client


class _RecordContext:
    """A plugin's TaskContext for one job's record (its account and region by default)."""

    def __init__(self, sessions: TargetSessions, record: JobRecord) -> None:
        self._sessions = sessions
        self._record = record

    @property
    def account(self) -> str:
        return self._record.account

    @property
    def region(self) -> str:
        return self._record.region

    def client(self, service: str, *, account: str | None = None, region: str | None = None) -> Any:
        return self._sessions.client(
            service, account=account or self._record.account, region=region or self._record.region
        )


@dataclass
class Refresh:
    """Asks target accounts about results; final answers are kept between ``--watch`` rounds."""

    sessions: TargetSessions
    _final: dict[str, RemoteStatus] = field(default_factory=dict)

    def __call__(self, record: JobRecord) -> RemoteStatus | None:
        if record.state is not JobState.SUCCEEDED or not record.result_id:
            return None
        if record.result_id == "dry-run":
            return None
        cache_key = f"{record.job_key}:{record.result_id}"
        known = self._final.get(cache_key)
        if known is not None:
            return known
        try:
            task = get_task(record.task)
            remote = task.remote_status(
                _RecordContext(self.sessions, record),
                TaskResult(record.result_id, record.detail),
            )
        except (BotoCoreError, ClientError) as exc:
            return RemoteStatus(f"cannot ask: {_short_error(exc)}")
        if remote is not None and remote.final:
            self._final[cache_key] = remote
        return remote


def _short_error(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', '?')}: {error.get('Message', '')}".strip()
    return str(exc)


def ledger_for(table: str, *, region: str) -> StatusSource:
    def client() -> DynamoDBClient:
        ddb: DynamoDBClient = boto3.client("dynamodb", region_name=region)
        return ddb

    return status_source(table, client)


def read_status(
    source: StatusSource,
    request_id: str,
    refresh: Callable[[JobRecord], RemoteStatus | None] | None = None,
) -> StatusReport:
    """The request's record and its targets' records (sorted by account, region); for an
    expanded selection, also its targets that no worker has started (from the stored parts)."""
    records: Sequence[JobRecord] = source.jobs.jobs(request_id)
    request = source.requests.requests([request_id]).get(request_id)
    targets = tuple(
        TargetStatus(record, refresh(record) if refresh else None) for record in records
    )
    return StatusReport(request_id, targets, request, _queued(source, request_id, records))


def _queued(
    source: StatusSource, request_id: str, records: Sequence[JobRecord]
) -> tuple[Queued, ...]:
    expansion = source.requests.expansion(request_id)
    if expansion is None:
        return ()
    started = {record.job_key for record in records}
    queued: list[Queued] = []
    for body in expansion.bodies:
        part = parse_message(body, message_id="status", default_region="us-east-1", check=False)
        queued += [Queued(j.account, j.region, j.task) for j in part.jobs if j.key not in started]
    return tuple(sorted(queued, key=lambda q: (q.account, q.region)))
