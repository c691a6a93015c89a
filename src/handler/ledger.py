"""The job ledger: one record per job, for idempotency and for ``fanout status``.

A job is *claimed* before it runs. A claim is granted when the job is new, waiting for a retry,
previously failed, or held by a lock that has expired (its holder crashed or timed out). It is
refused while the job has succeeded (the redelivery replays the stored result instead of running
again) or while another invocation holds a live lock. Locks expire when the holder's function
would have timed out, so a crashed instance never blocks a job for longer than its own timeout.

Powertools' idempotency utility keys records by a payload hash and stores one response per key;
the ledger also needs queries by request id, per-target attempts and errors, and claims for
coalesced calls that cover several jobs, so it is written directly against DynamoDB here (see the
README's design notes).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import ClientError

from tasks.base import Job

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = [
    "Claim",
    "DynamoDBLedger",
    "InMemoryLedger",
    "JobRecord",
    "Ledger",
    "LedgerState",
]

RECORD_TTL_SECONDS = 14 * 24 * 3600  # as long as the DLQ keeps a message
MAX_DETAIL_CHARS = 2048
_MESSAGE_PK = "message#"  # request ids cannot contain '#', so these never meet a job


class LedgerState(StrEnum):
    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    RETRY = "retry"
    FAILED = "failed"
    # Retry, but the last attempt's outcome is unknown (non-idempotent call, 5xx/timeout).
    UNCERTAIN = "uncertain"


@dataclass(frozen=True, slots=True)
class JobRecord:
    request_id: str
    job_key: str
    task: str
    account: str
    region: str
    state: LedgerState
    attempts: int = 0
    result_id: str | None = None
    error_class: str | None = None
    last_error: str | None = None
    updated_at: float = 0.0
    lock_expires: float | None = None
    claim_token: str | None = None
    # The result's small detail (e.g. the invalidation's distribution): `fanout status --refresh`.
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer to "may I run this job now?"."""

    granted: bool
    record: JobRecord
    # The previous holder's lock expired: its call may or may not have reached AWS.
    recovered: bool = False


class Ledger(Protocol):
    def claim(self, job: Job, *, lock_seconds: float) -> Claim: ...

    def finish(
        self,
        claim: Claim,
        state: LedgerState,
        *,
        result_id: str | None = None,
        error_class: str | None = None,
        error: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None: ...

    def jobs(self, request_id: str) -> list[JobRecord]: ...

    def dead_lettered(self, message_id: str) -> bool: ...

    def mark_dead_lettered(self, message_id: str) -> None: ...


_MAY_HAVE_RUN = (LedgerState.IN_PROGRESS, LedgerState.UNCERTAIN)


def _claimable(record: JobRecord | None, now: float, *, redriven: bool) -> bool:
    """Failed is final (it was dead-lettered) unless an operator redrove the message."""
    if record is None or record.state in (LedgerState.RETRY, LedgerState.UNCERTAIN):
        return True
    if record.state is LedgerState.FAILED:
        return redriven
    if record.state is LedgerState.IN_PROGRESS:
        return record.lock_expires is not None and record.lock_expires < now
    return False  # succeeded


class InMemoryLedger:
    """The ledger of one execution environment (used when LEDGER_TABLE is unset)."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or time.time
        self._records: dict[tuple[str, str], JobRecord] = {}
        self._dead_letters: set[str] = set()
        self._lock = threading.Lock()

    def claim(self, job: Job, *, lock_seconds: float) -> Claim:
        now = self._clock()
        with self._lock:
            previous = self._records.get((job.request_id, job.key))
            if not _claimable(previous, now, redriven=job.redriven):
                assert previous is not None  # noqa: S101 - None is always claimable
                return Claim(granted=False, record=previous)
            attempts = (previous.attempts if previous else 0) + 1
            record = _claimed(job, attempts, now + lock_seconds, uuid.uuid4().hex, now)
            self._records[(job.request_id, job.key)] = record
        recovered = previous is not None and previous.state in _MAY_HAVE_RUN
        return Claim(granted=True, record=record, recovered=recovered)

    def finish(
        self,
        claim: Claim,
        state: LedgerState,
        *,
        result_id: str | None = None,
        error_class: str | None = None,
        error: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        key = (claim.record.request_id, claim.record.job_key)
        with self._lock:
            current = self._records.get(key)
            if current is None or current.claim_token != claim.record.claim_token:
                return  # our lock expired and someone else holds the job now
            self._records[key] = replace(
                current,
                state=state,
                result_id=result_id,
                error_class=error_class,
                last_error=error,
                detail=dict(detail or {}),
                updated_at=self._clock(),
                lock_expires=None,
                claim_token=None,
            )

    def jobs(self, request_id: str) -> list[JobRecord]:
        with self._lock:
            return sorted(
                (r for (rid, _), r in self._records.items() if rid == request_id),
                key=lambda r: (r.account, r.region, r.job_key),
            )

    def dead_lettered(self, message_id: str) -> bool:
        with self._lock:
            return message_id in self._dead_letters

    def mark_dead_lettered(self, message_id: str) -> None:
        with self._lock:
            self._dead_letters.add(message_id)


class DynamoDBLedger:
    """The shared ledger: ``pk`` = request id, ``sk`` = job key, TTL on ``expires_at``."""

    def __init__(
        self,
        table: str,
        client_factory: Callable[[], DynamoDBClient],
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._table = table
        self._client_factory = client_factory
        self._client: DynamoDBClient | None = None
        self._clock = clock or time.time
        self._lock = threading.Lock()

    def _ddb(self) -> DynamoDBClient:
        with self._lock:
            if self._client is None:
                self._client = self._client_factory()
            return self._client

    def claim(self, job: Job, *, lock_seconds: float) -> Claim:
        now = self._clock()
        token = uuid.uuid4().hex
        try:
            response = self._ddb().update_item(
                TableName=self._table,
                Key={"pk": {"S": job.request_id}, "sk": {"S": job.key}},
                UpdateExpression=(
                    "SET #state = :in_progress, lock_expires = :until, claim_token = :token, "
                    "attempts = if_not_exists(attempts, :zero) + :one, task = :task, "
                    "account = :account, #region = :region, updated_at = :now, "
                    "created_at = if_not_exists(created_at, :now), expires_at = :ttl"
                ),
                ConditionExpression=(
                    "attribute_not_exists(pk) OR #state IN (:retry, :uncertain, :failed) "
                    "OR (#state = :in_progress AND lock_expires < :now)"
                ),
                ExpressionAttributeNames={"#state": "state", "#region": "region"},
                ExpressionAttributeValues={
                    ":in_progress": {"S": LedgerState.IN_PROGRESS.value},
                    ":retry": {"S": LedgerState.RETRY.value},
                    # Failed is final unless redriven: then it may be claimed again.
                    ":failed": {"S": LedgerState.FAILED.value if job.redriven else "-"},
                    ":uncertain": {"S": LedgerState.UNCERTAIN.value},
                    ":until": {"N": _number(now + lock_seconds)},
                    ":token": {"S": token},
                    ":zero": {"N": "0"},
                    ":one": {"N": "1"},
                    ":task": {"S": job.task},
                    ":account": {"S": job.account},
                    ":region": {"S": job.region},
                    ":now": {"N": _number(now)},
                    ":ttl": {"N": str(int(now) + RECORD_TTL_SECONDS)},
                },
                ReturnValues="ALL_OLD",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            item: Mapping[str, Any] = exc.response.get("Item", {})  # type: ignore[assignment]
            return Claim(granted=False, record=_record(item))
        previous = response.get("Attributes", {})
        recovered = previous.get("state", {}).get("S") in {s.value for s in _MAY_HAVE_RUN}
        attempts = int(previous.get("attempts", {}).get("N", "0")) + 1
        record = _claimed(job, attempts, now + lock_seconds, token, now)
        return Claim(granted=True, record=record, recovered=recovered)

    def finish(
        self,
        claim: Claim,
        state: LedgerState,
        *,
        result_id: str | None = None,
        error_class: str | None = None,
        error: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        values: dict[str, Any] = {
            ":state": {"S": state.value},
            ":now": {"N": _number(self._clock())},
            ":token": {"S": claim.record.claim_token or ""},
        }
        sets = ["#state = :state", "updated_at = :now"]
        for name, value in (
            ("result_id", result_id),
            ("error_class", error_class),
            ("last_error", error),
            ("detail", _detail_json(detail)),
        ):
            if value is not None:
                sets.append(f"{name} = :{name}")
                values[f":{name}"] = {"S": value}
        try:
            self._ddb().update_item(
                TableName=self._table,
                Key={"pk": {"S": claim.record.request_id}, "sk": {"S": claim.record.job_key}},
                UpdateExpression="SET " + ", ".join(sets) + " REMOVE lock_expires, claim_token",
                ConditionExpression="claim_token = :token",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            # Our lock expired and another invocation claimed the job: its record wins.

    def jobs(self, request_id: str) -> list[JobRecord]:
        items: list[Mapping[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": request_id}},
        }
        while True:
            page = self._ddb().query(**kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        records = [_record(item) for item in items]
        return sorted(records, key=lambda r: (r.account, r.region, r.job_key))

    # A message dead-lettered whole (bad input) or in part is remembered by its id, so a
    # duplicate delivery (its acknowledgement was lost) is not dead-lettered a second time.
    def dead_lettered(self, message_id: str) -> bool:
        item = self._ddb().get_item(
            TableName=self._table,
            Key={"pk": {"S": _MESSAGE_PK + message_id}, "sk": {"S": "dead-letter"}},
            ConsistentRead=True,
        )
        return "Item" in item

    def mark_dead_lettered(self, message_id: str) -> None:
        self._ddb().put_item(
            TableName=self._table,
            Item={
                "pk": {"S": _MESSAGE_PK + message_id},
                "sk": {"S": "dead-letter"},
                "expires_at": {"N": str(int(self._clock()) + RECORD_TTL_SECONDS)},
            },
        )


def _claimed(job: Job, attempts: int, lock_expires: float, token: str, now: float) -> JobRecord:
    """The record of a job just claimed: in progress under ``token`` until ``lock_expires``."""
    return JobRecord(
        request_id=job.request_id,
        job_key=job.key,
        task=job.task,
        account=job.account,
        region=job.region,
        state=LedgerState.IN_PROGRESS,
        attempts=attempts,
        updated_at=now,
        lock_expires=lock_expires,
        claim_token=token,
    )


def _detail_json(detail: Mapping[str, Any] | None) -> str | None:
    if not detail:
        return None
    text = json.dumps(detail, sort_keys=True, default=str)
    return text if len(text) <= MAX_DETAIL_CHARS else None  # never a truncated document


def _number(value: float) -> str:
    return f"{value:.3f}"


def _record(item: Mapping[str, Any]) -> JobRecord:
    def s(name: str) -> str | None:
        value = item.get(name, {}).get("S")
        return str(value) if value is not None else None

    def n(name: str) -> float | None:
        value = item.get(name, {}).get("N")
        return float(value) if value is not None else None

    return JobRecord(
        request_id=s("pk") or "",
        job_key=s("sk") or "",
        task=s("task") or "",
        account=s("account") or "",
        region=s("region") or "",
        state=LedgerState(s("state") or LedgerState.RETRY.value),
        attempts=int(n("attempts") or 0),
        result_id=s("result_id"),
        error_class=s("error_class"),
        last_error=s("last_error"),
        updated_at=n("updated_at") or 0.0,
        lock_expires=n("lock_expires"),
        claim_token=s("claim_token"),
        detail=json.loads(s("detail") or "{}"),
    )
