"""Requests as first-class records: expected targets, counts by state, request-wide controls.

A request record lives beside its jobs in the ledger (``sk = "#request"``). It is opened by the
first worker that sees any part of the request (each part states the whole request's target
count), counts every job's final state *idempotently* - a set of job keys per final state,
updated with ADD/DELETE, so a duplicate delivery or a replay never counts twice and a redriven
job moves from "failed" to "succeeded" - and is finished exactly once, by the conditional write
that finds it complete (``Ledger.finish_request``).

Request-wide controls are decided here, from the record as read at the start of a batch plus
what this batch ended since (:class:`RequestView`): a cancelled request runs nothing more; once
more targets failed than ``max_errors`` (a count, or a percentage of the *whole* request's
targets) the rest end "not run"; with a canary, the others wait until it succeeded.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Protocol

from handler.envelope import Envelope, Options, Target
from handler.exceptions import CanaryPendingError, FanoutError, NotRunError
from handler.ledger import JobState

__all__ = [
    "COUNTED_STATES",
    "RequestLedger",
    "RequestOpen",
    "RequestRecord",
    "RequestState",
    "RequestView",
    "StoredExpansion",
    "short_key",
]

# The final states a request counts (a letter pending is not an end yet).
COUNTED_STATES: Final = (
    JobState.SUCCEEDED,
    JobState.FAILED,
    JobState.NOT_RUN,
    JobState.CANCELLED,
    JobState.DRY_RUN,
)
MAX_NOTES: Final = 20


def short_key(job_key: str) -> str:
    """A job's key as request records store it (64 bits: unique within a request)."""
    return job_key[:16]


class RequestState(StrEnum):
    RUNNING = "running"
    CANCELLING = "cancelling"  # `fanout cancel`: nothing more starts; it finishes as cancelled
    STOPPING = "stopping"  # a stop condition fired: nothing more starts
    FINISHED = "finished"


@dataclass(frozen=True, slots=True)
class RequestOpen:
    """What the first message seen says about its request (written if the record is new)."""

    request_id: str
    task: str
    expected: int
    options: Mapping[str, Any]
    publisher: str
    canary_key: str | None = None
    region_targets: Mapping[str, int] | None = None  # with options.region_order

    @classmethod
    def of(cls, envelope: Envelope, publisher: str) -> RequestOpen:
        return cls(
            request_id=envelope.request_id,
            task=envelope.task,
            expected=envelope.request.expected_targets,
            options=envelope.options.as_json(),
            publisher=publisher,
            canary_key=short_key(envelope.canary_key) if envelope.canary_key else None,
            region_targets=envelope.request.region_targets,
        )


@dataclass(frozen=True, slots=True)
class RequestRecord:
    request_id: str
    task: str = ""
    expected: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)
    publisher: str = ""
    state: RequestState = RequestState.RUNNING
    created_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None
    ended: Mapping[JobState, frozenset[str]] = field(default_factory=dict)
    canary_key: str | None = None
    cancelled: bool = False
    stop_reason: str | None = None
    notes: tuple[str, ...] = ()
    announced_at: float | None = None  # its completion event (and export) went out
    results_uri: str | None = None  # where its per-target results were exported
    # Rollout control (``handler.rollout``): leases held (short key -> until), targets started.
    leases: Mapping[str, float] = field(default_factory=dict)
    started: frozenset[str] = frozenset()
    # Rolled region by region: targets per region, and the keys that ended in each.
    region_targets: Mapping[str, int] = field(default_factory=dict)
    region_ended: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def count(self, state: JobState) -> int:
        return len(self.ended.get(state, frozenset()))

    @property
    def ended_total(self) -> int:
        # The union: a key may sit in two sets for a moment while it moves (a redrive).
        return len(frozenset[str]().union(*self.ended.values()))

    @property
    def pending(self) -> int:
        return max(0, self.expected - self.ended_total)

    @property
    def complete(self) -> bool:
        return self.expected > 0 and self.ended_total >= self.expected

    def state_of(self, job_key: str) -> JobState | None:
        key = short_key(job_key)
        return next((s for s, keys in self.ended.items() if key in keys), None)

    @property
    def outcome(self) -> str:
        """The request's state as reported: pending, running, succeeded, failed, cancelled,
        stopped (DescribeMapRun's vocabulary, plus "pending": seen, nothing ended yet)."""
        if self.state is RequestState.FINISHED:
            if self.cancelled:
                return "cancelled"
            if self.stop_reason:
                return "stopped"
            good = self.count(JobState.SUCCEEDED) + self.count(JobState.DRY_RUN)
            return "succeeded" if good == self.ended_total else "failed"
        if self.state is RequestState.CANCELLING:
            return "cancelling"
        if self.state is RequestState.STOPPING:
            return "stopping"
        return "running" if self.ended_total else "pending"

    def counts(self) -> dict[str, int]:
        """DescribeMapRun-like counts: by final state, plus pending and total."""
        counts = {state.value: self.count(state) for state in COUNTED_STATES}
        return {**counts, "pending": self.pending, "total": self.expected}


@dataclass(frozen=True, slots=True)
class StoredExpansion:
    """A selection's expansion as stored beside its request record: the chunk bodies (part
    ``i`` is ``bodies[i - 1]``), written once, and the parts already sent to the work queue."""

    bodies: tuple[str, ...]
    sent: frozenset[int] = frozenset()

    @property
    def unsent(self) -> list[int]:
        return [part for part in range(1, len(self.bodies) + 1) if part not in self.sent]


class RequestView:
    """A request as this batch sees it: the record read at its start, plus what it ended since.

    Thread-safe: lanes update it as their jobs end, so a canary's success releases the others
    within the batch and ``max_errors`` counts failures as they happen.
    """

    def __init__(self, record: RequestRecord | None, envelope: Envelope) -> None:
        self._record = record
        self._options: Options = envelope.options
        self._expected = max(envelope.request.expected_targets, record.expected if record else 0)
        self._canary_key = (short_key(envelope.canary_key) if envelope.canary_key else None) or (
            record.canary_key if record else None
        )
        self._canary: Target | None = envelope.options.canary
        self._failed = record.count(JobState.FAILED) if record else 0
        self._canary_state = (
            record.state_of(self._canary_key) if record and self._canary_key else None
        )
        self._started_ended = (
            len(record.started & frozenset[str]().union(*record.ended.values())) if record else 0
        )
        # Rolled region by region: targets per region, and the keys ended in each so far.
        self._region_targets: Mapping[str, int] = (
            envelope.request.region_targets or (record.region_targets if record else {}) or {}
        )
        self._region_ended: dict[str, set[str]] = {
            region: set(keys) for region, keys in (record.region_ended if record else {}).items()
        }
        self._lock = threading.Lock()

    @property
    def expected(self) -> int:
        return self._expected

    @property
    def max_concurrency(self) -> int | None:
        """The request's cap on targets in flight (``handler.rollout``), or None."""
        # `fanout update --max-concurrency` rewrites the record's options: they win.
        raw = self._record.options.get("max_concurrency") if self._record else None
        options = self._options if raw is None else Options(max_concurrency=raw)
        return options.max_concurrency_for(self._expected)

    @property
    def ramps(self) -> bool:
        return self._options.ramp == "exponential"

    @property
    def started_ended(self) -> int:
        """Targets that started under rollout control and ended (as the record was read)."""
        return self._started_ended

    @property
    def region_order(self) -> tuple[str, ...]:
        return self._options.region_order

    def stage_sizes(self) -> list[int]:
        """Targets per stage of a request rolled region by region (regions in order, then the
        rest together); one stage of every target otherwise."""
        if not self.region_order:
            return [self._expected]
        sizes = [0] * (len(self.region_order) + 1)
        for region, count in self._region_targets.items():
            sizes[self._options.stage_of(region)] += count
        return [size for size in sizes if size]

    def region_pending(self, region: str) -> tuple[str, int, int] | None:
        """The first region before ``region`` in ``region_order`` whose targets have not all
        ended - (region, ended, targets) - or None when the job's region may start."""
        stage = self._options.stage_of(region)
        with self._lock:
            for before in self.region_order[:stage]:
                targets = self._region_targets.get(before, 0)
                ended = len(self._region_ended.get(before, ()))
                if ended < targets:
                    return before, ended, targets
        return None

    @property
    def reacts_to_ends(self) -> bool:
        """True when a job's end changes what this batch may start for the request (max_errors,
        a canary, a rollout cap or ramp, region order): its end is written, and seen, at once."""
        return (
            self._max_errors() is not None
            or self._canary_key is not None
            or self._canary is not None
            or bool(self.region_order)
            or self.max_concurrency is not None
            or self.ramps
        )

    @property
    def cancelled(self) -> bool:
        return self._record is not None and self._record.cancelled

    @property
    def stop_reason(self) -> str | None:
        record = self._record
        if record is not None and record.state is RequestState.STOPPING:
            return record.stop_reason or "stopped"
        return None

    def is_canary(self, job_key: str) -> bool:
        return self._canary_key is not None and short_key(job_key) == self._canary_key

    def held_back(self, job_key: str) -> FanoutError | None:
        """Why a job must not start now (None: it may). NotRunError ends it; a
        CanaryPendingError makes it wait."""
        with self._lock:
            stop = self.stop_reason
            if stop:
                return NotRunError(f"not run: request stopped: {stop}")
            limit = self._max_errors()
            if limit is not None and self._failed > limit:
                return NotRunError(
                    f"not run: {self._failed} targets of the request failed, more than "
                    f"max_errors={self._options.max_errors}"
                )
            if self._canary is None or self.is_canary(job_key):
                return None
            if self._canary_state is JobState.SUCCEEDED:
                return None
            if self._canary_state in (JobState.FAILED, JobState.NOT_RUN):
                return NotRunError(
                    f"not run: canary target {self._canary.account}/{self._canary.region} failed"
                )
            return CanaryPendingError(
                f"waiting for canary target {self._canary.account}/{self._canary.region} to succeed"
            )

    def ended(self, job_key: str, state: JobState, region: str | None = None) -> None:
        """A job of this request ended in this batch (or its letter is being written)."""
        with self._lock:
            if region is not None:
                self._region_ended.setdefault(region, set()).add(short_key(job_key))
            if state is JobState.FAILED:
                self._failed += 1
            if self.is_canary(job_key):
                self._canary_state = state

    def _max_errors(self) -> int | None:
        # `fanout update --max-errors` rewrites the record's options: they win.
        raw = self._record.options.get("max_errors") if self._record else None
        options = self._options if raw is None else Options(max_errors=raw)
        return options.max_errors_for(self._expected)


class RequestLedger(Protocol):
    """Where request records live (the ledger table, or memory)."""

    def requests(self, request_ids: Sequence[str]) -> dict[str, RequestRecord]:
        """The records of those requests that have one (consistent reads)."""
        ...

    def count_ended(
        self,
        opening: RequestOpen,
        endings: Mapping[str, JobState],
        regions: Mapping[str, str] | None = None,
    ) -> RequestRecord:
        """Open the record if it is new, and count each job key's final state (idempotent: a
        key is in exactly one state's set) - and, for a request rolled region by region, add
        each key to its region's ended set (``regions``: job key -> region). Returns the
        record as written."""
        ...

    def count_and_finish(
        self,
        opening: RequestOpen,
        endings: Mapping[str, JobState],
        regions: Mapping[str, str] | None = None,
        *,
        announce_until: float | None = None,
    ) -> RequestRecord | None:
        """``count_ended`` and ``finish_request`` in one write, for endings that complete the
        request for certain: the record (if any) expects no more targets than these keys and
        is not finished. The record if this call counted and finished it; None, having written
        nothing, when the record says otherwise or the endings are of several states (their
        counting takes more than one write): count them with ``count_ended`` then."""
        ...

    def finish_request(
        self, request_id: str, *, announce_until: float | None = None
    ) -> RequestRecord | None:
        """Mark a complete request finished; the record if *this* call finished it, else None
        (exactly one caller ever gets it). With ``announce_until``, the same write gives the
        finisher the announcement's lease (what ``claim_announcement`` would: no one else can
        hold it before the request is finished)."""
        ...

    def claim_announcement(self, request_id: str, *, lease_until: float) -> RequestRecord | None:
        """The finished record if this caller may announce it now: not announced yet, and no
        other announcer's lease alive (its announcer died, or never started). None otherwise."""
        ...

    def announced(self, request_id: str, *, results_uri: str | None) -> None:
        """Its completion event (and export) went out."""
        ...

    def cancel_request(self, request_id: str) -> RequestRecord:
        """Nothing more of the request starts; it finishes as cancelled."""
        ...

    def stop_request(self, opening: RequestOpen, reason: str) -> RequestRecord:
        """A stop condition fired (e.g. an alarm): nothing more of a running request starts;
        it finishes as stopped, with ``reason``. The record as written (or as found, when the
        request was no longer running)."""
        ...

    def update_request(self, request_id: str, options: Mapping[str, Any]) -> RequestRecord:
        """Replace request-wide options (e.g. max_errors) while it runs."""
        ...

    def note_request(self, opening: RequestOpen, note: str) -> None:
        """Keep a line for the operator (e.g. "re-published after it ended: nothing ran")."""
        ...

    def expansion(self, request_id: str) -> StoredExpansion | None:
        """The request's stored expansion, if a selection was expanded for it."""
        ...

    def store_expansion(self, opening: RequestOpen, bodies: Sequence[str]) -> StoredExpansion:
        """Open the record and store the expansion, unless one is stored already: the first
        writer's wins, and is returned (so every caller sends the same parts)."""
        ...

    def mark_sent(self, request_id: str, parts: Sequence[int]) -> None:
        """These parts are on the work queue."""
        ...

    def acquire_slot(
        self,
        request_id: str,
        job_key: str,
        *,
        cap: int,
        started_limit: int | None,
        until: float,
        now: float,
    ) -> bool:
        """Take a lease on one of the request's ``cap`` slots for ``job_key`` until ``until``,
        atomically: granted only while fewer than ``cap`` live leases are held and this key
        holds none (or holds this very one: same ``until``), and - with ``started_limit`` -
        while fewer targets started than it allows (or this one did). Leases expired before
        ``now`` are taken back first."""
        ...

    def release_slot(self, request_id: str, job_key: str, *, until: float) -> None:
        """Give the lease back (only the one taken until ``until``: a later holder's stays)."""
        ...
