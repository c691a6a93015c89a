"""Task messages from the command line: built, validated by the worker's parser, then sent.

Every body goes through :func:`handler.envelope.parse_message` before anything is sent, so an
invalid task never reaches the queue and the operator sees the same single-line reason the worker
would have dead-lettered it with. Many targets are split into several messages that share one
request id, keeping each message small and each Lambda invocation short.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from handler.envelope import Envelope, parse_message
from handler.exceptions import PermanentError
from tasks.registry import get_task

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

__all__ = [
    "MAX_TARGETS_PER_MESSAGE",
    "PublishError",
    "PublishResult",
    "SendError",
    "bodies_from_document",
    "build_bodies",
    "build_params",
    "new_request_id",
    "publish",
    "request_ids_of",
    "send_bodies",
    "validate_bodies",
]

MAX_TARGETS_PER_MESSAGE: Final = 50
SQS_BATCH: Final = 10
# SQS accepts up to 256 KiB per message by default; stay below it rather than fail at send.
MAX_BODY_BYTES: Final = 256 * 1024
SEND_ATTEMPTS: Final = 4


class PublishError(Exception):
    """The request is unusable as given (exit code 2): nothing was sent."""

    def __init__(self, reason: str) -> None:
        self.reason = " ".join(reason.split())
        super().__init__(self.reason)


class SendError(Exception):
    """SQS refused some messages even after retries (exit code 1)."""

    def __init__(self, reason: str, sent: Sequence[str]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sent = list(sent)


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What was sent: the request ids to follow, the message ids, the jobs they expand to."""

    request_ids: tuple[str, ...]
    message_ids: tuple[str, ...]
    envelopes: tuple[Envelope, ...] = field(default=())

    @property
    def jobs(self) -> int:
        return sum(len(envelope.jobs) for envelope in self.envelopes)


def new_request_id() -> str:
    return str(uuid.uuid4())


def _split_assignment(text: str, option: str) -> tuple[str, str]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise PublishError(f"{option} expects KEY=VALUE, got {text!r}")
    return key.strip(), raw


def _json_or_text(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _coerce(raw: str, schema: Mapping[str, Any]) -> Any:
    value = _json_or_text(raw)
    # "--param comment=123" means the text "123" when the field is a string.
    if schema.get("type") == "string" and not isinstance(value, str):
        return raw
    return value


def build_params(
    assignments: Sequence[str], schema: Mapping[str, Any], *, option: str = "--param"
) -> dict[str, Any]:
    """``k=v`` assignments -> params, guided by the task's JSON Schema.

    A value is JSON when it parses, else text; a repeated key accumulates a list; a single value
    for an array field becomes a one-item list (``--param paths=/index.html``).
    """
    grouped: dict[str, list[str]] = {}
    for text in assignments:
        key, raw = _split_assignment(text, option)
        grouped.setdefault(key, []).append(raw)
    properties: Mapping[str, Any] = schema.get("properties", {})
    params: dict[str, Any] = {}
    for key, raws in grouped.items():
        prop: Mapping[str, Any] = properties.get(key, {})
        if prop.get("type") == "array":
            items: list[Any] = []
            for raw in raws:
                value = _json_or_text(raw)
                items.extend(
                    value if isinstance(value, list) else [_coerce(raw, prop.get("items", {}))]
                )
            params[key] = items
        else:
            values = [_coerce(raw, prop) for raw in raws]
            params[key] = values[0] if len(values) == 1 else values
    return params


def _split_list(text: str | None) -> list[str]:
    """``"a, b,,a"`` -> ``["a", "b"]``: order kept, blanks and repeats dropped."""
    if not text:
        return []
    return list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))


def _chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def build_bodies(
    task: str,
    *,
    accounts: str,
    regions: str | None = None,
    params: Sequence[str] = (),
    target_params: Sequence[str] = (),
    request_id: str | None = None,
    dry_run: bool = False,
    max_targets: int = MAX_TARGETS_PER_MESSAGE,
) -> list[str]:
    """v1 bodies for ``task`` on every account x region, ``max_targets`` per message."""
    try:
        schema = get_task(task).params_schema
    except PermanentError as exc:
        raise PublishError(exc.reason) from None
    account_ids = _split_list(accounts)
    if not account_ids:
        raise PublishError("--accounts names no account")
    per_account: dict[str, list[str]] = {}
    for text in target_params:
        account, sep, assignment = text.partition(":")
        if not sep:
            raise PublishError(f"--target-param expects ACCOUNT:KEY=VALUE, got {text!r}")
        if account not in account_ids:
            raise PublishError(
                f"--target-param names account {account}, which is not in --accounts"
            )
        per_account.setdefault(account, []).append(assignment)
    overrides = {
        account: build_params(assignments, schema, option="--target-param")
        for account, assignments in per_account.items()
    }
    region_list: list[str | None] = list(_split_list(regions)) or [None]
    targets: list[dict[str, Any]] = []
    for account in account_ids:
        for region in region_list:
            target: dict[str, Any] = {"account": account}
            if region:
                target["region"] = region
            if account in overrides:
                target["params"] = overrides[account]
            targets.append(target)
    document: dict[str, Any] = {
        "version": 1,
        "task": task,
        "request_id": request_id or new_request_id(),
        "targets": targets,
        "params": build_params(params, schema),
    }
    if dry_run:
        document["options"] = {"dry_run": True}
    return _split_document(document, max_targets)


def bodies_from_document(
    text: str,
    *,
    request_id: str | None = None,
    dry_run: bool = False,
    max_targets: int = MAX_TARGETS_PER_MESSAGE,
    default_region: str = "us-east-1",
) -> list[str]:
    """A prepared body (v1 or legacy), checked as the worker would, then split if large.

    A v1 body gets ``request_id`` (or a new one when it has none) so the request can be
    followed; a legacy body is sent as it is (its request id is the SQS message id).
    """
    try:
        parse_message(text, message_id="publish-check", default_region=default_region)
    except PermanentError as exc:
        raise PublishError(exc.reason) from None
    document = json.loads(text)
    if "entries" in document and "version" not in document:
        if request_id or dry_run:
            raise PublishError("--request-id and --dry-run need a v1 body, not a legacy one")
        return _split_document(document, max_targets)
    if request_id:
        document["request_id"] = request_id
    document.setdefault("request_id", new_request_id())
    if dry_run:
        document.setdefault("options", {})["dry_run"] = True
    return _split_document(document, max_targets)


def _split_document(document: Mapping[str, Any], max_targets: int) -> list[str]:
    if max_targets < 1:
        raise PublishError(f"--max-targets must be at least 1, got {max_targets}")
    key = "entries" if "entries" in document and "version" not in document else "targets"
    return [
        json.dumps({**document, key: chunk}, separators=(",", ":"))
        for chunk in _chunks(document[key], max_targets)
    ]


def validate_bodies(bodies: Sequence[str], *, default_region: str) -> list[Envelope]:
    """Parse every body exactly as the worker will; the first bad one stops everything."""
    envelopes = []
    for n, body in enumerate(bodies):
        where = f"message {n + 1} of {len(bodies)}: " if len(bodies) > 1 else ""
        size = len(body.encode())
        if size > MAX_BODY_BYTES:
            raise PublishError(
                f"{where}body is {size} bytes, over the SQS limit of {MAX_BODY_BYTES}; "
                "lower --max-targets"
            )
        try:
            envelopes.append(
                parse_message(body, message_id=f"publish-check-{n}", default_region=default_region)
            )
        except PermanentError as exc:
            raise PublishError(f"{where}{exc.reason}") from None
    return envelopes


def send_bodies(
    sqs: SQSClient,
    queue_url: str,
    bodies: Sequence[str],
    *,
    attempts: int = SEND_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """SendMessageBatch in tens, in order; returns the message ids in body order.

    Entries SQS lists as ``Failed`` through no fault of the sender are retried with jittered
    backoff; if any message is still unsent, :class:`SendError` stops before the next ten.
    ``progress(sent, total)`` is called after each batch.
    """
    message_ids: dict[int, str] = {}
    for start in range(0, len(bodies), SQS_BATCH):
        batch = range(start, min(start + SQS_BATCH, len(bodies)))
        pending = list(batch)
        errors: dict[int, str] = {}
        for attempt in range(attempts):
            if attempt:
                sleep(min(2.0, 0.1 * 2**attempt) * random.uniform(0.5, 1.0))
            entries: list[SendMessageBatchRequestEntryTypeDef] = [
                {"Id": str(n), "MessageBody": bodies[n]} for n in pending
            ]
            response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
            for ok in response.get("Successful", []):
                message_ids[int(ok["Id"])] = ok["MessageId"]
            pending = []
            for failed in response.get("Failed", []):
                n = int(failed["Id"])
                errors[n] = f"{failed['Code']}: {failed.get('Message', '')}"
                if not failed["SenderFault"]:
                    pending.append(n)
            if not pending:
                break
        unsent = [n for n in batch if n not in message_ids]
        if unsent:
            raise SendError(
                f"{len(unsent)} message(s) not sent: {errors.get(unsent[0], 'unknown error')}",
                sent=[message_ids[n] for n in sorted(message_ids)],
            )
        if progress is not None:
            progress(len(message_ids), len(bodies))
    return [message_ids[n] for n in range(len(bodies))]


def request_ids_of(envelopes: Sequence[Envelope], message_ids: Sequence[str]) -> tuple[str, ...]:
    """Distinct request ids; a legacy message's request id is its SQS message id."""
    ids = [
        message_id if envelope.legacy else envelope.request_id
        for envelope, message_id in zip(envelopes, message_ids, strict=True)
    ]
    return tuple(dict.fromkeys(ids))


def publish(
    bodies: Sequence[str],
    *,
    sqs: SQSClient,
    queue_url: str,
    default_region: str,
    progress: Callable[[int, int], None] | None = None,
) -> PublishResult:
    """Validate every body, then send them all: nothing is sent unless all are valid."""
    envelopes = validate_bodies(bodies, default_region=default_region)
    message_ids = send_bodies(sqs, queue_url, bodies, progress=progress)
    return PublishResult(
        request_ids=request_ids_of(envelopes, message_ids),
        message_ids=tuple(message_ids),
        envelopes=tuple(envelopes),
    )
