"""Request records in the ledger table: ``pk`` = request id, ``sk`` = ``#request``; an expanded
selection's chunk bodies beside it (``sk`` = ``#part#00001``, ...), written once.

Final states are counted as string sets of (short) job keys - ``ended_<state>`` - updated with
ADD and DELETE, which are idempotent: counting a replayed ending again changes nothing, and a
redriven job's key moves from one set to another. A request's end total is the size of the
union of its sets, so a key seen in two sets for a moment (ADD happens before DELETE when both
touch one set) is never counted twice. Finishing is a conditional write: exactly one caller
finishes a request.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from handler.dynamo import Item, Table, expires, n, read_bool, read_n, read_s, s
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

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = ["REQUEST_SK", "DynamoDBRequests", "request_from_item", "request_key"]

REQUEST_SK: Final = "#request"
PART_SK: Final = "#part#"
# Rollout control's item (``handler.rollout``): ``lease`` (a map: "k" + short job key -> lease
# end) and ``started`` (a string set of short job keys). Apart from the request record, so the
# record's size does not grow with leases and a lease write does not contend with counting.
ROLLOUT_SK: Final = "#rollout"
# Rolled region by region (``options.region_order``): the keys that ended in each region.
REGION_ENDED: Final = "ended_in_"
_KNOWN_ROLLOUTS: Final = 1024  # rollout items this process knows exist (then forgotten)
_OVERRIDE: Final = "override_"


class DynamoDBRequests:
    def __init__(
        self,
        table: str,
        client: Callable[[], DynamoDBClient],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._table = Table(table, client)
        self._clock = clock
        self._rollouts: set[str] = set()

    def requests(self, request_ids: Sequence[str]) -> dict[str, RequestRecord]:
        ids = list(dict.fromkeys(request_ids))
        keys = [request_key(r) for r in ids] + [rollout_key(r) for r in ids]
        items = self._table.batch_get(keys)
        rollouts = {read_s(i, "pk"): i for i in items if read_s(i, "sk") == ROLLOUT_SK}
        records = (
            request_from_item(item, rollouts.get(read_s(item, "pk")))
            for item in items
            if read_s(item, "sk") == REQUEST_SK
        )
        return {record.request_id: record for record in records}

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
        self._open_rollout(request_id, now)
        slot = f"lease.k{job_key}"  # short keys are hex: a valid name after the "k"
        # A key's live lease is its holder's alone: a duplicate delivery of the same job (its
        # own lease end) must not overwrite it, or its release would free a slot still in use.
        condition = f"((size(lease) < :cap AND attribute_not_exists({slot})) OR {slot} = :until)"
        values: dict[str, Any] = {
            ":until": n(until),
            ":me": {"SS": [job_key]},
            ":cap": n(cap),
        }
        if started_limit is not None:
            condition += (
                " AND (attribute_not_exists(started) OR size(started) < :limit"
                " OR contains(started, :key))"
            )
            values.update({":limit": n(started_limit), ":key": s(job_key)})
        for _ in range(2):  # once more after taking expired leases back
            written, found = self._table.update_or_found(
                rollout_key(request_id),
                f"SET {slot} = :until ADD started :me",
                values,
                condition=condition,
            )
            if written:
                return True
            if not self._expire_leases(request_id, found, now):
                return False
        return False

    def release_slot(self, request_id: str, job_key: str, *, until: float) -> None:
        slot = f"lease.k{job_key}"
        self._table.update(
            rollout_key(request_id),
            f"REMOVE {slot}",
            {":until": n(until)},
            condition=f"{slot} = :until",
        )

    def _open_rollout(self, request_id: str, now: float) -> None:
        """The rollout item exists (an update cannot set a map entry of a missing map)."""
        if request_id in self._rollouts:
            return
        self._table.put_new(
            {
                "pk": s(request_id),
                "sk": s(ROLLOUT_SK),
                "lease": {"M": {}},
                "expires_at": expires(now),
            }
        )
        if len(self._rollouts) >= _KNOWN_ROLLOUTS:
            self._rollouts.clear()
        self._rollouts.add(request_id)

    def _expire_leases(self, request_id: str, found: Item, now: float) -> bool:
        """Take back the leases in ``found`` that ended before ``now`` (their holders died);
        whether any was."""
        leases = found.get("lease", {}).get("M", {})
        expired = {name: value for name, value in leases.items() if float(value["N"]) < now}
        if not expired:
            return False
        names = sorted(expired)[:50]
        values = {f":v{i}": expired[name] for i, name in enumerate(names)}
        self._table.update(
            rollout_key(request_id),
            "REMOVE " + ", ".join(f"lease.{name}" for name in names),
            values,
            condition=" AND ".join(f"lease.{name} = :v{i}" for i, name in enumerate(names)),
        )
        return True

    def count_ended(
        self,
        opening: RequestOpen,
        endings: Mapping[str, JobState],
        regions: Mapping[str, str] | None = None,
    ) -> RequestRecord:
        now = self._clock()
        first, later = counting_updates(opening, endings, now, regions or {})
        item = self._update(opening.request_id, *first)
        for expression, values in later:
            item = self._update(opening.request_id, expression, values)
        return request_from_item(item)

    def count_and_finish(
        self,
        opening: RequestOpen,
        endings: Mapping[str, JobState],
        regions: Mapping[str, str] | None = None,
        *,
        announce_until: float | None = None,
    ) -> RequestRecord | None:
        now = self._clock()
        (expression, values), later = counting_updates(
            opening, endings, now, regions or {}, finish=True, announce_until=announce_until
        )
        if later or not 0 < opening.expected <= len(endings):
            return None
        # The condition is finish_request's, plus "no more targets expected than these keys".
        values[":these"] = n(len(endings))
        item = self._table.update(
            request_key(opening.request_id),
            expression,
            values,
            condition="(attribute_not_exists(#state) OR #state <> :finished) AND "
            "(attribute_not_exists(expected) OR expected <= :these)",
        )
        return request_from_item(item) if item is not None else None

    def finish_request(
        self, request_id: str, *, announce_until: float | None = None
    ) -> RequestRecord | None:
        sets = "SET #state = :finished, finished_at = :now, updated_at = :now"
        values = {":finished": s(RequestState.FINISHED), ":now": n(self._clock())}
        if announce_until is not None:
            sets += ", announcing_until = :until"
            values[":until"] = n(announce_until)
        item = self._table.update(
            request_key(request_id),
            sets,
            values,
            condition="attribute_exists(pk) AND #state <> :finished",
        )
        return request_from_item(item) if item is not None else None  # None: finished elsewhere

    def claim_announcement(self, request_id: str, *, lease_until: float) -> RequestRecord | None:
        item = self._table.update(
            request_key(request_id),
            "SET announcing_until = :until",
            {
                ":until": n(lease_until),
                ":now": n(self._clock()),
                ":finished": s(RequestState.FINISHED),
            },
            condition="#state = :finished AND attribute_not_exists(announced_at) AND "
            "(attribute_not_exists(announcing_until) OR announcing_until < :now)",
        )
        return request_from_item(item) if item is not None else None

    def announced(self, request_id: str, *, results_uri: str | None) -> None:
        sets = ["announced_at = :now"]
        values: dict[str, Any] = {":now": n(self._clock())}
        if results_uri:
            sets.append("results_uri = :uri")
            values[":uri"] = s(results_uri)
        self._update(request_id, "SET " + ", ".join(sets) + " REMOVE announcing_until", values)

    def cancel_request(self, request_id: str) -> RequestRecord:
        now = self._clock()
        written, item = self._table.update_or_found(
            request_key(request_id),
            "SET #state = :cancelling, cancelled = :true, updated_at = :now, "
            "created_at = if_not_exists(created_at, :now), expires_at = :ttl",
            {
                ":cancelling": s(RequestState.CANCELLING),
                ":finished": s(RequestState.FINISHED),
                ":true": {"BOOL": True},
                ":now": n(now),
                ":ttl": expires(now),
            },
            condition="attribute_not_exists(#state) OR #state <> :finished",
        )
        if not written:  # the request had finished: its record says how
            return request_from_item(item or {"pk": s(request_id)})
        return request_from_item(item)

    def stop_request(self, opening: RequestOpen, reason: str) -> RequestRecord:
        sets, values = opening_sets(opening, self._clock())
        sets = [x for x in sets if not x.startswith("#state")]
        sets += ["#state = :stopping", "stop_reason = :reason"]
        values.update({":stopping": s(RequestState.STOPPING), ":reason": s(reason[:500])})
        _written, item = self._table.update_or_found(
            request_key(opening.request_id),
            "SET " + ", ".join(sets),
            values,
            condition="attribute_not_exists(#state) OR #state = :running",
        )
        return request_from_item(item or {"pk": s(opening.request_id)})

    def update_request(self, request_id: str, options: Mapping[str, Any]) -> RequestRecord:
        sets = ["updated_at = :now"]
        values: dict[str, Any] = {":now": n(self._clock())}
        for i, (name, value) in enumerate(sorted(options.items())):
            sets.append(f"{_OVERRIDE}{name} = :v{i}")
            values[f":v{i}"] = s(json.dumps(value))
        return request_from_item(self._update(request_id, "SET " + ", ".join(sets), values))

    def note_request(self, opening: RequestOpen, note: str) -> None:
        sets, values = opening_sets(opening, self._clock())
        sets.append("notes = list_append(if_not_exists(notes, :empty), :note)")
        values.update({":empty": {"L": []}, ":note": {"L": [s(note[:500])]}})
        values[":max"] = {"N": str(MAX_NOTES)}
        # Refused when there are enough notes already: the first ones say it.
        self._table.update(
            request_key(opening.request_id),
            "SET " + ", ".join(sets),
            values,
            condition="attribute_not_exists(notes) OR size(notes) < :max",
        )

    def expansion(self, request_id: str) -> StoredExpansion | None:
        record = self._table.get(request_key(request_id))
        parts = int(read_n(record, "parts") or 0) if record else 0
        if not record or not parts:
            return None
        found = {
            item["sk"]["S"]: item["body"]["S"]
            for item in self._table.partition(request_id)
            if item["sk"]["S"].startswith(PART_SK)
        }
        bodies = tuple(found[part_sk(i)] for i in range(1, parts + 1))
        sent = frozenset(int(v) for v in record.get("sent_parts", {}).get("NS", ()))
        return StoredExpansion(bodies, sent)

    def store_expansion(self, opening: RequestOpen, bodies: Sequence[str]) -> StoredExpansion:
        # Parts first, then the record's part count: a record that counts parts has them all.
        # Each part is written only if absent, so concurrent expanders of one request keep
        # the first writer's parts (they expand the same selection moments apart).
        for i, body in enumerate(bodies, start=1):
            self._table.put_new(
                {"pk": s(opening.request_id), "sk": s(part_sk(i)), "body": s(body)}
                | {"expires_at": expires(self._clock())}
            )
        sets, values = opening_sets(opening, self._clock())
        sets.append("parts = if_not_exists(parts, :parts)")
        values[":parts"] = n(len(bodies))
        self._update(opening.request_id, "SET " + ", ".join(sets), values)
        stored = self.expansion(opening.request_id)
        if stored is None:  # pragma: no cover - the record was just written
            raise RuntimeError(f"expansion of {opening.request_id} vanished")
        return stored

    def mark_sent(self, request_id: str, parts: Sequence[int]) -> None:
        if parts:
            self._update(
                request_id,
                "SET updated_at = :now ADD sent_parts :parts",
                {":now": n(self._clock()), ":parts": {"NS": [str(p) for p in sorted(parts)]}},
            )

    def _update(self, request_id: str, expression: str, values: Mapping[str, Any]) -> Item:
        """An unconditional update: the item as written."""
        item = self._table.update(request_key(request_id), expression, values)
        return item or {}


def request_key(request_id: str) -> dict[str, Any]:
    return {"pk": s(request_id), "sk": s(REQUEST_SK)}


def rollout_key(request_id: str) -> dict[str, Any]:
    return {"pk": s(request_id), "sk": s(ROLLOUT_SK)}


def part_sk(part: int) -> str:
    return f"{PART_SK}{part:05d}"


def opening_sets(
    opening: RequestOpen, now: float, *, finish: bool = False, announce_until: float | None = None
) -> tuple[list[str], dict[str, Any]]:
    """What any update of a request sets: the record as the first message describes it (kept
    when it exists: ``if_not_exists``), so the first writer - whichever it is - creates it.
    With ``finish``, the write also finishes it (and takes the announcement's lease until
    ``announce_until``), as ``finish_request`` would."""
    sets = [
        "task = if_not_exists(task, :task)",
        "expected = if_not_exists(expected, :expected)",
        "options = if_not_exists(options, :options)",
        "publisher = if_not_exists(publisher, :publisher)",
        "created_at = if_not_exists(created_at, :now)",
        "#state = :finished, finished_at = :now"
        if finish
        else "#state = if_not_exists(#state, :running)",
        "updated_at = :now",
        "expires_at = :ttl",
    ]
    values: dict[str, Any] = {
        ":task": s(opening.task),
        ":expected": {"N": str(opening.expected)},
        ":options": s(json.dumps(dict(opening.options), sort_keys=True)),
        ":publisher": s(opening.publisher or "-"),
        ":now": n(now),
        ":ttl": expires(now),
    }
    if finish:
        values[":finished"] = s(RequestState.FINISHED)
        if announce_until is not None:
            sets.append("announcing_until = :until")
            values[":until"] = n(announce_until)
    else:
        values[":running"] = s(RequestState.RUNNING)
    if opening.canary_key:
        sets.append("canary_key = if_not_exists(canary_key, :canary)")
        values[":canary"] = s(opening.canary_key)
    if opening.region_targets:
        sets.append("region_targets = if_not_exists(region_targets, :regions)")
        values[":regions"] = s(json.dumps(dict(opening.region_targets), sort_keys=True))
    return sets, values


Update = tuple[str, dict[str, Any]]


def counting_updates(
    opening: RequestOpen,
    endings: Mapping[str, JobState],
    now: float,
    regions: Mapping[str, str] | None = None,
    *,
    finish: bool = False,
    announce_until: float | None = None,
) -> tuple[Update, list[Update]]:
    """The updates that count ``endings``: ADD each key to its state's set and DELETE it from
    the others'. An attribute can be named once per update, so keys leaving a set this update
    also adds to are removed by a later update (the union of the sets never counts a key twice
    in between). With ``regions`` (job key -> region), each key is also ADDed to its region's
    ended set, which only grows (a key moving between states stays ended)."""
    sets, values = opening_sets(opening, now, finish=finish, announce_until=announce_until)
    by_state: dict[JobState, set[str]] = {}
    by_region: dict[str, set[str]] = {}
    for key, state in endings.items():
        by_state.setdefault(state, set()).add(short_key(key))
        if regions and key in regions:
            by_region.setdefault(regions[key], set()).add(short_key(key))
    adds = [f"ended_{state} :add_{state}" for state in by_state]
    values.update({f":add_{state}": {"SS": sorted(keys)} for state, keys in by_state.items()})
    for n_region, (region, keys) in enumerate(sorted(by_region.items())):
        adds.append(f"{region_attribute(region)} :in_{n_region}")
        values[f":in_{n_region}"] = {"SS": sorted(keys)}
    deletes: list[str] = []
    later: list[Update] = []
    for other in COUNTED_STATES:
        leaving = set().union(*(k for st, k in by_state.items() if st is not other))
        if not leaving:
            continue
        if other in by_state:
            later.append(
                (
                    f"SET updated_at = :now DELETE ended_{other} :keys",
                    {":now": n(now), ":keys": {"SS": sorted(leaving)}},
                )
            )
        else:
            deletes.append(f"ended_{other} :del_{other}")
            values[f":del_{other}"] = {"SS": sorted(leaving)}
    expression = "SET " + ", ".join(sets)
    if adds:
        expression += " ADD " + ", ".join(adds)
    if deletes:
        expression += " DELETE " + ", ".join(deletes)
    return (expression, values), later


def region_attribute(region: str) -> str:
    """The attribute holding the keys that ended in ``region`` (a region name's hyphens are
    underscores: a name an expression may use as it is)."""
    return REGION_ENDED + region.replace("-", "_")


def request_from_item(item: Item, rollout: Item | None = None) -> RequestRecord:
    def text(name: str) -> str | None:
        return read_s(item, name)

    def number(name: str) -> float | None:
        return read_n(item, name)

    options: dict[str, Any] = json.loads(text("options") or "{}")
    for name, value in item.items():
        if name.startswith(_OVERRIDE):
            options[name[len(_OVERRIDE) :]] = json.loads(value["S"])
    ended = {
        state: frozenset(item[f"ended_{state}"]["SS"])
        for state in COUNTED_STATES
        if f"ended_{state}" in item
    }
    return RequestRecord(
        request_id=text("pk") or "",
        task=text("task") or "",
        expected=int(number("expected") or 0),
        options=options,
        publisher=text("publisher") or "",
        state=RequestState(text("state") or RequestState.RUNNING),
        created_at=number("created_at") or 0.0,
        updated_at=number("updated_at") or 0.0,
        finished_at=number("finished_at"),
        ended=ended,
        canary_key=text("canary_key"),
        cancelled=read_bool(item, "cancelled"),
        stop_reason=text("stop_reason"),
        notes=tuple(v["S"] for v in item.get("notes", {}).get("L", [])),
        announced_at=number("announced_at"),
        results_uri=text("results_uri"),
        leases={
            name[1:]: float(value["N"])
            for name, value in (rollout or {}).get("lease", {}).get("M", {}).items()
        },
        started=frozenset((rollout or {}).get("started", {}).get("SS", ())),
        region_targets=json.loads(text("region_targets") or "{}"),
        region_ended={
            name[len(REGION_ENDED) :].replace("_", "-"): frozenset(value["SS"])
            for name, value in item.items()
            if name.startswith(REGION_ENDED)
        },
    )
