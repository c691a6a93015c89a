"""Message bodies -> jobs.

Two body forms are accepted: envelope v1 (DESIGN.md) and the legacy ``{"entries": [...]}`` form
of the original CloudFront pattern, which maps to ``cloudfront.invalidate`` jobs. Validation is
all-or-nothing: a message with one bad target runs none of them, and the reason names the target.

Validation uses JSON Schema compiled by fastjsonschema (the engine behind Powertools' validation
utility): ~15 ms of cold start against ~100 ms for pydantic and its models (README, design).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import fastjsonschema

from handler.exceptions import BadMessageError, InvalidParamsError
from tasks.base import Job
from tasks.registry import get_task

__all__ = ["LEGACY_SCHEMA", "V1_SCHEMA", "Envelope", "parse_message"]

# Patterns run on Python's re, where \d and \w match any Unicode digit or letter: ASCII only.
REQUEST_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_+=,.@:/-]{0,127}$"
ACCOUNT_PATTERN: Final = r"^[0-9]{12}$"
REGION_PATTERN: Final = r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}$"

V1_SCHEMA: Final[Mapping[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "task", "targets"],
    "properties": {
        "version": {"const": 1},
        "task": {"type": "string", "maxLength": 64},
        "request_id": {"type": "string", "pattern": REQUEST_ID_PATTERN},
        "targets": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["account"],
                "properties": {
                    "account": {"type": "string", "pattern": ACCOUNT_PATTERN},
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
                "canary": {"type": "boolean"},
                "max_errors": {
                    "anyOf": [
                        {"type": "integer", "minimum": 0},
                        {"type": "string", "pattern": "^(100|[1-9]?[0-9])%$"},
                    ]
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
                    "aws_account_id": {"type": "string", "pattern": ACCOUNT_PATTERN},
                    "cloudfront_distribution_id": {"type": "string"},
                    "invalidation_path": {"type": "string"},
                },
            },
        }
    },
}
LEGACY_TASK: Final = "cloudfront.invalidate"


@dataclass(frozen=True, slots=True)
class Options:
    """Blast-radius controls of a message (``options`` in the envelope)."""

    dry_run: bool = False
    canary: bool = False
    max_errors: int | str | None = None  # a count, or a percentage of the targets ("10%")

    def max_errors_for(self, targets: int) -> int | None:
        if isinstance(self.max_errors, str):
            return math.ceil(targets * int(self.max_errors[:-1]) / 100)
        return self.max_errors

    def as_json(self) -> dict[str, Any]:
        raw = {"dry_run": self.dry_run, "canary": self.canary, "max_errors": self.max_errors}
        return {k: v for k, v in raw.items() if v not in (None, False)}


@dataclass(frozen=True, slots=True)
class Envelope:
    """A validated message: its request id, task and jobs (one per distinct target)."""

    request_id: str
    task: str
    jobs: tuple[Job, ...]
    options: Options = Options()
    legacy: bool = False

    @property
    def dry_run(self) -> bool:
        return self.options.dry_run


# Schemas are module-level constants: compiled once each, looked up by identity (hashing the
# schema itself on every target cost more than validating).
_validators: dict[int, tuple[Mapping[str, Any], Callable[[Any], Any]]] = {}


def _validator(schema: Mapping[str, Any]) -> Callable[[Any], Any]:
    entry = _validators.get(id(schema))
    if entry is None or entry[0] is not schema:
        entry = (schema, fastjsonschema.compile(json.loads(json.dumps(schema))))
        _validators[id(schema)] = entry
    return entry[1]


def validate(schema: Mapping[str, Any], value: Any, *, what: str) -> None:
    """Validate ``value``; raise :class:`BadMessageError` naming the first offending field."""
    validator = _validator(schema)
    try:
        validator(value)
    except fastjsonschema.JsonSchemaValueException as exc:
        message = str(exc.message)
        if message.startswith("data"):
            message = what + message[len("data") :]
        raise BadMessageError(message) from None


def job_key(
    request_id: str,
    task: str,
    account: str,
    region: str,
    params: Mapping[str, Any],
    *,
    dry_run: bool = False,
) -> str:
    """A key that is the same for the same job on every delivery of its message.

    A dry run of a job is another job: it must never stand in for the real one.
    """
    canonical = json.dumps([request_id, task, account, region, params, dry_run], sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def parse_message(body: str, *, message_id: str, default_region: str) -> Envelope:
    """Parse and validate one SQS body. Raises a :class:`PermanentError` subclass when bad."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:  # ValueError: also integers over 4300 digits
        raise BadMessageError(f"body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise BadMessageError(f"body must be a JSON object, got {type(document).__name__}")
    if "entries" in document and "version" not in document:
        return _from_legacy(document, message_id=message_id, default_region=default_region)
    return _from_v1(document, message_id=message_id, default_region=default_region)


def _from_v1(document: dict[str, Any], *, message_id: str, default_region: str) -> Envelope:
    validate(V1_SCHEMA, document, what="body")
    task = get_task(document["task"])
    request_id = document.get("request_id") or message_id
    raw = document.get("options", {})
    options = Options(
        dry_run=bool(raw.get("dry_run", False)),
        canary=bool(raw.get("canary", False)),
        max_errors=raw.get("max_errors"),
    )
    shared = document.get("params", {})
    targets = [
        (t["account"], t.get("region", default_region), {**shared, **t.get("params", {})})
        for t in document["targets"]
    ]
    return _envelope(task.name, request_id, message_id, targets, options=options, legacy=False)


def _from_legacy(document: dict[str, Any], *, message_id: str, default_region: str) -> Envelope:
    validate(LEGACY_SCHEMA, document, what="body")
    targets = [
        (
            e["aws_account_id"],
            default_region,
            {"distribution_id": e["cloudfront_distribution_id"], "paths": [e["invalidation_path"]]},
        )
        for e in document["entries"]
    ]
    return _envelope(LEGACY_TASK, message_id, message_id, targets, options=Options(), legacy=True)


def _envelope(
    task_name: str,
    request_id: str,
    message_id: str,
    targets: list[tuple[str, str, dict[str, Any]]],
    *,
    options: Options,
    legacy: bool,
) -> Envelope:
    task = get_task(task_name)
    jobs: dict[str, Job] = {}
    max_errors = options.max_errors_for(len(targets))
    for index, (account, region, params) in enumerate(targets):
        where = f"target {index} ({account} {region})"
        try:
            validate(task.params_schema, params, what="params")
            task.check(params)
        except (BadMessageError, InvalidParamsError) as exc:
            raise InvalidParamsError(f"{where}: {exc.reason}") from None
        key = job_key(request_id, task_name, account, region, params, dry_run=options.dry_run)
        # The same target twice in one message is one job: it must not run twice.
        jobs.setdefault(
            key,
            Job(
                key=key,
                request_id=request_id,
                task=task_name,
                account=account,
                region=region,
                params=params,
                message_id=message_id,
                index=index,
                dry_run=options.dry_run,
                canary=options.canary and not jobs,
                after_canary=options.canary and bool(jobs),
                max_errors=max_errors,
            ),
        )
    return Envelope(
        request_id=request_id,
        task=task_name,
        jobs=tuple(jobs.values()),
        options=options,
        legacy=legacy,
    )
