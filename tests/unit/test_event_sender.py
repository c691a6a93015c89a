"""PutEvents shared by concurrent announcers (``handler.event_sender``)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from handler.event_sender import MAX_ENTRIES, EventRefusedError, EventSender

WAIT_S = 30.0


class _Events:
    """PutEvents that holds its first call until released, answering entry by entry
    (``refuse``: the details it refuses; ``broken``: every call fails)."""

    def __init__(self, *, refuse: Sequence[str] = (), broken: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.entered, self.release = threading.Event(), threading.Event()
        self._refuse, self._broken = set(refuse), broken

    def put_events(self, Entries: Sequence[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        self.calls.append([e["Detail"] for e in Entries])
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(WAIT_S)
        if self._broken:
            raise ConnectionError("the endpoint went away")
        answers = [
            {"ErrorCode": "InternalFailure"} if e["Detail"] in self._refuse else {"EventId": "x"}
            for e in Entries
        ]
        return {"FailedEntryCount": sum("ErrorCode" in a for a in answers), "Entries": answers}


def _entry(detail: str) -> dict[str, Any]:
    return {"Source": "fanout", "DetailType": "t", "Detail": detail, "EventBusName": "b"}


def _queued(sender: EventSender, count: int) -> Callable[[], bool]:
    return lambda: len(sender._queue) == count  # how many wait, for the test


def _wait_until(condition: Callable[[], bool]) -> None:
    done = threading.Event()
    for _ in range(3000):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError("condition never held")


def _send_all(sender: EventSender, events: _Events, details: Sequence[str]) -> dict[str, Any]:
    """The first detail's put goes in flight; the rest queue behind it; then all are let go.
    Returns what each put raised (None: sent)."""
    outcomes: dict[str, Any] = {}

    def put(detail: str) -> None:
        try:
            sender.put(_entry(detail))
            outcomes[detail] = None
        except Exception as exc:  # noqa: BLE001 - recorded for the assertions
            outcomes[detail] = exc

    first = threading.Thread(target=put, args=(details[0],))
    first.start()
    assert events.entered.wait(WAIT_S)
    rest = [threading.Thread(target=put, args=(d,)) for d in details[1:]]
    for thread in rest:
        thread.start()
    _wait_until(_queued(sender, len(rest)))
    events.release.set()
    for thread in [first, *rest]:
        thread.join(WAIT_S)
    return outcomes


def test_entries_arriving_while_a_call_is_in_flight_go_out_together_in_the_next() -> None:
    """GIVEN one PutEvents in flight WHEN three more announcers put their entries meanwhile
    THEN those three go out in one second call, and every announcer returns."""
    events = _Events()
    sender = EventSender(lambda: events)

    outcomes = _send_all(sender, events, ["a", "b", "c", "d"])

    assert outcomes == dict.fromkeys("abcd")
    assert events.calls[0] == ["a"]
    assert sorted(events.calls[1]) == ["b", "c", "d"]
    assert len(events.calls) == 2


def test_a_call_carries_at_most_ten_entries() -> None:
    """GIVEN one call in flight WHEN 23 more entries queue behind it
    THEN they go out in calls of 10, 10 and 3 (PutEvents' limit), all sent."""
    events = _Events()
    sender = EventSender(lambda: events)
    details = [f"e{n}" for n in range(24)]

    outcomes = _send_all(sender, events, details)

    assert all(v is None for v in outcomes.values())
    assert len(outcomes) == 24
    assert [len(c) for c in events.calls] == [1, MAX_ENTRIES, MAX_ENTRIES, 3]
    assert sorted(d for c in events.calls for d in c) == sorted(details)


def test_a_refused_entry_fails_only_its_own_announcer() -> None:
    """GIVEN entries sent together, PutEvents refusing one of them
    THEN that announcer raises with the service's code; the others return."""
    events = _Events(refuse=["c"])
    sender = EventSender(lambda: events)

    outcomes = _send_all(sender, events, ["a", "b", "c", "d"])

    assert isinstance(outcomes["c"], EventRefusedError)
    assert "InternalFailure" in str(outcomes["c"])
    assert [outcomes[d] for d in "abd"] == [None, None, None]


def test_a_failed_call_fails_every_announcer_whose_entry_it_carried() -> None:
    """GIVEN PutEvents failing outright WHEN entries are sent THEN every announcer raises
    that error (none believes its event went out)."""
    events = _Events(broken=True)
    sender = EventSender(lambda: events)

    outcomes = _send_all(sender, events, ["a", "b", "c"])

    assert all(isinstance(outcomes[d], ConnectionError) for d in "abc")


def test_one_announcer_alone_sends_its_entry_at_once() -> None:
    """GIVEN no call in flight WHEN one entry is put THEN one call carries it."""
    events = _Events()
    events.release.set()
    sender = EventSender(lambda: events)

    sender.put(_entry("solo"))

    assert events.calls == [["solo"]]


def test_an_entry_alone_refused_raises_for_its_announcer() -> None:
    """GIVEN PutEvents refusing the entry WHEN it is put alone THEN the put raises."""
    events = _Events(refuse=["no"])
    events.release.set()
    sender = EventSender(lambda: events)

    with pytest.raises(EventRefusedError, match="InternalFailure"):
        sender.put(_entry("no"))
