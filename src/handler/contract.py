"""The message contract, in one place: what a body may say, its limits, its attributes, and how
bodies are split. The worker, the publisher (``fanout publish``) and the tests all use this.

Envelope v1 (DESIGN.md), with the additions the README's design notes list::

    {"version": 1, "task": "...", "request_id": "...",
     "request": {"targets": 120, "part": 2, "parts": 3},   # a request split across messages
     "targets": [{"account": "...", "region": "...", "params": {...}}],
     "params": {...},
     "options": {"dry_run": false, "canary": true | {"account": "...", "region": "..."},
                 "max_errors": 3 | "10%", "alarms": ["..."], "on_alarm_unreadable": "stop",
                 "max_concurrency": 4 | "10%", "ramp": "exponential",
                 "region_order": ["us-east-1", "eu-west-1"]}}

(a request split across messages that rolls region by region also says, in every part, how many
of its targets each region has: ``"request": {..., "regions": {"us-east-1": 40, ...}}``)

or, instead of or besides ``targets``, a selection the worker expands through AWS
Organizations into chunk messages on the work queue (``handler.expansion``)::

     "select": {"organizational_units": ["ou-..."], "include_child_ous": true,
                "account_tags": {"env": "prod"}, "exclude_accounts": ["..."],
                "regions": ["us-east-1", "eu-west-1"],
                "params_by_account": {"111111111111": {...}}}

and the legacy body of the original pattern, ``{"entries": [...]}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import fastjsonschema

from handler.exceptions import BadMessageError
from tasks.aws import ACCOUNT_ID_PATTERN, ACCOUNT_ID_RE, REGION_PATTERN

__all__ = [
    "ATTEMPT_ATTRIBUTE",
    "ATTRIBUTE_PREFIX",
    "BODY_BUDGET_BYTES",
    "LEGACY_SCHEMA",
    "LEGACY_TASK",
    "LETTER_ID_ATTRIBUTE",
    "MAX_CONCURRENCY",
    "MAX_REGIONS",
    "MAX_SELECT_ITEMS",
    "MAX_TARGETS_PER_MESSAGE",
    "OU_ID_PATTERN",
    "PUBLISH_TARGETS_PER_MESSAGE",
    "REDRIVEN_ATTRIBUTE",
    "REQUEST_ID_PATTERN",
    "SELECT_SCHEMA",
    "SOURCE_MESSAGE_ID_ATTRIBUTE",
    "SQS_BATCH",
    "SQS_MAX_MESSAGE_BYTES",
    "V1_SCHEMA",
    "WAITS_ATTRIBUTE",
    "Chunk",
    "is_legacy",
    "load_json",
    "message_group",
    "split_bodies",
    "validate",
]

# --- limits -----------------------------------------------------------------------------------
# SQS counts a message's body *and* its attributes against 256 KiB; keep room for the
# attributes the worker adds to re-sends and dead letters (reason, targets, ...).
SQS_MAX_MESSAGE_BYTES: Final = 262_144
BODY_BUDGET_BYTES: Final = 250_000
SQS_BATCH: Final = 10  # SendMessageBatch / ReceiveMessage / DeleteMessageBatch maximum
# The worker refuses larger messages (its MAX_TARGETS_PER_MESSAGE setting defaults to this):
# one message is one invocation's work, and a bad message must not fan out unboundedly.
MAX_TARGETS_PER_MESSAGE: Final = 500
# The publisher's split size: small messages spread a request over invocations and instances.
PUBLISH_TARGETS_PER_MESSAGE: Final = 50
MAX_REQUEST_ID: Final = 128
MAX_ALARMS: Final = 10
# In-flight leases of one request live in one item (``handler.rollout``): a bound keeps it small.
MAX_CONCURRENCY: Final = 1000
MAX_REGIONS: Final = 50  # more than AWS has: a longer list is a mistake

# --- message attributes -----------------------------------------------------------------------
ATTRIBUTE_PREFIX: Final = "fanout."
# Attempts these targets used so far (a re-send counts on from here).
ATTEMPT_ATTRIBUTE: Final = ATTRIBUTE_PREFIX + "attempt"
# Deliveries in which these targets could not start (no time, lane stopped, canary pending).
WAITS_ATTRIBUTE: Final = ATTRIBUTE_PREFIX + "waits"
# Set by `fanout redrive` on what it sends back: the failed jobs in it may run again.
REDRIVEN_ATTRIBUTE: Final = ATTRIBUTE_PREFIX + "redriven"
SOURCE_MESSAGE_ID_ATTRIBUTE: Final = ATTRIBUTE_PREFIX + "source_message_id"
# The same for every copy of one dead letter (a letter re-sent after a crash has the same id).
LETTER_ID_ATTRIBUTE: Final = ATTRIBUTE_PREFIX + "letter_id"

# --- schemas ----------------------------------------------------------------------------------
REQUEST_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_+=,.@:/-]{0,127}$"
# An OU id, or the root's (the whole organisation).
OU_ID_PATTERN: Final = r"^(ou-[0-9a-z]{4,32}-[0-9a-z]{8,32}|r-[0-9a-z]{4,32})$"
# A selection may name at most this many OUs, tags, exclusions and regions: what a person
# writes, not a list generated from an inventory (that is what `targets` is for).
MAX_SELECT_ITEMS: Final = 100
_ACCOUNT_ID: Final[Mapping[str, Any]] = {"type": "string", "pattern": ACCOUNT_ID_PATTERN}
SELECT_SCHEMA: Final[Mapping[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "organizational_units": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_SELECT_ITEMS,
            "uniqueItems": True,
            "items": {"type": "string", "pattern": OU_ID_PATTERN},
        },
        "include_child_ous": {"type": "boolean"},
        "account_tags": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": MAX_SELECT_ITEMS,
            "propertyNames": {"minLength": 1, "maxLength": 128},
            "additionalProperties": {"type": "string", "maxLength": 256},
        },
        "exclude_accounts": {
            "type": "array",
            "maxItems": 10 * MAX_SELECT_ITEMS,
            "uniqueItems": True,
            "items": _ACCOUNT_ID,
        },
        "regions": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_SELECT_ITEMS,
            "uniqueItems": True,
            "items": {"type": "string", "pattern": REGION_PATTERN},
        },
        "params_by_account": {
            "type": "object",
            "propertyNames": {"pattern": ACCOUNT_ID_PATTERN},
            "additionalProperties": {"type": "object"},
        },
    },
}
_TARGET_REF: Final[Mapping[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["account"],
    "properties": {
        "account": {"type": "string", "pattern": ACCOUNT_ID_PATTERN},
        "region": {"type": "string", "pattern": REGION_PATTERN},
    },
}
V1_SCHEMA: Final[Mapping[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "task"],
    "anyOf": [{"required": ["targets"]}, {"required": ["select"]}],
    "properties": {
        "version": {"const": 1},
        "select": SELECT_SCHEMA,
        "task": {"type": "string", "maxLength": 64},
        "request_id": {"type": "string", "pattern": REQUEST_ID_PATTERN},
        "request": {
            "type": "object",
            "additionalProperties": False,
            "required": ["targets"],
            "properties": {
                "targets": {"type": "integer", "minimum": 1},
                "part": {"type": "integer", "minimum": 1},
                "parts": {"type": "integer", "minimum": 1},
                # Targets per region over the whole request (with options.region_order).
                "regions": {
                    "type": "object",
                    "maxProperties": MAX_REGIONS,
                    "propertyNames": {"pattern": REGION_PATTERN},
                    "additionalProperties": {"type": "integer", "minimum": 0},
                },
            },
        },
        "targets": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["account"],
                "properties": {
                    "account": {"type": "string", "pattern": ACCOUNT_ID_PATTERN},
                    "region": {"type": "string", "pattern": REGION_PATTERN},
                    "params": {"type": "object"},
                },
            },
        },
        "params": {"type": "object"},
        "options": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "dry_run": {"type": "boolean"},
                "canary": {"anyOf": [{"type": "boolean"}, _TARGET_REF]},
                "max_errors": {
                    "anyOf": [
                        {"type": "integer", "minimum": 0},
                        {"type": "string", "pattern": "^(100|[1-9]?[0-9])%$"},
                    ]
                },
                # CloudWatch alarms (names, in the worker's account and region) checked before
                # each batch of the request: one in ALARM stops it.
                "alarms": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_ALARMS,
                    "uniqueItems": True,
                    "items": {"type": "string", "minLength": 1, "maxLength": 255},
                },
                "on_alarm_unreadable": {"enum": ["stop", "continue"]},
                # Rollout control: targets of the request in flight at once, across every
                # instance (a count, or a percentage of the request's targets), and whether
                # to ramp up to it in waves (1, 2, 4, ... each started once the last ended).
                "max_concurrency": {
                    "anyOf": [
                        {"type": "integer", "minimum": 1, "maximum": MAX_CONCURRENCY},
                        {"type": "string", "pattern": "^(100|[1-9][0-9]?)%$"},
                    ]
                },
                "ramp": {"enum": ["exponential"]},
                # Region by region: a region's targets start once every target of the regions
                # before it ended (targets in regions not listed run last, together).
                "region_order": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_REGIONS,
                    "uniqueItems": True,
                    "items": {"type": "string", "pattern": REGION_PATTERN},
                },
            },
        },
    },
}
LEGACY_SCHEMA: Final[Mapping[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["entries"],
    "properties": {
        "entries": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["aws_account_id", "cloudfront_distribution_id", "invalidation_path"],
                "properties": {
                    "aws_account_id": {"type": "string", "pattern": ACCOUNT_ID_PATTERN},
                    "cloudfront_distribution_id": {"type": "string"},
                    "invalidation_path": {"type": "string"},
                },
            },
        }
    },
}
LEGACY_TASK: Final = "cloudfront.invalidate"


def is_legacy(document: Mapping[str, Any]) -> bool:
    """The original pattern's body: ``entries`` and no ``version``."""
    return "entries" in document and "version" not in document


_REQUEST_ID_RE: Final = re.compile(REQUEST_ID_PATTERN)


def message_group(body: str) -> str | None:
    """The tenant SQS fair queues see a message as (its ``MessageGroupId`` on a standard
    queue): the target account when all its targets are in one - so one account's backlog
    gives way to the other accounts' messages - else its request id. None for a body that
    names neither (it is sent without one: SQS then treats it as a tenant of its own).
    """
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    targets = document.get("targets")
    if isinstance(targets, list) and targets:
        accounts = {t.get("account") for t in targets if isinstance(t, dict)}
        account = accounts.pop() if len(accounts) == 1 else None
        if isinstance(account, str) and ACCOUNT_ID_RE.match(account):
            return account
    request_id = document.get("request_id")
    if isinstance(request_id, str) and _REQUEST_ID_RE.match(request_id):
        return request_id
    return None


# --- parsing and validation -------------------------------------------------------------------
def _no_constants(name: str) -> Any:
    raise BadMessageError(f"body is not valid JSON: {name} is not a JSON number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            # json.loads would keep the last one silently: a validator and a reader could
            # then disagree about what the message says.
            raise BadMessageError(f"body is not valid JSON: field {key!r} appears twice")
        document[key] = value
    return document


def load_json(text: str) -> Any:
    """Strict JSON: no NaN/Infinity, no repeated field names; :class:`BadMessageError` if bad."""
    try:
        return json.loads(text, parse_constant=_no_constants, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:  # ValueError: also integers over 4300 digits
        raise BadMessageError(f"body is not valid JSON: {exc}") from None


_validators: dict[int, tuple[Mapping[str, Any], Callable[[Any], Any]]] = {}


def _compiled(schema: Mapping[str, Any]) -> Callable[[Any], Any]:
    # Schemas are module-level constants: compiled once each, looked up by identity.
    entry = _validators.get(id(schema))
    if entry is None or entry[0] is not schema:
        entry = (schema, fastjsonschema.compile(json.loads(json.dumps(schema))))
        _validators[id(schema)] = entry
    return entry[1]


def validate(
    schema: Mapping[str, Any],
    value: Any,
    *,
    what: str,
    validator: Callable[[Any], Any] | None = None,
) -> None:
    """Validate ``value``; raise :class:`BadMessageError` naming the field, the rule and the
    offending value. Integers must be integers (JSON Schema lets ``100.0`` pass)."""
    try:
        (validator or _compiled(schema))(value)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise BadMessageError(_readable(exc, what)) from None
    _reject_float_integers(schema, value, what)


def _shown(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _readable(exc: fastjsonschema.JsonSchemaValueException, what: str) -> str:
    name = what + str(exc.name)[len("data") :]
    rule, definition, value = exc.rule, exc.rule_definition, exc.value
    if rule == "required" and isinstance(value, dict):
        missing = [k for k in definition if k not in value]
        return f"{name} is missing required field(s): {', '.join(missing)}"
    if rule == "additionalProperties" and isinstance(value, dict):
        known = set(exc.definition.get("properties", {})) if exc.definition else set()
        unknown = sorted(k for k in value if k not in known)
        return f"{name} has unknown field(s): {', '.join(unknown)} (fields are never ignored)"
    if rule == "pattern":
        return f"{name} must match {definition}, got {_shown(value)}"
    if rule == "enum":
        return f"{name} must be one of {', '.join(map(str, definition))}, got {_shown(value)}"
    message = str(exc.message)
    if message.startswith("data"):
        message = name + message[len(str(exc.name)) :]
    return f"{message}, got {_shown(value)}"


def _reject_float_integers(schema: Mapping[str, Any], value: Any, where: str) -> None:
    if schema.get("type") == "integer" and isinstance(value, float):
        raise BadMessageError(f"{where} must be a whole number, got {value!r}")
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                _reject_float_integers(sub, value[key], f"{where}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for n, item in enumerate(value):
            _reject_float_integers(schema["items"], item, f"{where}[{n}]")


# --- splitting --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Chunk:
    """One body of a split, and which of the targets it holds (``targets[start:stop]``)."""

    body: str
    start: int
    stop: int


def split_bodies(
    head: Mapping[str, Any],
    targets: Sequence[Mapping[str, Any]],
    *,
    key: str = "targets",
    max_targets: int | None = None,
    max_bytes: int = BODY_BUDGET_BYTES,
) -> list[Chunk]:
    """Bodies ``{**head, key: chunk}`` for consecutive chunks of ``targets``, each at most
    ``max_targets`` long and ``max_bytes`` of compact JSON. The one splitter of the project: the
    publisher splits requests with it, the worker its re-sends and dead letters."""
    overhead = len(json.dumps({**head, key: []}, separators=(",", ":")).encode())
    budget = max_bytes - overhead
    chunks: list[Chunk] = []
    start = 0
    size = 0
    for n, target in enumerate(targets):
        cost = len(json.dumps(target, separators=(",", ":")).encode()) + 1
        count = n - start
        if count and (size + cost > budget or (max_targets and count >= max_targets)):
            chunks.append(_chunk(head, key, targets, start, n))
            start, size = n, 0
        size += cost
    if len(targets) > start:
        chunks.append(_chunk(head, key, targets, start, len(targets)))
    return chunks


def _chunk(
    head: Mapping[str, Any], key: str, targets: Sequence[Mapping[str, Any]], start: int, stop: int
) -> Chunk:
    body = json.dumps({**head, key: list(targets[start:stop])}, separators=(",", ":"))
    return Chunk(body, start, stop)
