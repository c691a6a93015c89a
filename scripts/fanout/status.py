"""``fanout status``: the per-target state of a request, from the worker's ledger.

The ledger (``handler.ledger.DynamoDBLedger``) holds one record per job that the worker claimed:
state, attempts, the result id (invalidation id, command id, ...) and the last error. With
``refresh`` the target accounts are asked for the final state of submitted work (an invalidation
may still be in progress after CreateInvalidation succeeded; a command may fail on its
instances), through the target role assumed with the operator's own credentials.

Targets refused before they ran (invalid input, account not allowed) and dry runs leave no
ledger record: the dead-letter queue holds the former (``fanout redrive --dry-run``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from handler.credentials import partition_of, role_arn, session_name
from handler.ledger import DynamoDBLedger, JobRecord, Ledger, LedgerState

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sts import STSClient

__all__ = [
    "REFRESHERS",
    "Outcome",
    "RemoteStatus",
    "StatusReport",
    "TargetSessions",
    "TargetStatus",
    "read_status",
]

DEFAULT_ROLE_NAME: Final = "OpsFanoutTargetRole"
# CloudFront's control plane lives in us-east-1 whatever the target's region.
_CLOUDFRONT_REGION: Final = "us-east-1"


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PENDING = "pending"


_LEDGER_OUTCOME: Final[Mapping[LedgerState, Outcome]] = {
    LedgerState.SUCCEEDED: Outcome.SUCCEEDED,
    LedgerState.FAILED: Outcome.FAILED,
    LedgerState.IN_PROGRESS: Outcome.PENDING,
    LedgerState.RETRY: Outcome.PENDING,
    LedgerState.UNCERTAIN: Outcome.PENDING,
}


@dataclass(frozen=True, slots=True)
class RemoteStatus:
    """What the target account says about a job's result; ``outcome`` None when unknown."""

    text: str
    outcome: Outcome | None = None

    @property
    def final(self) -> bool:
        return self.outcome in (Outcome.SUCCEEDED, Outcome.FAILED)


@dataclass(frozen=True, slots=True)
class TargetStatus:
    record: JobRecord
    remote: RemoteStatus | None = None

    @property
    def ledger_outcome(self) -> Outcome:
        return _LEDGER_OUTCOME[self.record.state]

    @property
    def outcome(self) -> Outcome:
        """The ledger's verdict, refined by the target account's when it was asked."""
        ledger = self.ledger_outcome
        if ledger is Outcome.SUCCEEDED and self.remote is not None and self.remote.outcome:
            return self.remote.outcome
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
class StatusReport:
    request_id: str
    targets: tuple[TargetStatus, ...]

    def count(self, outcome: Outcome) -> int:
        return sum(t.outcome is outcome for t in self.targets)

    def of(self, outcome: Outcome) -> list[TargetStatus]:
        return [t for t in self.targets if t.outcome is outcome]

    @property
    def finished(self) -> bool:
        """Every target succeeded or failed (and at least one exists)."""
        return bool(self.targets) and not self.count(Outcome.PENDING)

    def as_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "summary": {o.value: self.count(o) for o in Outcome} | {"total": len(self.targets)},
            "targets": [t.as_dict() for t in self.targets],
        }


class TargetSessions:
    """Clients in target accounts through the target role, one AssumeRole per account.

    The role ARN is built exactly as the worker builds it (name, path, partition of the
    region); ``EXTERNAL_ID`` is sent when set. The operator's credentials must be allowed to
    assume the role (sts:AssumeRole, and the role's trust policy must name them).
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

    def _sts_client(self) -> STSClient:
        if self._sts is None:
            self._sts = boto3.client("sts", region_name=self._region)
        return self._sts

    def _session(self, account: str, region: str) -> boto3.Session:
        session = self._sessions.get(account)
        if session is None:
            request: dict[str, Any] = {
                "RoleArn": role_arn(
                    partition_of(region), account, self._role_path, self._role_name
                ),
                "RoleSessionName": self._session_name,
            }
            if self._external_id:
                request["ExternalId"] = self._external_id
            credentials = self._sts_client().assume_role(**request)["Credentials"]
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


Refresher = Callable[[TargetSessions, JobRecord], RemoteStatus]


def _cloudfront_invalidation(sessions: TargetSessions, record: JobRecord) -> RemoteStatus:
    """GetInvalidation on the distribution the worker recorded with the job's result."""
    distribution = record.detail.get("distribution_id")
    if not distribution or not record.result_id:
        return RemoteStatus("distribution not recorded")
    cloudfront = sessions.client("cloudfront", account=record.account, region=_CLOUDFRONT_REGION)
    try:
        invalidation = cloudfront.get_invalidation(
            DistributionId=str(distribution), Id=record.result_id
        )["Invalidation"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchInvalidation":
            return RemoteStatus("invalidation not found")
        raise
    status = str(invalidation.get("Status", ""))
    # CloudFront says "Completed" / "InProgress" (the emulator: upper case).
    if status.lower() == "completed":
        return RemoteStatus("Completed", Outcome.SUCCEEDED)
    if status.lower() == "inprogress":
        return RemoteStatus("InProgress", Outcome.PENDING)
    return RemoteStatus(status or "unknown")


_SSM_OUTCOME: Final[Mapping[str, Outcome]] = {
    "Success": Outcome.SUCCEEDED,
    "Pending": Outcome.PENDING,
    "InProgress": Outcome.PENDING,
    "Cancelling": Outcome.PENDING,
    "Delayed": Outcome.PENDING,
    "Failed": Outcome.FAILED,
    "TimedOut": Outcome.FAILED,
    "Cancelled": Outcome.FAILED,
}


def _ssm_command(sessions: TargetSessions, record: JobRecord) -> RemoteStatus:
    """ListCommands for the command id: its overall status and error count.

    (ListCommandInvocations would give per-instance detail; GetCommandInvocation needs an
    instance id, and the emulator does not implement ListCommandInvocations.)
    """
    ssm = sessions.client("ssm", account=record.account, region=record.region)
    commands = ssm.list_commands(CommandId=record.result_id).get("Commands", [])
    if not commands:
        return RemoteStatus("command not found")
    command = commands[0]
    status = str(command.get("Status", ""))
    errors = int(command.get("ErrorCount", 0) or 0)
    text = f"{status} ({errors} errors)" if errors else status
    return RemoteStatus(text or "unknown", _SSM_OUTCOME.get(status))


REFRESHERS: Final[Mapping[str, Refresher]] = {
    "cloudfront.invalidate": _cloudfront_invalidation,
    "ssm.send_command": _ssm_command,
}


@dataclass
class Refresh:
    """Asks target accounts about results; final answers are kept between ``--watch`` rounds."""

    sessions: TargetSessions
    refreshers: Mapping[str, Refresher] = field(default_factory=lambda: REFRESHERS)
    _final: dict[str, RemoteStatus] = field(default_factory=dict)

    def __call__(self, record: JobRecord) -> RemoteStatus | None:
        refresher = self.refreshers.get(record.task)
        if refresher is None or record.state is not LedgerState.SUCCEEDED:
            return None
        if not record.result_id or record.result_id == "dry-run":
            return None
        cache_key = f"{record.job_key}:{record.result_id}"
        known = self._final.get(cache_key)
        if known is not None:
            return known
        try:
            remote = refresher(self.sessions, record)
        except (BotoCoreError, ClientError) as exc:
            return RemoteStatus(f"cannot ask: {_short_error(exc)}")
        if remote.final:
            self._final[cache_key] = remote
        return remote


def _short_error(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', '?')}: {error.get('Message', '')}".strip()
    return str(exc)


def ledger_for(table: str, *, region: str) -> DynamoDBLedger:
    def client() -> DynamoDBClient:
        ddb: DynamoDBClient = boto3.client("dynamodb", region_name=region)
        return ddb

    return DynamoDBLedger(table, client)


def read_status(
    ledger: Ledger,
    request_id: str,
    refresh: Callable[[JobRecord], RemoteStatus | None] | None = None,
) -> StatusReport:
    """The ledger's records of ``request_id`` (sorted by account, region), refreshed if asked."""
    records: Sequence[JobRecord] = ledger.jobs(request_id)
    targets = tuple(
        TargetStatus(record, refresh(record) if refresh else None) for record in records
    )
    return StatusReport(request_id, targets)
