"""How the job ledger's records look in DynamoDB: the conditional writes of each transition and
the decoding of an item. Pure functions; ``ledger_dynamodb`` sends what they build.

Item layout (table key ``pk``, ``sk``; TTL on ``expires_at``):
- a job: ``pk`` = request id, ``sk`` = job key (hex); its state, attempts, claim token and lock;
- a coalesced call's parameters, for recovery: ``pk`` = ``call#<ref>``, ``sk`` = ``call``;
- a message dead-lettered whole: ``pk`` = ``message#<id>``, ``sk`` = ``dead-letter``.
Request ids cannot contain ``#``, so the last two never meet a request's partition; a request's
own record is ``sk`` = ``#request`` (``requests_dynamodb``), which job keys never start with.

Every transition is conditional on what the writer saw: a claim on "new or RETRY" (the cheap
first try) or on the state and ``updated_at`` it was classified by (compare-and-set); an ending,
a recorded call and a letter on the claim token. That is what makes each transition happen once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from handler.dynamo import Item, expires, n, read_bool, read_n, read_s, s, update_request
from handler.ledger import CallRecord, Claim, Ending, JobRecord, JobState, detail_json
from tasks.base import Job

__all__ = [
    "CALL_PK",
    "MESSAGE_PK",
    "HoldReason",
    "call_key",
    "call_put",
    "call_record",
    "claim_update",
    "claimed_record",
    "finish_update",
    "held_record",
    "hold_update",
    "job_key",
    "job_record",
    "letter_update",
    "message_key",
    "record_call_update",
    "release_op",
]

CALL_PK: Final = "call#"
MESSAGE_PK: Final = "message#"


@dataclass(frozen=True, slots=True)
class HoldReason:
    """Why a job is being dead-lettered, and the state it ends in once its letter is sent."""

    ending: JobState
    error_class: str
    error: str


def job_key(job: Job) -> dict[str, Any]:
    return {"pk": s(job.request_id), "sk": s(job.key)}


def call_key(ref: str) -> dict[str, Any]:
    return {"pk": s(CALL_PK + ref), "sk": s("call")}


def message_key(message_id: str) -> dict[str, Any]:
    return {"pk": s(MESSAGE_PK + message_id), "sk": s("dead-letter")}


def _update(
    table: str,
    job: Job,
    sets: Sequence[str],
    removes: Sequence[str],
    values: dict[str, Any],
    *,
    condition: str,
) -> dict[str, Any]:
    expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
    return {"Update": update_request(table, job_key(job), expression, values, condition)}


def _seen_condition(seen: JobRecord | None, values: dict[str, Any]) -> str:
    """A claim's condition: the cheap "new or RETRY", or a compare-and-set on ``seen``."""
    if seen is None:
        values[":retry"] = s(JobState.RETRY)
        return "attribute_not_exists(pk) OR #state = :retry"
    values[":seen_state"] = s(seen.state)
    values[":seen_updated"] = n(seen.updated_at)
    return "#state = :seen_state AND updated_at = :seen_updated"


def _identity(job: Job, now: float) -> tuple[list[str], dict[str, Any]]:
    """What every first write of a job sets: who it is, and when."""
    sets = [
        "task = :task",
        "account = :account",
        "#region = :region",
        "message_id = if_not_exists(message_id, :message)",
        "updated_at = :now",
        "created_at = if_not_exists(created_at, :now)",
        "expires_at = :ttl",
    ]
    values = {
        ":task": s(job.task),
        ":account": s(job.account),
        ":region": s(job.region),
        ":message": s(job.message_id),
        ":now": n(now),
        ":ttl": expires(now),
    }
    return sets, values


def claim_update(
    table: str,
    job: Job,
    seen: JobRecord | None,
    *,
    now: float,
    lock_until: float,
    token: str,
    call: CallRecord | None,
    recovering: bool = False,
) -> dict[str, Any]:
    """Claim ``job`` (conditional on ``seen``), recording the call its attempt belongs to. A
    recovery keeps the recorded call: that is the call which may have taken effect, and the one
    a later recovery must repeat identically if this one dies too."""
    sets, values = _identity(job, now)
    sets += [
        "#state = :in_progress",
        "lock_expires = :until",
        "claim_token = :token",
        "attempts = if_not_exists(attempts, :zero) + :one",
        "may_have_run = :false",
    ]
    values.update(
        {
            ":in_progress": s(JobState.IN_PROGRESS),
            ":until": n(lock_until),
            ":token": s(token),
            ":zero": {"N": "0"},
            ":one": {"N": "1"},
            ":false": {"BOOL": False},
        }
    )
    removes = ["ending"]
    if recovering:
        pass  # the call that may have run stays the one recovery repeats
    elif call is not None:
        sets.append("call_ref = :ref")
        values[":ref"] = s(call.ref)
    else:
        removes.append("call_ref")
    return _update(table, job, sets, removes, values, condition=_seen_condition(seen, values))


def claimed_record(
    job: Job,
    previous: JobRecord | None,
    *,
    now: float,
    lock_until: float,
    token: str,
    call: CallRecord | None,
    recovering: bool = False,
) -> JobRecord:
    """The record a successful ``claim_update`` left (without reading it back)."""
    if recovering:
        call_ref = previous.call_ref if previous else None
    else:
        call_ref = call.ref if call else None
    return JobRecord(
        request_id=job.request_id,
        job_key=job.key,
        task=job.task,
        account=job.account,
        region=job.region,
        state=JobState.IN_PROGRESS,
        attempts=(previous.attempts if previous else 0) + 1,
        created_at=previous.created_at if previous and previous.created_at else now,
        updated_at=now,
        lock_expires=lock_until,
        claim_token=token,
        call_ref=call_ref,
    )


def release_op(table: str, claim: Claim, now: float) -> dict[str, Any]:
    """Undo a claim whose call never started (``Ledger.release``), conditional on the claim
    still being ours and in progress. A claim made against a record it read gives the record
    back: its state (an expired IN_PROGRESS as the UNCERTAIN it was), attempts, recorded call and
    may_have_run. The cheap first claim ("new or RETRY") read nothing: the job becomes RETRY
    with one attempt less - known not to have run - keeping what a RETRY had."""
    values: dict[str, Any] = {":token": s(claim.token), ":in_progress": s(JobState.IN_PROGRESS)}
    condition = "claim_token = :token AND #state = :in_progress"
    previous = claim.previous
    removes = ["claim_token", "lock_expires"]
    if previous is None:
        sets = ["#state = :state", "attempts = attempts - :one", "updated_at = :now"]
        values.update({":state": s(JobState.RETRY), ":one": {"N": "1"}, ":now": n(now)})
        removes.append("call_ref")
        return _update(table, claim.job, sets, removes, values, condition=condition)
    state = JobState.UNCERTAIN if previous.state is JobState.IN_PROGRESS else previous.state
    sets = ["#state = :state", "attempts = :attempts", "may_have_run = :mhr", "updated_at = :now"]
    values.update(
        {
            ":state": s(state),
            ":attempts": {"N": str(previous.attempts)},
            ":mhr": {"BOOL": previous.may_have_run},
            ":now": n(now),
        }
    )
    if previous.call_ref:
        sets.append("call_ref = :ref")
        values[":ref"] = s(previous.call_ref)
    else:
        removes.append("call_ref")
    return _update(table, claim.job, sets, removes, values, condition=condition)


def record_call_update(table: str, job: Job, *, ref: str, token: str) -> dict[str, Any]:
    values = {":ref": s(ref), ":token": s(token)}
    return _update(table, job, ["call_ref = :ref"], [], values, condition="claim_token = :token")


def call_put(table: str, call: CallRecord, now: float) -> dict[str, Any]:
    item = {
        **call_key(call.ref),
        "task": s(call.task),
        "account": s(call.account),
        "region": s(call.region),
        "params": s(json.dumps(call.params, sort_keys=True)),
        "expires_at": expires(now),
    }
    return {"Put": {"TableName": table, "Item": item}}


def call_record(ref: str, item: Item) -> CallRecord:
    return CallRecord(
        ref=ref,
        task=item["task"]["S"],
        account=item["account"]["S"],
        region=item["region"]["S"],
        params=json.loads(item["params"]["S"]),
    )


def finish_update(table: str, end: Ending, now: float) -> dict[str, Any]:
    values: dict[str, Any] = {":state": s(end.state), ":now": n(now), ":token": s(end.claim.token)}
    sets = ["#state = :state", "updated_at = :now", "last_token = :token"]
    removes: list[str] = []
    optional = {
        "result_id": end.result.resource_id if end.result else None,
        "detail": detail_json(end.result.detail) if end.result else None,
        "error_class": end.error_class,
        "last_error": end.error,
    }
    for name, value in optional.items():
        if value is not None:
            sets.append(f"{name} = :{name}")
            values[f":{name}"] = s(value)
    if end.error_class is None:
        removes.append("error_class")
    if end.state is JobState.SUCCEEDED:
        removes.append("last_error")  # a redriven job that succeeds shows no old reason
    if end.state is JobState.FAILING:
        sets += ["lock_expires = :until", "ending = :ending"]
        values[":until"] = n(end.lock_until or now)
        values[":ending"] = s(end.ending or JobState.FAILED)
    else:
        removes += ["lock_expires", "claim_token", "ending"]
    return _update(table, end.claim.job, sets, removes, values, condition="claim_token = :token")


def hold_update(
    table: str,
    job: Job,
    seen: JobRecord | None,
    *,
    now: float,
    lock_until: float,
    token: str,
    reason: HoldReason,
) -> dict[str, Any]:
    """Hold a job FAILING while its letter is sent; a resumed letter keeps its first reason."""
    sets, values = _identity(job, now)
    may_have_run = bool(seen and (seen.may_have_run or seen.state is JobState.UNCERTAIN))
    sets += [
        "#state = :failing",
        "lock_expires = :until",
        "claim_token = :token",
        "may_have_run = :mhr",
    ]
    values.update(
        {
            ":failing": s(JobState.FAILING),
            ":until": n(lock_until),
            ":token": s(token),
            ":mhr": {"BOOL": may_have_run},
        }
    )
    if not (seen is not None and seen.state is JobState.FAILING):
        sets += ["ending = :ending", "error_class = :error_class", "last_error = :error"]
        values.update(
            {
                ":ending": s(reason.ending),
                ":error_class": s(reason.error_class),
                ":error": s(reason.error),
            }
        )
    return _update(table, job, sets, [], values, condition=_seen_condition(seen, values))


def held_record(
    job: Job,
    seen: JobRecord | None,
    *,
    now: float,
    lock_until: float,
    token: str,
    reason: HoldReason,
) -> JobRecord:
    """The record a successful ``hold_update`` left (without reading it back)."""
    return JobRecord(
        request_id=job.request_id,
        job_key=job.key,
        task=job.task,
        account=job.account,
        region=job.region,
        state=JobState.FAILING,
        lock_expires=lock_until,
        claim_token=token,
        ending=seen.ending if seen and seen.state is JobState.FAILING else reason.ending,
        error_class=reason.error_class,
        last_error=reason.error,
        updated_at=now,
    )


def letter_update(table: str, job: Job, token: str, now: float) -> dict[str, Any]:
    """The letter was sent: the held job takes the state it was held for."""
    return _update(
        table,
        job,
        ["#state = ending", "updated_at = :now", "last_token = :token"],
        ["ending", "lock_expires", "claim_token"],
        {":now": n(now), ":token": s(token), ":failing": s(JobState.FAILING)},
        condition="claim_token = :token AND #state = :failing",
    )


def job_record(item: Item) -> JobRecord:
    ending = read_s(item, "ending")
    return JobRecord(
        request_id=read_s(item, "pk") or "",
        job_key=read_s(item, "sk") or "",
        task=read_s(item, "task") or "",
        account=read_s(item, "account") or "",
        region=read_s(item, "region") or "",
        state=JobState(read_s(item, "state") or JobState.RETRY),
        attempts=int(read_n(item, "attempts") or 0),
        result_id=read_s(item, "result_id"),
        error_class=read_s(item, "error_class"),
        last_error=read_s(item, "last_error"),
        created_at=read_n(item, "created_at") or 0.0,
        updated_at=read_n(item, "updated_at") or 0.0,
        lock_expires=read_n(item, "lock_expires"),
        claim_token=read_s(item, "claim_token"),
        call_ref=read_s(item, "call_ref"),
        message_id=read_s(item, "message_id"),
        ending=JobState(ending) if ending else None,
        may_have_run=read_bool(item, "may_have_run"),
        detail=json.loads(read_s(item, "detail") or "{}"),
    )
