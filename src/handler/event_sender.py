"""EventBridge PutEvents shared by the threads announcing a batch's requests.

A batch's requests are counted and announced concurrently (``handler.tracking``), each ending
in one event. Entries that arrive while a PutEvents is in flight go out together in the next
call (up to ``MAX_ENTRIES``, the API's limit): ten announcements cost two round trips instead
of ten, with no timer - a thread waits at most for the call in flight before its own. Every
thread learns the fate of its own entry: PutEvents answers entry by entry, and a refused entry
(or a failed call) raises in the thread that asked, so only that request's messages come back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["MAX_ENTRIES", "EventRefusedError", "EventSender"]

MAX_ENTRIES: Final = 10  # PutEvents' limit per request (its 256 KB cap is far off: small details)


class EventRefusedError(RuntimeError):
    """PutEvents answered with an error for this entry."""


@dataclass
class _Pending:
    entry: dict[str, Any]
    sent: bool = False
    error: Exception | None = None


class EventSender:
    def __init__(self, events: Callable[[], Any]) -> None:
        self._events = events
        self._queue: list[_Pending] = []
        self._sending = False
        self._changed = threading.Condition()

    def put(self, entry: dict[str, Any]) -> None:
        """Send one entry (alone or with others queued meanwhile); raises if it was refused."""
        mine = _Pending(entry)
        with self._changed:
            self._queue.append(mine)
        while True:
            with self._changed:
                while self._sending and not mine.sent:
                    self._changed.wait()
                if mine.sent:
                    break
                self._sending = True
                batch, self._queue = self._queue[:MAX_ENTRIES], self._queue[MAX_ENTRIES:]
            try:
                self._send(batch)
            finally:
                with self._changed:
                    for pending in batch:
                        if not pending.sent:  # interrupted: never reported as sent
                            pending.error = EventRefusedError("PutEvents was interrupted")
                            pending.sent = True
                    self._sending = False
                    self._changed.notify_all()
        if mine.error is not None:
            raise mine.error

    def _send(self, batch: list[_Pending]) -> None:
        """One PutEvents for ``batch``; marks every entry sent, with its error if any."""
        try:
            response = self._events().put_events(Entries=[p.entry for p in batch])
        except Exception as exc:  # noqa: BLE001 - each thread raises it for its own entry
            for pending in batch:
                pending.error = exc
        else:
            answers = response.get("Entries", [])
            for n, pending in enumerate(batch):
                answer = answers[n] if n < len(answers) else {"ErrorCode": "NoAnswer"}
                if answer.get("ErrorCode"):
                    pending.error = EventRefusedError(
                        f"PutEvents refused the event: {answer['ErrorCode']}"
                    )
        for pending in batch:
            pending.sent = True
