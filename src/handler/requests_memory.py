"""Request records of one execution environment (LEDGER_TABLE unset, and tests)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from handler.ledger import JobState
from handler.requests import (
    COUNTED_STATES,
    MAX_NOTES,
    RequestOpen,
    RequestRecord,
    RequestState,
    StoredExpansion,
    short_key,
)

__all__ = ["InMemoryRequests"]


class InMemoryRequests:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._records: dict[str, RequestRecord] = {}
        self._leases: dict[str, float] = {}  # announcement leases
        self._expansions: dict[str, StoredExpansion] = {}
        self._slots: dict[str, dict[str, float]] = {}  # rollout leases: key -> until
        self._started: dict[str, set[str]] = {}
        self._lock = threading.RLock()  # count_and_finish counts and finishes under it

    def requests(self, request_ids: Sequence[str]) -> dict[str, RequestRecord]:
        with self._lock:
            return {
                rid: replace(
                    self._records[rid],
                    leases=dict(self._slots.get(rid, {})),
                    started=frozenset(self._started.get(rid, ())),
                )
                for rid in request_ids
                if rid in self._records
            }

    def _opened(self, opening: RequestOpen, now: float) -> RequestRecord:
        record = self._records.get(opening.request_id) or RequestRecord(opening.request_id)
        return replace(
            record,
            task=record.task or opening.task,
            expected=record.expected or opening.expected,
            options=record.options or dict(opening.options),
            publisher=record.publisher or opening.publisher,
            created_at=record.created_at or now,
            canary_key=record.canary_key or opening.canary_key,
            region_targets=record.region_targets or dict(opening.region_targets or {}),
            updated_at=now,
        )

    def count_ended(
        self,
        opening: RequestOpen,
        endings: Mapping[str, JobState],
        regions: Mapping[str, str] | None = None,
    ) -> RequestRecord:
        now = self._clock()
        with self._lock:
            record = self._opened(opening, now)
            sets = {state: set(record.ended.get(state, frozenset())) for state in COUNTED_STATES}
            in_region = {r: set(keys) for r, keys in record.region_ended.items()}
            for key, state in endings.items():
                for keys in sets.values():
                    keys.discard(short_key(key))
                sets[state].add(short_key(key))
                if regions and key in regions:
                    in_region.setdefault(regions[key], set()).add(short_key(key))
            record = replace(
                record,
                ended={state: frozenset(keys) for state, keys in sets.items() if keys},
                region_ended={r: frozenset(keys) for r, keys in in_region.items()},
            )
            self._records[opening.request_id] = record
            return record

    def count_and_finish(
        self,
        opening: RequestOpen,
        endings: Mapping[str, JobState],
        regions: Mapping[str, str] | None = None,
        *,
        announce_until: float | None = None,
    ) -> RequestRecord | None:
        with self._lock:
            found = self._records.get(opening.request_id)
            if (
                len(set(endings.values())) > 1
                or opening.expected > len(endings)
                or (
                    found is not None
                    and (found.state is RequestState.FINISHED or found.expected > len(endings))
                )
            ):
                return None
            self.count_ended(opening, endings, regions)
            return self.finish_request(opening.request_id, announce_until=announce_until)

    def finish_request(
        self, request_id: str, *, announce_until: float | None = None
    ) -> RequestRecord | None:
        with self._lock:
            record = self._records.get(request_id)
            if record is None or record.state is RequestState.FINISHED or not record.complete:
                return None
            record = replace(record, state=RequestState.FINISHED, finished_at=self._clock())
            self._records[request_id] = record
            if announce_until is not None:
                self._leases[request_id] = announce_until
            return record

    def claim_announcement(self, request_id: str, *, lease_until: float) -> RequestRecord | None:
        now = self._clock()
        with self._lock:
            record = self._records.get(request_id)
            if record is None or record.state is not RequestState.FINISHED:
                return None
            if record.announced_at is not None or self._leases.get(request_id, 0.0) >= now:
                return None
            self._leases[request_id] = lease_until
            return record

    def announced(self, request_id: str, *, results_uri: str | None) -> None:
        with self._lock:
            record = self._records[request_id]
            self._records[request_id] = replace(
                record, announced_at=self._clock(), results_uri=results_uri
            )

    def cancel_request(self, request_id: str) -> RequestRecord:
        with self._lock:
            record = self._records.get(request_id) or RequestRecord(request_id)
            if record.state is not RequestState.FINISHED:
                record = replace(
                    record, state=RequestState.CANCELLING, cancelled=True, updated_at=self._clock()
                )
            self._records[request_id] = record
            return record

    def stop_request(self, opening: RequestOpen, reason: str) -> RequestRecord:
        with self._lock:
            record = self._opened(opening, self._clock())
            if record.state is RequestState.RUNNING:
                record = replace(record, state=RequestState.STOPPING, stop_reason=reason)
            self._records[opening.request_id] = record
            return record

    def update_request(self, request_id: str, options: Mapping[str, Any]) -> RequestRecord:
        with self._lock:
            record = self._records.get(request_id) or RequestRecord(request_id)
            record = replace(record, options={**record.options, **options})
            self._records[request_id] = record
            return record

    def note_request(self, opening: RequestOpen, note: str) -> None:
        with self._lock:
            record = self._opened(opening, self._clock())
            notes = (*record.notes, note)[-MAX_NOTES:]
            self._records[opening.request_id] = replace(record, notes=notes)

    def expansion(self, request_id: str) -> StoredExpansion | None:
        with self._lock:
            return self._expansions.get(request_id)

    def store_expansion(self, opening: RequestOpen, bodies: Sequence[str]) -> StoredExpansion:
        with self._lock:
            self._records[opening.request_id] = self._opened(opening, self._clock())
            return self._expansions.setdefault(opening.request_id, StoredExpansion(tuple(bodies)))

    def mark_sent(self, request_id: str, parts: Sequence[int]) -> None:
        with self._lock:
            stored = self._expansions[request_id]
            self._expansions[request_id] = replace(stored, sent=stored.sent | set(parts))

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
        with self._lock:
            leases = self._slots.setdefault(request_id, {})
            for key in [k for k, expiry in leases.items() if expiry < now]:
                del leases[key]
            started = self._started.setdefault(request_id, set())
            if job_key in leases and leases[job_key] != until:
                return False  # another holder's live lease (a duplicate delivery)
            if job_key not in leases and len(leases) >= cap:
                return False
            if (
                started_limit is not None
                and job_key not in started
                and len(started) >= started_limit
            ):
                return False
            leases[job_key] = until
            started.add(job_key)
            return True

    def release_slot(self, request_id: str, job_key: str, *, until: float) -> None:
        with self._lock:
            leases = self._slots.get(request_id, {})
            if leases.get(job_key) == until:
                del leases[job_key]
