"""Rollout control: how many targets of one request may be in flight at once, across every
instance, how a request ramps up to that, and the order its regions go in.

``options.max_concurrency`` (a count, or a percentage of the request's targets) caps the
request's targets in flight; ``options.ramp: exponential`` starts them in waves of 1, 2, 4, ...
up to the cap, each wave only once every target of the waves before it ended (and, with
``max_errors``, only while the request is within it: ``RequestView.held_back``), then runs at
the cap.

The invariants the guarantee rests on:

1. **A target starts only holding a lease** on a slot of its request: an entry in the request's
   rollout item (``sk = "#rollout"``), written by one conditional write that succeeds only while
   fewer than ``cap`` leases are held (``RequestLedger.acquire_slot``). DynamoDB evaluates the
   condition and the write atomically, so two instances never both take the last slot (the
   emulator serialises conditional writes as DynamoDB does: ``fanout.emulator.dynamodb``).
   A key's live lease belongs to its holder alone: a duplicate delivery of the same job (which
   the ledger will not let run twice) is refused the slot rather than overwriting the lease -
   else its release would free a slot whose call is still in flight.
2. **A lease ends with its call**: released after the call (success or not), and in any case it
   expires at the job's claim lock (``handler.ledger.lock_until``), after which a crashed holder's
   slot is taken back by the next acquirer. The claim lock outlives the invocation, so a lease
   never expires under a call still running.
3. **A wave's targets are recorded as started in the same write** that gives them their lease; a
   target may join the started set only while it holds fewer than the current wave allows, and
   the wave is decided from targets that *ended* (which only grows), so a stale read can only
   hold a target back, never let one through early.

4. **Region by region** (``options.region_order``): a target starts only once every target of
   the regions before its own *ended* - the request record keeps a set of ended keys per region
   (ADDed in the same write that counts each end, ``RequestLedger.count_ended``), and every
   part of the request states its targets per region (``request.regions``). Ended sets only
   grow, so a stale read can only hold a region back, never start it early; past
   ``max_errors`` the later regions' targets end "not run" (``RequestView.held_back``) instead
   of starting. The canary is exempt: it runs first, alone, whatever its region.

A target refused a slot waits (:class:`RolloutWaitError`): it uses no attempt, comes back after
about one call's duration, and its wait budget grows with the number of waves the request needs
- it waits only while other targets of its request run, which all end.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from handler.exceptions import RolloutWaitError
from handler.requests import RequestLedger, RequestView, short_key
from tasks.base import Job

__all__ = ["Lease", "RolloutGate", "ramp_allows", "ramp_wave", "waves_of"]

# After a refusal, a batch does not ask again for this long (bounds the failed writes).
REFUSAL_BACKOFF_S: Final = 1.0
_KNOWN_REFUSALS: Final = 1024  # requests whose refusal this process remembers (then pruned)
# A target waiting for the regions before its own comes back after 5-10 s (the wait is for
# others' progress, not a back-off): the next region starts within seconds of the last.
REGION_WAIT_S: Final = 10.0
# Without max_concurrency, a region's targets run as fast as the worker goes: a wave is this
# many targets for the wait budget (a message's worth, ``PUBLISH_TARGETS_PER_MESSAGE``).
UNCAPPED_WAVE: Final = 50


def ramp_allows(ended: int, cap: int) -> int | None:
    """How many targets may have started once ``ended`` of the started ones ended, ramping
    1, 2, 4, ... up to ``cap``; None once the ramp reached the cap (the cap alone applies)."""
    started_before = 0  # targets of the waves before this one
    wave = 1
    while wave < cap:
        if ended < started_before + wave:
            return started_before + wave
        started_before += wave
        wave *= 2
    return None


def ramp_wave(ended: int, cap: int) -> int | None:
    """The wave of the ramp open once ``ended`` of the started targets ended (1 first), or
    None once the ramp reached the cap (what ``fanout status`` shows)."""
    started_before, wave, number = 0, 1, 1
    while wave < cap:
        if ended < started_before + wave:
            return number
        started_before += wave
        wave *= 2
        number += 1
    return None


def waves_of(view: RequestView, cap: int | None) -> int:
    """How many waves the request's rollout needs - the deliveries a waiting target may use
    are ``MAX_WAITS`` per wave (``handler.lifecycle``): each stage (region of ``region_order``)
    in waves of ``cap`` targets (without a cap, one per ``UNCAPPED_WAVE`` targets), plus the
    ramp's."""
    per = cap or UNCAPPED_WAVE
    stages = sum(max(1, math.ceil(size / per)) for size in view.stage_sizes())
    ramp = math.ceil(math.log2(cap)) if cap and view.ramps else 0
    return max(1, stages + ramp)


@dataclass(frozen=True, slots=True)
class Lease:
    request_id: str
    job_key: str
    until: float


class RolloutGate:
    """Takes and gives back the slots of requests under rollout control (one per worker)."""

    def __init__(self, requests: RequestLedger, clock: Callable[[], float] = time.time) -> None:
        self._requests = requests
        self._clock = clock
        self._refused_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def admit(
        self, job: Job, view: RequestView, *, lease_until: float, expected_s: float
    ) -> Lease | RolloutWaitError | None:
        """A lease for ``job`` to start now, why it must wait, or None when its request has
        no rollout control (or needs no slot: a dry run, a request without a cap)."""
        cap = view.max_concurrency
        if job.dry_run or (cap is None and not view.region_order):
            return None
        waves = waves_of(view, cap)
        if view.region_order and not view.is_canary(job.key):  # the canary runs first, alone
            pending = view.region_pending(job.region)
            if pending is not None:
                region, ended, targets = pending
                return RolloutWaitError(
                    f"waiting for region {region} to end first (region_order): {ended} of "
                    f"its {targets} targets ended",
                    retry_after=REGION_WAIT_S,
                    waves=waves,
                )
        if cap is None:
            return None
        now = self._clock()
        wait = RolloutWaitError(
            f"waiting for a slot: at most {cap} targets of the request in flight"
            + (" (ramping up)" if view.ramps else ""),
            retry_after=max(2.0, expected_s),
            waves=waves,
        )
        with self._lock:
            if self._refused_until.get(job.request_id, 0.0) > now:
                return wait
        started_limit = ramp_allows(view.started_ended, cap) if view.ramps else None
        granted = self._requests.acquire_slot(
            job.request_id,
            short_key(job.key),
            cap=cap,
            started_limit=started_limit,
            until=lease_until,
            now=now,
        )
        if not granted:
            with self._lock:
                if len(self._refused_until) >= _KNOWN_REFUSALS:
                    self._refused_until = {
                        r: until for r, until in self._refused_until.items() if until > now
                    }
                self._refused_until[job.request_id] = now + REFUSAL_BACKOFF_S
            return wait
        return Lease(job.request_id, short_key(job.key), lease_until)

    def release(self, leases: Iterable[Lease]) -> None:
        for lease in leases:
            self._requests.release_slot(lease.request_id, lease.job_key, until=lease.until)
            with self._lock:
                self._refused_until.pop(lease.request_id, None)  # a slot is free now
