"""Task messages from the command line: built, validated by the worker's parser, then sent.

Every body goes through the worker's own ``parse_message`` before anything is sent, so an
invalid task never reaches the queue and the operator sees the same single-line reason the worker
would have dead-lettered it with. Many targets are split into several messages that share one
request id, keeping each message small and each Lambda invocation short.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from handler.api import (
    BODY_BUDGET_BYTES,
    PUBLISH_TARGETS_PER_MESSAGE,
    SQS_BATCH,
    Envelope,
    OperatorSettings,
    PermanentError,
    get_task,
    is_legacy,
    message_group,
    parse_message,
    split_bodies,
)

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
    "build_selection_body",
    "new_request_id",
    "publish",
    "refused_accounts",
    "request_ids_of",
    "send_bodies",
    "validate_bodies",
]

MAX_TARGETS_PER_MESSAGE: Final = PUBLISH_TARGETS_PER_MESSAGE
MAX_BODY_BYTES: Final = BODY_BUDGET_BYTES
SEND_ATTEMPTS: Final = 4
# Jittered exponential backoff between attempts of the entries SQS failed through no fault of
# ours: up to 0.1 s, 0.2 s, 0.4 s, ... never more than 2 s.
SEND_BACKOFF_S: Final = 0.1
SEND_BACKOFF_MAX_S: Final = 2.0


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

    @property
    def selections(self) -> int:
        """Messages that select targets by organisation (the worker expands them)."""
        return sum(envelope.selection is not None for envelope in self.envelopes)


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


def _items(raw: str, items_schema: Mapping[str, Any]) -> list[Any]:
    """One value of an array parameter: a JSON list as it is, a JSON string as one item (it may
    hold commas), anything else split on commas (``/a,/b`` -> two items)."""
    value = _json_or_text(raw)
    if isinstance(value, list):
        return value
    if isinstance(value, str) and raw.lstrip().startswith('"'):
        return [value]
    return [_coerce(part.strip(), items_schema) for part in raw.split(",") if part.strip()]


def build_params(
    assignments: Sequence[str], schema: Mapping[str, Any], *, option: str = "--param"
) -> dict[str, Any]:
    """``k=v`` assignments -> params, guided by the task's JSON Schema.

    A value is JSON when it parses, else text; a repeated key accumulates a list. For an array
    field a value is a list: a JSON list (``'paths=["/a,b"]'`` keeps a comma in an item), or
    comma-separated items (``paths=/index.html,/img/*``), as lists are everywhere in the CLI.
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
            params[key] = [item for raw in raws for item in _items(raw, prop.get("items", {}))]
        else:
            values = [_coerce(raw, prop) for raw in raws]
            params[key] = values[0] if len(values) == 1 else values
    return params


def split_list(text: str | None) -> list[str]:
    """``"a, b,,a"`` -> ``["a", "b"]``: order kept, blanks and repeats dropped."""
    if not text:
        return []
    return list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))


def build_bodies(
    task: str,
    *,
    accounts: str,
    regions: str | None = None,
    params: Sequence[str] = (),
    target_params: Sequence[str] = (),
    request_id: str | None = None,
    dry_run: bool = False,
    canary: bool = False,
    max_errors: int | str | None = None,
    max_concurrency: int | str | None = None,
    ramp: str | None = None,
    region_order: Sequence[str] = (),
    alarms: Sequence[str] = (),
    on_alarm_unreadable: str | None = None,
    max_targets: int = MAX_TARGETS_PER_MESSAGE,
    default_region: str = "us-east-1",
) -> list[str]:
    """v1 bodies for ``task`` on every account x region, ``max_targets`` per message
    (``default_region``: the worker's, for targets without a region).

    ``dry_run``, ``canary`` and ``max_errors`` become the envelope's ``options``.
    """
    try:
        schema = get_task(task).params_schema
    except PermanentError as exc:
        raise PublishError(exc.reason) from None
    account_ids = split_list(accounts)
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
    targets = _targets(account_ids, regions, overrides)
    document: dict[str, Any] = {
        "version": 1,
        "task": task,
        "request_id": request_id or new_request_id(),
        "targets": targets,
        "params": build_params(params, schema),
    }
    options = _options(
        dry_run=dry_run,
        canary=canary,
        max_errors=max_errors,
        max_concurrency=max_concurrency,
        ramp=ramp,
        region_order=region_order,
        alarms=alarms,
        on_alarm_unreadable=on_alarm_unreadable,
    )
    if options:
        document["options"] = options
    return _split_document(document, max_targets, default_region)


def build_selection_body(
    task: str,
    *,
    ous: str | None = None,
    include_child_ous: bool = False,
    account_tags: Sequence[str] = (),
    exclude_accounts: str | None = None,
    accounts: str | None = None,
    regions: str | None = None,
    params: Sequence[str] = (),
    target_params: Sequence[str] = (),
    params_by_account: Mapping[str, Any] | None = None,
    request_id: str | None = None,
    dry_run: bool = False,
    canary: bool = False,
    max_errors: int | str | None = None,
    max_concurrency: int | str | None = None,
    ramp: str | None = None,
    region_order: Sequence[str] = (),
    alarms: Sequence[str] = (),
    on_alarm_unreadable: str | None = None,
) -> str:
    """One v1 body that selects its targets by organisation (``select``): the worker expands
    it through Organizations. ``accounts`` are explicit targets besides the selection;
    ``target_params`` and ``params_by_account`` (a mapping read from a file) give accounts
    their own parameters."""
    try:
        schema = get_task(task).params_schema
    except PermanentError as exc:
        raise PublishError(exc.reason) from None
    per_account: dict[str, dict[str, Any]] = {
        account: dict(values) for account, values in (params_by_account or {}).items()
    }
    for text in target_params:
        account, sep, assignment = text.partition(":")
        if not sep:
            raise PublishError(f"--target-param expects ACCOUNT:KEY=VALUE, got {text!r}")
        per_account.setdefault(account, {}).update(
            build_params([assignment], schema, option="--target-param")
        )
    select = {
        "organizational_units": split_list(ous),
        "include_child_ous": include_child_ous,
        "account_tags": parse_tags(account_tags),
        "exclude_accounts": split_list(exclude_accounts),
        "regions": split_list(regions),
        "params_by_account": per_account,
    }
    select = {k: v for k, v in select.items() if v}  # only what was asked for
    document: dict[str, Any] = {
        "version": 1,
        "task": task,
        "request_id": request_id or new_request_id(),
        "select": select,
        "params": build_params(params, schema),
    }
    explicit = _targets(split_list(accounts), regions, per_account)
    if explicit:
        document["targets"] = explicit
    options = _options(
        dry_run=dry_run,
        canary=canary,
        max_errors=max_errors,
        max_concurrency=max_concurrency,
        ramp=ramp,
        region_order=region_order,
        alarms=alarms,
        on_alarm_unreadable=on_alarm_unreadable,
    )
    if options:
        document["options"] = options
    return json.dumps(document, separators=(",", ":"))


def _targets(
    accounts: Sequence[str], regions: str | None, overrides: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Every account x region (no region: the worker's), with the account's own params."""
    region_list: list[str | None] = list(split_list(regions)) or [None]
    return [
        {
            "account": account,
            **({"region": region} if region else {}),
            **({"params": overrides[account]} if account in overrides else {}),
        }
        for account in accounts
        for region in region_list
    ]


def parse_tags(assignments: Sequence[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for text in assignments:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise PublishError(f"--account-tag expects KEY=VALUE, got {text!r}")
        tags[key] = value
    return tags


def _options(
    *,
    dry_run: bool,
    canary: bool,
    max_errors: int | str | None,
    max_concurrency: int | str | None = None,
    ramp: str | None = None,
    region_order: Sequence[str] = (),
    alarms: Sequence[str] = (),
    on_alarm_unreadable: str | None = None,
) -> dict[str, Any]:
    """The envelope ``options`` the flags ask for (only those set)."""
    options: dict[str, Any] = {}
    if alarms:
        options["alarms"] = list(alarms)
    if on_alarm_unreadable:
        if not alarms:
            raise PublishError("--on-alarm-unreadable needs --alarms")
        options["on_alarm_unreadable"] = on_alarm_unreadable
    if dry_run:
        options["dry_run"] = True
    if canary:
        options["canary"] = True
    if max_errors is not None:
        options["max_errors"] = max_errors
    if ramp and max_concurrency is None:
        raise PublishError("--ramp needs --max-concurrency (the wave size it ramps up to)")
    if max_concurrency is not None:
        options["max_concurrency"] = max_concurrency
    if ramp:
        options["ramp"] = ramp
    if region_order:
        options["region_order"] = list(region_order)
    return options


def _sqs_event_hint(document: Mapping[str, Any], source: str) -> str | None:
    """A Lambda SQS event (``{"Records": [...]}``, as in events/) is not a message body."""
    records = document.get("Records")
    if not isinstance(records, list) or set(document) != {"Records"}:
        return None
    count = sum(isinstance(r, Mapping) and isinstance(r.get("body"), str) for r in records)
    return (
        f"{source} is an SQS event for sam local invoke, not a message body; its records' "
        f"bodies are the messages ({count} of them): publish one with "
        f"jq -r '.Records[0].body' {source} | fanout publish --file -"
    )


def bodies_from_document(
    text: str,
    *,
    request_id: str | None = None,
    dry_run: bool = False,
    canary: bool = False,
    max_errors: int | str | None = None,
    max_concurrency: int | str | None = None,
    ramp: str | None = None,
    region_order: Sequence[str] = (),
    alarms: Sequence[str] = (),
    on_alarm_unreadable: str | None = None,
    max_targets: int = MAX_TARGETS_PER_MESSAGE,
    default_region: str = "us-east-1",
    source: str = "the body",
) -> list[str]:
    """A prepared body (v1 or legacy), checked as the worker would, then split if large.

    A v1 body gets ``request_id`` (or a new one when it has none) so the request can be
    followed, and the options the flags set; a legacy body is sent as it is (its request id is
    the SQS message id). ``source`` names the body in errors (the file's name).
    """
    try:
        parse_message(text, message_id="publish-check", default_region=default_region)
    except PermanentError as exc:
        hint = _sqs_event_hint(_json_object(text), source)
        raise PublishError(hint or exc.reason) from None
    document = json.loads(text)
    options = _options(
        dry_run=dry_run,
        canary=canary,
        max_errors=max_errors,
        max_concurrency=max_concurrency,
        ramp=ramp,
        region_order=region_order,
        alarms=alarms,
        on_alarm_unreadable=on_alarm_unreadable,
    )
    if "entries" in document and "version" not in document:
        if request_id or options:
            raise PublishError(
                "--request-id, --dry-run, --canary and --max-errors need a v1 body, "
                "not a legacy one"
            )
        return _split_document(document, max_targets, default_region)
    if request_id:
        document["request_id"] = request_id
    document.setdefault("request_id", new_request_id())
    if options:
        document["options"] = {**document.get("options", {}), **options}
    return _split_document(document, max_targets, default_region)


def _json_object(text: str) -> Mapping[str, Any]:
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return document if isinstance(document, dict) else {}


def _split_document(
    document: Mapping[str, Any], max_targets: int, default_region: str
) -> list[str]:
    """The document in messages of at most ``max_targets`` targets. A v1 request split this way
    says so in every part (``request``: its total target count - and, rolled region by region,
    its targets per region - and which part this is), so the worker knows the whole expected
    set from whichever part it sees first."""
    if max_targets < 1:
        raise PublishError(f"--max-targets must be at least 1, got {max_targets}")
    if "select" in document:
        # A selection is one message: the worker expands and splits it itself.
        return [json.dumps(dict(document), separators=(",", ":"))]
    if is_legacy(document):
        # A legacy message is a request of its own (its request id is its message id).
        head = {k: v for k, v in document.items() if k != "entries"}
        return [
            c.body
            for c in split_bodies(head, document["entries"], key="entries", max_targets=max_targets)
        ]
    targets = document["targets"]
    head = {k: v for k, v in document.items() if k != "targets"}
    options = dict(head.get("options", {}))
    if options.get("canary") is True and len(targets) > max_targets:
        # Every part must agree on which target is the canary: name it.
        first = targets[0]
        options["canary"] = {k: first[k] for k in ("account", "region") if k in first}
        head["options"] = options
    chunks = split_bodies(
        {**head, "request": {"targets": len(targets)}}, targets, max_targets=max_targets
    )
    if len(chunks) == 1 and "request" not in document:
        return [json.dumps(dict(document), separators=(",", ":"))]
    bodies = []
    for n, chunk in enumerate(chunks, start=1):
        block: dict[str, Any] = {"targets": len(targets), "part": n, "parts": len(chunks)}
        if options.get("region_order"):
            block["regions"] = dict(
                sorted(Counter(t.get("region", default_region) for t in targets).items())
            )
        part = {**head, "request": block, "targets": targets[chunk.start : chunk.stop]}
        bodies.append(json.dumps(part, separators=(",", ":")))
    return bodies


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


class _RetryableEntriesError(Exception):
    """SQS failed some entries of a batch through no fault of the sender: send them again."""


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
    backoff (tenacity); if any message is still unsent, :class:`SendError` stops before the
    next ten. ``progress(sent, total)`` is called after each batch.
    """
    message_ids: dict[int, str] = {}
    for start in range(0, len(bodies), SQS_BATCH):
        batch = range(start, min(start + SQS_BATCH, len(bodies)))
        errors: dict[int, str] = {}
        pending = list(batch)
        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait_random_exponential(multiplier=SEND_BACKOFF_S, max=SEND_BACKOFF_MAX_S),
            retry=retry_if_exception_type(_RetryableEntriesError),
            sleep=sleep,
            reraise=True,
        )
        # Still failing after the last attempt: reported below as unsent.
        with contextlib.suppress(_RetryableEntriesError):
            for attempt in retrying:
                with attempt:
                    pending = _send_batch(
                        sqs,
                        queue_url=queue_url,
                        bodies=bodies,
                        pending=pending,
                        message_ids=message_ids,
                        errors=errors,
                    )
                    if pending:
                        raise _RetryableEntriesError(f"{len(pending)} entries to send again")
        unsent = [n for n in batch if n not in message_ids]
        if unsent:
            raise SendError(
                f"{len(unsent)} message(s) not sent: {errors.get(unsent[0], 'unknown error')}",
                sent=[message_ids[n] for n in sorted(message_ids)],
            )
        if progress is not None:
            progress(len(message_ids), len(bodies))
    return [message_ids[n] for n in range(len(bodies))]


def _send_batch(
    sqs: SQSClient,
    *,
    queue_url: str,
    bodies: Sequence[str],
    pending: Iterable[int],
    message_ids: dict[int, str],
    errors: dict[int, str],
) -> list[int]:
    """One SendMessageBatch of the ``pending`` bodies; records ids and errors; returns the
    entries that failed through no fault of ours (worth sending again)."""
    entries: list[SendMessageBatchRequestEntryTypeDef] = []
    for n in pending:
        entry: SendMessageBatchRequestEntryTypeDef = {"Id": str(n), "MessageBody": bodies[n]}
        # The tenant SQS fair queues balance (one account's backlog yields to the others').
        if (group := message_group(bodies[n])) is not None:
            entry["MessageGroupId"] = group
        entries.append(entry)
    response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
    for ok in response.get("Successful", []):
        message_ids[int(ok["Id"])] = ok["MessageId"]
    retry: list[int] = []
    for failed in response.get("Failed", []):
        n = int(failed["Id"])
        errors[n] = f"{failed['Code']}: {failed.get('Message', '')}"
        if not failed["SenderFault"]:
            retry.append(n)
    return retry


def refused_accounts(envelopes: Sequence[Envelope], settings: OperatorSettings) -> list[str]:
    """The accounts of ``envelopes`` that the worker configured by ``settings`` would refuse."""
    accounts = {job.account for envelope in envelopes for job in envelope.jobs}
    return sorted(a for a in accounts if settings.refuses(a))


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
