"""Message bodies -> a request and its jobs.

Two body forms are accepted (``handler.contract``): envelope v1 and the legacy ``{"entries":
[...]}`` form of the original CloudFront pattern, which maps to ``cloudfront.invalidate`` jobs.
Validation is all-or-nothing: a message with one bad target runs none of them, and the reason
names the target.

A body with ``select`` names its targets by organisation (``handler.selection``): it parses to
an envelope with a :class:`~handler.selection.Selection` and no jobs but its explicit targets';
the worker expands it into chunk messages (``handler.expansion``) instead of running it.

A message carries one part of one request. A request split across messages says so in every
part (``request.targets``: how many targets the whole request has), so the worker knows the
expected set from whichever part it sees first; any other message is a whole request.

Validation uses JSON Schema compiled by fastjsonschema (the engine behind Powertools' validation
utility): ~15 ms of cold start against ~100 ms for pydantic and its models (README, design).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from handler.contract import (
    LEGACY_SCHEMA,
    LEGACY_TASK,
    V1_SCHEMA,
    is_legacy,
    load_json,
    split_bodies,
    validate,
)
from handler.exceptions import BadMessageError, InvalidParamsError
from handler.selection import Selection
from tasks.base import Job, Task
from tasks.registry import get_task, params_validator

__all__ = [
    "Envelope",
    "Options",
    "RequestInfo",
    "Target",
    "bodies_for",
    "check_params",
    "job_key",
    "parse_message",
]

_MISSING = object()


@dataclass(frozen=True, slots=True)
class Target:
    account: str
    region: str


@dataclass(frozen=True, slots=True)
class Options:
    """Request-wide controls (``options`` in the envelope)."""

    dry_run: bool = False
    canary: Target | None = None  # the request's canary target: runs first, alone
    max_errors: int | str | None = None  # a count, or a percentage of the targets ("10%")
    alarms: tuple[str, ...] = ()  # CloudWatch alarms: one in ALARM stops the request
    on_alarm_unreadable: str = "stop"  # or "continue"
    # Targets in flight at once across every instance: a count, or a percentage ("10%").
    max_concurrency: int | str | None = None
    ramp: str | None = None  # "exponential": waves of 1, 2, 4, ... up to max_concurrency
    # Region by region: a region's targets start once every target of those before it ended.
    region_order: tuple[str, ...] = ()

    def max_errors_for(self, targets: int) -> int | None:
        if isinstance(self.max_errors, str):
            return math.ceil(targets * int(self.max_errors[:-1]) / 100)
        return self.max_errors

    def max_concurrency_for(self, targets: int) -> int | None:
        """The cap in targets (a percentage rounds up, and is never below 1)."""
        if isinstance(self.max_concurrency, str):
            return max(1, math.ceil(targets * int(self.max_concurrency[:-1]) / 100))
        return self.max_concurrency

    def as_json(self) -> dict[str, Any]:
        """The options as a body states them; the canary always by name, so any part or
        re-sent subset of the request knows which target it is."""
        raw: dict[str, Any] = {"dry_run": self.dry_run, "max_errors": self.max_errors}
        if self.canary is not None:
            raw["canary"] = {"account": self.canary.account, "region": self.canary.region}
        if self.alarms:
            raw["alarms"] = list(self.alarms)
            raw["on_alarm_unreadable"] = self.on_alarm_unreadable
        if self.max_concurrency is not None:
            raw["max_concurrency"] = self.max_concurrency
        if self.ramp:
            raw["ramp"] = self.ramp
        if self.region_order:
            raw["region_order"] = list(self.region_order)
        return {k: v for k, v in raw.items() if v not in (None, False)}

    @classmethod
    def of(cls, raw: Mapping[str, Any], canary: Target | None) -> Options:
        """From a body's ``options`` the schema accepted (the canary resolved by the caller)."""
        if raw.get("ramp") and raw.get("max_concurrency") is None:
            raise BadMessageError(
                "body.options.ramp needs body.options.max_concurrency (the wave size it ramps "
                "up to)"
            )
        return cls(
            dry_run=bool(raw.get("dry_run", False)),
            canary=canary,
            max_errors=raw.get("max_errors"),
            alarms=tuple(raw.get("alarms", ())),
            on_alarm_unreadable=str(raw.get("on_alarm_unreadable", "stop")),
            max_concurrency=raw.get("max_concurrency"),
            ramp=raw.get("ramp"),
            region_order=tuple(raw.get("region_order", ())),
        )

    def stage_of(self, region: str) -> int:
        """The region's place in ``region_order`` (0 first); regions it does not list come
        last, together."""
        order = self.region_order
        return order.index(region) if region in order else len(order)


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What one message says about its whole request."""

    request_id: str
    task: str
    options: Options = Options()
    expected_targets: int = 0  # of the whole request, over all its messages
    part: int | None = None
    parts: int | None = None
    legacy: bool = False
    # Targets per region over the whole request (stated with options.region_order).
    region_targets: Mapping[str, int] | None = None

    @property
    def whole(self) -> bool:
        """The message holds the whole request (not one part of several)."""
        return (self.parts or 1) == 1

    def as_json(self) -> dict[str, Any]:
        """The ``request`` block a body carries (re-sends keep the expected total)."""
        block: dict[str, Any] = {"targets": self.expected_targets}
        if self.part is not None:
            block["part"] = self.part
        if self.parts is not None:
            block["parts"] = self.parts
        if self.region_targets is not None:
            block["regions"] = dict(self.region_targets)
        return block


@dataclass(frozen=True, slots=True)
class Envelope:
    """A validated message: its request and its jobs (one per distinct target)."""

    request: RequestInfo
    jobs: tuple[Job, ...]
    target_count: int  # targets as written, before identical ones collapse into one job
    canary_key: str | None = None  # the job of this message that is the request's canary
    accounts: frozenset[str] = field(default_factory=frozenset)  # every account it names
    # A selection to expand (``select`` in the body); its jobs are then the explicit targets
    # only, and ``canary_first`` says the canary is the expansion's first target.
    selection: Selection | None = None
    canary_first: bool = False

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def task(self) -> str:
        return self.request.task

    @property
    def options(self) -> Options:
        return self.request.options

    @property
    def legacy(self) -> bool:
        return self.request.legacy


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


def parse_message(
    body: str, *, message_id: str, default_region: str, check: bool = True
) -> Envelope:
    """Parse and validate one SQS body. Raises a :class:`PermanentError` subclass when bad.

    ``check=False`` leaves the targets' parameters unchecked (:func:`check_params` checks
    them): the worker first refuses accounts it may not enter, whatever their parameters say,
    so a target outside the allow-list ends with that reason."""
    envelope = _parse(body, message_id=message_id, default_region=default_region)
    if check:
        check_params(envelope)
    return envelope


def check_params(envelope: Envelope) -> None:
    """Check every job's parameters against its task's schema and rules (all or nothing: the
    first bad target names itself in the reason)."""
    task = get_task(envelope.task)
    validator = params_validator(task.name)
    for job in envelope.jobs:
        try:
            validate(task.params_schema, job.params, what="params", validator=validator)
            task.check(job.params, account=job.account, region=job.region)
        except (BadMessageError, InvalidParamsError) as exc:
            raise InvalidParamsError(
                f"target {job.index} ({job.account} {job.region}): {exc.reason}"
            ) from None


def _parse(body: str, *, message_id: str, default_region: str) -> Envelope:
    document = load_json(body)
    if not isinstance(document, dict):
        raise BadMessageError(f"body must be a JSON object, got {type(document).__name__}")
    if is_legacy(document):
        return _from_legacy(document, message_id=message_id, default_region=default_region)
    if "Records" in document and "version" not in document:
        raise BadMessageError(
            "body is an SQS event (the input of `sam local invoke`), not a message body: "
            "send one of its records' bodies instead"
        )
    return _from_v1(document, message_id=message_id, default_region=default_region)


def _from_v1(document: dict[str, Any], *, message_id: str, default_region: str) -> Envelope:
    if "targets" not in document and "select" not in document:
        raise BadMessageError("body needs targets, select, or both")
    validate(V1_SCHEMA, document, what="body")
    task = get_task(document["task"])
    request_id = document.get("request_id") or message_id
    shared = document.get("params", {})
    targets = [
        (t["account"], t.get("region", default_region), {**shared, **t.get("params", {})})
        for t in document.get("targets", ())
    ]
    raw = document.get("options", {})
    block = document.get("request")
    if "select" in document:
        return _selecting(
            document, task, targets, message_id=message_id, default_region=default_region
        )
    parts = block.get("parts") if block else None
    part = block.get("part") if block else None
    if part is not None and parts is not None and part > parts:
        raise BadMessageError(f"body.request.part {part} is beyond body.request.parts {parts}")
    canary = _canary(raw.get("canary"), targets, split=(parts or 1) > 1, region=default_region)
    options = Options.of(raw, canary)
    request = RequestInfo(
        request_id=request_id,
        task=task.name,
        options=options,
        expected_targets=block["targets"] if block else 0,
        part=part,
        parts=parts,
        region_targets=block.get("regions") if block else None,
    )
    return _envelope(request, message_id, targets)


def _selecting(
    document: dict[str, Any],
    task: Task,
    targets: list[tuple[str, str, dict[str, Any]]],
    *,
    message_id: str,
    default_region: str,
) -> Envelope:
    """A body that selects its targets: the whole request, expanded by the worker."""
    if "request" in document:
        raise BadMessageError(
            "body.request cannot go with body.select: a selection is a whole request (the "
            "worker splits it into parts itself)"
        )
    selection = Selection.of(
        document["select"], default_region=default_region, shared_params=document.get("params")
    )
    raw = document.get("options", {})
    named = raw.get("canary") if isinstance(raw.get("canary"), Mapping) else None
    canary = _canary(named, targets, split=True, region=default_region)
    options = Options.of(raw, canary)
    request_id = document.get("request_id") or message_id
    request = RequestInfo(request_id=request_id, task=task.name, options=options)
    envelope = _envelope(request, message_id, targets) if targets else None
    return Envelope(
        request=request,
        jobs=envelope.jobs if envelope else (),
        target_count=envelope.target_count if envelope else 0,
        accounts=envelope.accounts if envelope else frozenset(),
        selection=selection,
        canary_first=raw.get("canary") is True,
    )


def _canary(
    value: bool | Mapping[str, str] | None,
    targets: list[tuple[str, str, Any]],
    *,
    split: bool,
    region: str,
) -> Target | None:
    if not value:
        return None
    if value is True:
        if split:
            raise BadMessageError(
                "body.options.canary is true in a request split across messages: name the "
                'canary target ({"account": ..., "region": ...}) so every part agrees on it'
            )
        account, region, _ = targets[0]
        return Target(account, region)
    assert isinstance(value, Mapping)  # noqa: S101 - the schema allows a boolean or an object
    return Target(value["account"], value.get("region") or region)


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
    request = RequestInfo(request_id=message_id, task=LEGACY_TASK, legacy=True)
    return _envelope(request, message_id, targets)


def _envelope(
    request: RequestInfo, message_id: str, targets: list[tuple[str, str, dict[str, Any]]]
) -> Envelope:
    task = get_task(request.task)
    jobs: dict[str, Job] = {}
    accounts: set[str] = set()
    canary_key: str | None = None
    canary = request.options.canary
    for index, (account, region, params) in enumerate(targets):
        job = _job(task, request, message_id, index, (account, region, params))
        accounts |= {account, *_other_accounts(task, params)}
        # The same target twice in one message is one job: it must not run twice.
        jobs.setdefault(job.key, job)
        if canary_key is None and canary and (canary.account, canary.region) == (account, region):
            canary_key = job.key
    if request.expected_targets == 0:
        # A message without a `request` block is a whole request of its own.
        request = replace(request, expected_targets=len(jobs))
    elif request.expected_targets < len(jobs):
        raise BadMessageError(
            f"body.request.targets is {request.expected_targets}, but this part alone has "
            f"{len(jobs)} targets"
        )
    if request.options.region_order:
        request = replace(request, region_targets=_region_targets(request, jobs.values()))
    return Envelope(
        request=request,
        jobs=tuple(jobs.values()),
        target_count=len(targets),
        canary_key=canary_key,
        accounts=frozenset(accounts),
    )


def _region_targets(request: RequestInfo, jobs: Iterable[Job]) -> dict[str, int]:
    """Targets per region over the whole request, for a request rolled region by region: as
    the request block states them, or counted here when this message is the whole request."""
    here = Counter(job.region for job in jobs)
    stated = request.region_targets
    if stated is None:
        if request.whole and request.expected_targets == sum(here.values()):
            return dict(sorted(here.items()))
        raise BadMessageError(
            "body.options.region_order in a request split across messages needs "
            "body.request.regions (its targets per region) so every part knows when a region "
            "is done"
        )
    if sum(stated.values()) != request.expected_targets:
        raise BadMessageError(
            f"body.request.regions counts {sum(stated.values())} targets, but "
            f"body.request.targets is {request.expected_targets}"
        )
    for region, count in sorted(here.items()):
        if count > stated.get(region, 0):
            raise BadMessageError(
                f"body.request.regions says {stated.get(region, 0)} targets in {region}, but "
                f"this part alone has {count}"
            )
    return dict(stated)


def _other_accounts(task: Task, params: Mapping[str, Any]) -> tuple[str, ...]:
    """The accounts a job acts in besides its target; none while its parameters are
    unchecked and lack them (check_params then refuses the message before any STS call)."""
    try:
        return tuple(task.other_accounts(params).values())
    except (KeyError, TypeError, ValueError):
        return ()


def _job(
    task: Task,
    request: RequestInfo,
    message_id: str,
    index: int,
    target: tuple[str, str, dict[str, Any]],
) -> Job:
    """The job of one target (its parameters are checked by :func:`check_params`)."""
    account, region, params = target
    dry_run = request.options.dry_run
    return Job(
        key=job_key(request.request_id, task.name, account, region, params, dry_run=dry_run),
        request_id=request.request_id,
        task=task.name,
        account=account,
        region=region,
        params=params,
        message_id=message_id,
        index=index,
        dry_run=dry_run,
    )


def bodies_for(envelope: Envelope, jobs: Sequence[Job]) -> list[tuple[str, list[Job]]]:
    """v1 bodies for some of a message's jobs, each under SQS's size limit, with their jobs.

    Same request id, request block and options; parameters shared by all the jobs stated once
    at the top (as publishers write them), so the job keys hold and no body outgrows its source.
    """
    first = dict(jobs[0].params) if jobs else {}
    shared = {k: v for k, v in first.items() if all(j.params.get(k, _MISSING) == v for j in jobs)}
    head: dict[str, Any] = {
        "version": 1,
        "task": envelope.task,
        "request_id": envelope.request_id,
        "request": envelope.request.as_json(),
    }
    if shared:
        head["params"] = shared
    options = envelope.options.as_json()
    if options:
        head["options"] = options
    targets = [
        {
            "account": j.account,
            "region": j.region,
            "params": {k: v for k, v in j.params.items() if k not in shared},
        }
        for j in jobs
    ]
    return [(c.body, list(jobs[c.start : c.stop])) for c in split_bodies(head, targets)]
