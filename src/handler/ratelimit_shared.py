"""One quota shared by every instance: call start times leased from the ledger table (GCRA).

Each Lambda execution environment has its own token buckets (``handler.ratelimit``). Several
instances draining one backlog would each take the whole quota (throttled), or a static share of
it (idle whenever an instance has no work for that account). With a ledger table, an instance
also takes each call's start time from one item per rate key, ``rate#<account>#<region>#<api>``,
by the generic cell rate algorithm: the item holds the theoretical arrival time ``tat``; a call
may start at ``t`` when ``t >= tat - tau`` (``tau`` = the burst's tolerance), after which
``tat = max(tat, t) + 1/rate``. One conditional write leases up to ``k`` start times ("slots")
at once: ``k`` = the calls this instance's lanes still have for the key, at most
``LEASE_SECONDS`` of the rate, so a lease is rarely left unused and a call costs a fraction of a
write.

Invariants the argument rests on:

1. A lease is written only on the condition that ``tat`` is what it was computed from (or that
   the item does not exist): DynamoDB evaluates the condition and the write atomically, so two
   leases never share a slot, and all slots of all instances form one GCRA sequence.
2. Every instance reads one clock: epoch time, NTP-synchronised on Lambda. A skew of ``e``
   seconds between two instances lets at most ``rate * e`` calls through early.
3. A slot is used once, not before its time, and not after ``STALE_SECONDS``: an instance cannot
   save slots up and spend them in a burst. A dropped slot is quota left unused, never exceeded.
4. A tat more than ``SKEWED_AHEAD_SECONDS`` ahead of this instance's clock cannot come from
   leases (each covers at most ``LEASE_SECONDS`` of the rate, and instances are few): it was
   written by a clock that is wrong, and is replaced by a lease from now (still conditional on
   the tat seen), rather than stopping every instance until that clock's time comes.
5. Leases use the burst's tolerance less ``STALE_SECONDS`` and ``JITTER_SLACK_SECONDS``
   (``lease_tolerance``, at least 0). A slot is used up to ``STALE_SECONDS`` late (3), which
   can bring two starts that much closer together than their slots; so the starts of every
   instance conform to the declared burst's tolerance less ``JITTER_SLACK_SECONDS``, and calls
   may reach the service up to 50 ms closer together than they started and still be within
   it. Where the declared burst is too small to spare that (burst 1: no tolerance at all),
   jitter or a late slot can cost a rare throttle, which the lane's backoff absorbs.

The item expires (TTL) a day after its last lease; a missing item is an unused quota.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final

from handler.dynamo import Table, n, read_n, s
from handler.exceptions import DeadlineExceededError, ThrottledError

__all__ = [
    "JITTER_SLACK_SECONDS",
    "LEASE_SECONDS",
    "SKEWED_AHEAD_SECONDS",
    "STALE_SECONDS",
    "SharedRates",
    "gcra_slots",
    "lease_tolerance",
]

RateKey = tuple[str, str, str]  # account, region (or "global"), api

LEASE_SECONDS: Final = 2.0
STALE_SECONDS: Final = 0.25
SKEWED_AHEAD_SECONDS: Final = 120.0
JITTER_SLACK_SECONDS: Final = 0.05  # the spread of in-region round trips a lease allows for
ITEM_TTL_SECONDS: Final = 86_400
# Compare-and-set attempts of one lease before the call is treated as throttled: each failed
# attempt means another instance leased in between, and returns the tat it wrote.
_ATTEMPTS: Final = 16
_PK: Final = "rate#"


def lease_tolerance(per_second: float, burst: int) -> float:
    """The burst tolerance leases are computed with (invariant 5), in seconds."""
    return max(0.0, (burst - 1) / per_second - STALE_SECONDS - JITTER_SLACK_SECONDS)


def gcra_slots(
    tat: float | None,
    now: float,
    count: int,
    *,
    per_second: float,
    burst: int,
    tolerance: float | None = None,
) -> tuple[list[float], float]:
    """The earliest ``count`` start times from ``now`` that conform to the rate with a burst
    tolerance of ``tolerance`` seconds (default: ``burst``'s own), and the tat after them."""
    interval = 1.0 / per_second
    if tolerance is None:
        tolerance = (burst - 1) * interval
    current = now if tat is None else tat
    slots: list[float] = []
    start = now
    for _ in range(count):
        start = max(start, current - tolerance)
        slots.append(start)
        current = max(current, start) + interval
    return slots, current


@dataclass
class _Key:
    """This instance's view of one rate key: the slots it holds and the tat it last saw."""

    slots: deque[float] = field(default_factory=deque)
    tat: float | None = None
    known: bool = False  # whether ``tat`` was read or written (else the item may not exist)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class SharedRates:
    """Slots leased from the table, per rate key; ``slot()`` says how long to wait for one."""

    def __init__(self, table: Table, clock: Callable[[], float] = time.time) -> None:
        self._table = table
        self._clock = clock
        self._keys: dict[RateKey, _Key] = {}
        self._demand: Counter[RateKey] = Counter()
        self._lock = threading.Lock()

    @contextmanager
    def expect(self, key: RateKey, calls: int) -> Iterator[None]:
        """While the block runs, this instance has ``calls`` more calls to make for ``key``
        (its lane): leases are sized by the demand still expected."""
        with self._lock:
            self._demand[key] += calls
        try:
            yield
        finally:
            with self._lock:
                self._demand[key] = max(0, self._demand[key] - calls)

    def slot(self, key: RateKey, *, per_second: float, burst: int, max_wait: float) -> float:
        """Take one slot for a call of ``key``; the seconds until it starts. Refuses (deadline)
        rather than hold a slot it cannot wait for."""
        state = self._state(key)
        with state.lock:
            now = self._clock()
            while state.slots and state.slots[0] < now - STALE_SECONDS:
                state.slots.popleft()  # invariant 3: never spent late, as a burst
            if not state.slots:
                first = self._lease(
                    key, state, per_second=per_second, burst=burst, max_wait=max_wait
                )
                now = self._clock()
            else:
                first = state.slots[0]
            wait = max(0.0, first - now)
            if wait > max_wait or not state.slots:
                raise DeadlineExceededError(
                    f"shared rate limit {key[2]} for {key[0]}: next slot in {wait:.1f}s, only "
                    f"{max_wait:.1f}s left"
                )
            state.slots.popleft()
            with self._lock:
                if self._demand[key] > 0:
                    self._demand[key] -= 1
            return wait

    def _state(self, key: RateKey) -> _Key:
        with self._lock:
            return self._keys.setdefault(key, _Key())

    def _lease(
        self, key: RateKey, state: _Key, *, per_second: float, burst: int, max_wait: float
    ) -> float:
        """Lease slots into ``state``; the first slot's time (not leased when it is further off
        than ``max_wait``)."""
        with self._lock:
            wanted = max(1, self._demand[key])
        count = max(1, min(wanted, int(per_second * LEASE_SECONDS)))
        tolerance = lease_tolerance(per_second, burst)  # invariant 5
        item_key = {"pk": s(_PK + "#".join(key)), "sk": s("rate")}
        for _ in range(_ATTEMPTS):
            now = self._clock()
            seen = state.tat
            skewed = seen is not None and seen - now > SKEWED_AHEAD_SECONDS  # invariant 4
            base = None if skewed else seen
            slots, tat = gcra_slots(
                base, now, count, per_second=per_second, burst=burst, tolerance=tolerance
            )
            tat = round(tat, 3)  # stored as n() writes it: the next condition compares equal
            if slots[0] - now > max_wait:
                return slots[0]  # not leased: slot() refuses with the wait it would have
            values = {":tat": n(tat), ":ttl": {"N": str(int(now) + ITEM_TTL_SECONDS)}}
            if state.known and state.tat is not None:
                condition = "tat = :seen"
                values[":seen"] = n(state.tat)
            else:
                condition = "attribute_not_exists(pk)"
            written, found = self._table.update_or_found(
                item_key, "SET tat = :tat, expires_at = :ttl", values, condition=condition
            )
            if written:
                state.tat, state.known = tat, True
                state.slots.extend(slots)
                return slots[0]
            state.tat, state.known = read_n(found, "tat"), True  # invariant 1: lease again
        raise ThrottledError(
            f"shared rate limit {key[2]} for {key[0]}: {_ATTEMPTS} leases in a row lost to "
            "other instances"
        )
