"""A body that selects its targets (``select``) -> chunk messages on the work queue.

A selection can name thousands of targets (1,000 accounts x 3 regions); running them in the
invocation that reads it would make one giant invocation. The worker instead expands it once
and sends the targets back to the work queue as ordinary parts of one request (fan-out of
fan-out), so the queue, the event source and reserved concurrency spread the work.

Invariants (what "a redelivered expansion enqueues nothing twice" rests on):

1. The expansion is computed once and *stored* before anything is sent: the chunk bodies sit
   beside the request record (``RequestLedger.store_expansion``; first writer wins). A
   redelivery re-sends stored bodies, it never re-expands, so an organisation that changed in
   between cannot produce a different split.
2. A part is sent, then marked sent (``mark_sent``); a redelivery sends only unmarked parts. A
   crash between the two leaves a part that may go out twice; its jobs are the same jobs (same
   request id, target and parameters -> same job keys), so the ledger runs them once.
3. Every target is in exactly one part, and every part says the request's total, so the request
   record (opened here with that total) finishes only when all of them ended.
4. Accounts outside the allow-list are never assumed: they go in parts of their own, one per
   account, which the worker refuses whole before any STS call (each target ends failed, with
   the reason, and is dead-lettered like any other).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aws_lambda_powertools import Logger

from handler.authorization import Authorizer
from handler.contract import BODY_BUDGET_BYTES, PUBLISH_TARGETS_PER_MESSAGE, split_bodies
from handler.envelope import Envelope, parse_message
from handler.exceptions import (
    AccountNotAllowedError,
    BadMessageError,
    ConfigurationError,
    FanoutError,
    PermanentError,
    TransientError,
    classify_aws_error,
)
from handler.organization import Directory
from handler.requests import RequestLedger, RequestOpen, StoredExpansion
from handler.requeue import Requeue
from handler.selection import Selected, Selection, select_accounts
from handler.sqs import Message

__all__ = ["MAX_SELECTED_TARGETS", "Expander", "Planned", "plan_selection", "plan_targets"]

logger = Logger(child=True)

# A request record counts each target's short key (16 bytes) in a set: 10,000 targets take
# 160 KB of DynamoDB's 400 KB item (320 KB rolled region by region, which keeps each key a
# second time in its region's set). Larger fleets: several requests (e.g. one per OU).
MAX_SELECTED_TARGETS: Final = 10_000

TargetSpec = tuple[str, str, Mapping[str, Any]]  # account, region, params as merged


@dataclass(frozen=True, slots=True)
class Planned:
    """What a selection expands to: every target, in the order its parts carry them."""

    targets: tuple[TargetSpec, ...]
    selected: Selected

    def describe(self) -> str:
        """One line for the request's notes and the operator."""
        selected = self.selected
        parts = [f"{len(self.targets)} targets from {len(selected.accounts)} selected accounts"]
        if selected.excluded:
            parts.append(f"{len(selected.excluded)} excluded")
        if selected.inactive:
            shown = ", ".join(f"{a} ({s.lower()})" for a, s in selected.inactive.items())
            parts.append(f"not active, not targeted: {shown}")
        if selected.untagged:
            parts.append(f"{selected.untagged} without the tags asked for")
        return "; ".join(parts)


def plan_targets(envelope: Envelope, directory: Directory) -> Planned:
    """The targets of a selecting envelope (see :func:`plan_selection`)."""
    if envelope.selection is None:
        raise ValueError("not a selecting envelope")
    explicit = [(job.account, job.region, job.params) for job in envelope.jobs]
    return plan_selection(envelope.selection, directory, explicit=explicit)


def plan_selection(
    selection: Selection, directory: Directory, *, explicit: Sequence[TargetSpec] = ()
) -> Planned:
    """Explicit targets first, then each selected account in each region. Raises
    BadMessageError when the selection names nothing, or too much."""
    selected = select_accounts(selection, directory)
    seen: set[tuple[str, str]] = set()
    targets: list[TargetSpec] = []
    for account, region, params in explicit:
        seen.add((account, region))
        targets.append((account, region, params))
    # Account by account (its regions side by side, so one part holds them and one role session
    # serves them), the regions in the order given.
    for account in selected.accounts:
        for region in selection.regions:
            if (account, region) not in seen:
                seen.add((account, region))
                params = {**selection.shared_params, **selection.params_by_account.get(account, {})}
                targets.append((account, region, params))
    planned = Planned(tuple(targets), selected)
    if not targets:
        raise BadMessageError(f"body.select matched no target: {planned.describe()}")
    if len(targets) > MAX_SELECTED_TARGETS:
        raise BadMessageError(
            f"body.select matched {len(targets)} targets, more than {MAX_SELECTED_TARGETS}: "
            "split it into several requests (e.g. one per OU)"
        )
    return planned


class Expander:
    """Expands selecting messages once, stores the expansion, sends its parts."""

    def __init__(
        self,
        *,
        directory: Directory,
        authorizer: Authorizer,
        requests: RequestLedger,
        requeue: Requeue,
        default_region: str,
        targets_per_part: int = PUBLISH_TARGETS_PER_MESSAGE,
    ) -> None:
        self._directory = directory
        self._authorizer = authorizer
        self._requests = requests
        self._requeue = requeue
        self._region = default_region
        self._per_part = targets_per_part

    def expand(self, message: Message, envelope: Envelope) -> FanoutError | None:
        """Expand and enqueue. None: done (acknowledge the message). A PermanentError: the
        selection is bad (dead-letter the message with it). Anything else: it comes back."""
        if not self._requeue.queue_url:
            return TransientError("a selection needs WORK_QUEUE_URL to send its parts to")
        try:
            stored = self._requests.expansion(envelope.request_id)
            if stored is None:
                stored = self._store(message, envelope)
            self._send(message, envelope.request_id, stored)
        except ConfigurationError:
            raise  # not the message's fault: the whole batch comes back, the alarm fires
        except FanoutError as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - e.g. the ledger: the message comes back
            return TransientError(f"cannot expand the selection: {classify_aws_error(exc).reason}")
        return None

    def _store(self, message: Message, envelope: Envelope) -> StoredExpansion:
        try:
            planned = plan_targets(envelope, self._directory)
        except FanoutError:
            raise
        except Exception as exc:
            error = classify_aws_error(exc)
            reason = f"cannot read the organisation: {error.reason}"
            if isinstance(error, PermanentError):  # e.g. AccessDenied: no use retrying
                raise BadMessageError(reason) from exc
            raise TransientError(reason) from exc
        bodies = self._bodies(envelope, planned.targets, message)
        opening = self._opening(bodies, message)
        stored = self._requests.store_expansion(opening, bodies)
        self._requests.note_request(opening, "selection: " + planned.describe())
        logger.info(
            "selection expanded",
            extra={
                "request_id": envelope.request_id,
                "targets": len(planned.targets),
                "parts": len(stored.bodies),
                "detail": planned.describe(),
            },
        )
        return stored

    def _bodies(
        self, envelope: Envelope, targets: Sequence[TargetSpec], message: Message
    ) -> list[str]:
        """The parts' bodies: allowed targets in parts of ``targets_per_part``, each refused
        account's targets in a part of its own; each body parsed as the worker will."""
        allowed: list[TargetSpec] = []
        refused: dict[str, list[TargetSpec]] = {}
        for target in targets:
            try:
                self._authorizer.check(target[0], target[1])
            except AccountNotAllowedError:
                refused.setdefault(target[0], []).append(target)
            else:
                allowed.append(target)
        groups: list[list[TargetSpec]] = []
        shared = _shared_params(envelope)
        # Room under the budget for the head (task, request block, shared params, options).
        for chunk in split_bodies(
            {},
            [_target_json(t, shared) for t in allowed],
            max_targets=self._per_part,
            max_bytes=BODY_BUDGET_BYTES - len(json.dumps(shared)) - 2_000,
        ):
            groups.append(allowed[chunk.start : chunk.stop])
        groups.extend(refused[a] for a in sorted(refused))
        options = self._options(envelope, allowed or list(targets))
        head: dict[str, Any] = {"version": 1, "task": envelope.task}
        head["request_id"] = envelope.request_id
        if shared:
            head["params"] = shared
        bodies = []
        allowed_parts = len(groups) - len(refused)
        block: dict[str, Any] = {"targets": len(targets)}
        if envelope.options.region_order:
            # Every part says how many targets each region has, so any of them knows when a
            # region is done (``handler.rollout``).
            block["regions"] = dict(sorted(Counter(t[1] for t in targets).items()))
        for part, group in enumerate(groups, start=1):
            body = {
                **head,
                "request": {**block, "part": part, "parts": len(groups)},
                "targets": [_target_json(t, shared) for t in group],
                **({"options": options} if options else {}),
            }
            text = json.dumps(body, separators=(",", ":"))
            # As the worker will parse it; a refused account's parameters are never checked
            # (it ends refused, whatever they say).
            parse_message(
                text,
                message_id=message.message_id,
                default_region=self._region,
                check=part <= allowed_parts,
            )
            bodies.append(text)
        return bodies

    def _options(self, envelope: Envelope, targets: Sequence[TargetSpec]) -> dict[str, Any]:
        options = envelope.options.as_json()
        canary = envelope.options.canary
        if envelope.canary_first:
            account, region, _ = targets[0]
            options["canary"] = {"account": account, "region": region}
        elif canary is not None and not any(
            (a, r) == (canary.account, canary.region) for a, r, _ in targets
        ):
            raise BadMessageError(
                f"body.options.canary {canary.account}/{canary.region} is not among the "
                "selected targets"
            )
        return options

    def _opening(self, bodies: Sequence[str], message: Message) -> RequestOpen:
        """The request record as the parts describe it (the canary's job key included)."""
        parts = [
            parse_message(
                b, message_id=message.message_id, default_region=self._region, check=False
            )
            for b in bodies
        ]
        with_canary = next((p for p in parts if p.canary_key), parts[0])
        return RequestOpen.of(with_canary, message.sender)

    def _send(self, message: Message, request_id: str, stored: StoredExpansion) -> None:
        unsent = stored.unsent
        for start in range(0, len(unsent), 10):
            batch = unsent[start : start + 10]
            try:
                self._requeue.enqueue(
                    [stored.bodies[p - 1] for p in batch], source_message_id=message.message_id
                )
            except Exception as exc:
                raise TransientError(
                    f"cannot send parts of request {request_id}: {classify_aws_error(exc).reason}"
                ) from exc
            self._requests.mark_sent(request_id, batch)


def _shared_params(envelope: Envelope) -> dict[str, Any]:
    """The body's top-level params (what every selected target starts from)."""
    return dict(envelope.selection.shared_params) if envelope.selection else {}


def _target_json(target: TargetSpec, shared: Mapping[str, Any]) -> dict[str, Any]:
    account, region, params = target
    own = {k: v for k, v in params.items() if k not in shared or shared[k] != v}
    return {"account": account, "region": region, **({"params": own} if own else {})}
