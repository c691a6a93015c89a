"""SQS delivery: every change to a queue's messages under the queue's lock, and fair queues.

**Atomicity.** moto's server serves each request on a thread of its own. ``Queue.add_message``
appends under the queue's lock, but ``Queue.delete_message`` rebuilds the message list without
it: a message sent while a delete rebuilds the list is dropped (measured in-process, one sender
and two receive-and-delete threads, switch interval 10 µs: 5 of 3,000 messages vanished without
being deleted, their receivers' deletes answered ReceiptHandleIsInvalid). A receive checks a
message's visibility and marks it received in separate steps, so two receives could also take
one message at once. Here deletes, visibility changes, purges and each pass of a receive hold
the queue's lock (moto's own, re-entrant); a long poll waits between passes with the lock
released, woken by a send, so it never holds up a sender.

**Fair queues.** SQS standard queues treat ``MessageGroupId`` as the tenant ("Amazon SQS fair
queues", How fair queues work): a tenant is noisy when it has more than 10 % of the queue's
in-flight messages and at least 30 of its own in flight, or more than 10 % of the consumers'
recent processing time; while a tenant is noisy, receives return quiet tenants' messages first,
and among noisy tenants the one with the fewest in flight first. Nothing is dropped or delayed:
with no quiet message waiting, a noisy tenant's messages are delivered as usual. A message
without a group id is a tenant of its own. Emulated as documented, evaluated exactly at every
receive; "recent" is unpublished: here the last 60 s of completed processing (receive to
delete) plus the age of what is in flight. AWS's detection is approximate, this one is not.
FIFO queues keep moto's ordering.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "CONCURRENCY_SHARE",
    "MIN_NOISY_IN_FLIGHT",
    "PROCESSING_SHARE",
    "PROCESSING_WINDOW_SECONDS",
    "install",
]

CONCURRENCY_SHARE: Final = 0.10
MIN_NOISY_IN_FLIGHT: Final = 30
PROCESSING_SHARE: Final = 0.10
PROCESSING_WINDOW_SECONDS: Final = 60.0
# A long poll looks again this often for messages whose visibility timeout or delay ran out
# (nothing notifies those); a send wakes it at once.
_RECHECK_SECONDS: Final = 0.2

_INSTALL_LOCK: Final = threading.Lock()
_RECEIVING: Final = threading.local()  # .queue: the queue a receive pass is ordering


@dataclass
class _Tenants:
    """What fair delivery remembers of one queue: when each message was last received, and
    the processing time of the messages deleted in the last window."""

    received_at: dict[str, float] = field(default_factory=dict)  # message id -> receive time
    finished: deque[tuple[float, str, float]] = field(default_factory=deque)  # end, tenant, s

    def processing_seconds(self, now: float, in_flight: dict[str, str]) -> dict[str, float]:
        """Each tenant's processing time in the window: what ended in it, and the age of what
        is in flight (``in_flight``: message id -> tenant)."""
        while self.finished and self.finished[0][0] < now - PROCESSING_WINDOW_SECONDS:
            self.finished.popleft()
        seconds: dict[str, float] = {}
        for _end, tenant, spent in self.finished:
            seconds[tenant] = seconds.get(tenant, 0.0) + spent
        for message_id, since in self.received_at.items():
            if message_id in in_flight:
                tenant = in_flight[message_id]
                seconds[tenant] = seconds.get(tenant, 0.0) + now - since
        return seconds

    def ended(self, message: Any, now: float) -> None:
        """``message`` is no longer in flight (deleted, or visible again)."""
        since = self.received_at.pop(message.id, None)
        if since is not None:
            end = min(now, message.visible_at / 1000.0) if message.visible else now
            self.finished.append((end, _tenant(message), max(0.0, end - since)))


def _tenant(message: Any) -> str:
    group = message.group_id
    return f"group:{group}" if group else f"message:{message.id}"


def _tenants(queue: Any) -> _Tenants:
    tenants = queue.__dict__.get("_fanout_tenants")
    if tenants is None:
        tenants = queue.__dict__["_fanout_tenants"] = _Tenants()
    return tenants  # type: ignore[no-any-return]


def noisy_tenants(queue: Any, now: float) -> tuple[set[str], Counter[str]]:
    """The noisy tenants of ``queue`` now, and every tenant's in-flight count."""
    state = _tenants(queue)
    in_flight: dict[str, str] = {}  # message id -> tenant
    present: set[str] = set()
    for message in queue._messages:
        present.add(message.id)
        if message.approximate_receive_count and not message.visible:
            in_flight[message.id] = _tenant(message)
        elif message.id in state.received_at:
            state.ended(message, now)  # its visibility timeout ran out, or was set to 0
    for gone in [m for m in state.received_at if m not in present]:
        del state.received_at[gone]  # purged, or moved to the dead-letter queue
    counts = Counter(in_flight.values())
    seconds = state.processing_seconds(now, in_flight)
    all_in_flight, all_seconds = len(in_flight), sum(seconds.values())
    noisy = {
        tenant
        for tenant, count in counts.items()
        if count >= MIN_NOISY_IN_FLIGHT and count > CONCURRENCY_SHARE * all_in_flight
    }
    if all_seconds > 0:
        noisy |= {t for t, s in seconds.items() if s > PROCESSING_SHARE * all_seconds}
    return noisy, counts


def fair_order(queue: Any, visible: list[Any]) -> list[Any]:
    """``visible`` in the order a fair queue delivers them: quiet tenants' first, then noisy
    tenants' by fewest in flight; queue order within each."""
    if not any(m.group_id for m in visible):
        return visible
    noisy, in_flight = noisy_tenants(queue, time.time())
    if not noisy:
        return visible

    def rank(item: tuple[int, Any]) -> tuple[int, int, int]:
        position, message = item
        tenant = _tenant(message)
        if tenant in noisy:
            return (1, in_flight[tenant], position)
        return (0, 0, position)

    return [message for _, message in sorted(enumerate(visible), key=rank)]


def _visible(queue: Any) -> list[Any]:
    """moto's ``Queue.messages`` (visible, not delayed), fairly ordered inside a receive."""
    visible = [m for m in queue._messages if m.visible and not m.delayed]
    ordering = getattr(_RECEIVING, "queue", None) is queue
    if ordering and not queue.fifo_queue:
        return fair_order(queue, visible)
    return visible


def _locked(method: Callable[..., Any]) -> Callable[..., Any]:
    """A backend method ``(self, queue_name, ...)`` run under that queue's lock."""

    def run(backend: Any, queue_name: str, *args: Any, **kwargs: Any) -> Any:
        with backend.get_queue(queue_name)._messages_lock:
            return method(backend, queue_name, *args, **kwargs)

    run.__wrapped__ = method  # type: ignore[attr-defined]
    return run


def install() -> None:
    """Patch moto's SQS model (once per process; moto's state is process-wide)."""
    from moto.sqs.models import Queue, SQSBackend  # noqa: PLC0415 - moto internals

    with _INSTALL_LOCK:
        if getattr(Queue, "_fanout_delivery", False):
            return
        receive, delete = SQSBackend.receive_message, Queue.delete_message

        def delete_message(queue: Any, receipt_handle: str) -> None:
            with queue._messages_lock:
                deleting = next(
                    (m for m in queue._messages if m.had_receipt_handle(receipt_handle)),
                    None,
                )
                delete(queue, receipt_handle)
                if deleting is not None:
                    _tenants(queue).ended(deleting, time.time())

        def receive_message(  # noqa: PLR0917 - moto's signature
            backend: Any,
            queue_name: str,
            count: int,
            wait_seconds_timeout: int,
            visibility_timeout: int,
            message_attribute_names: list[str] | None = None,
        ) -> list[Any]:
            queue = backend.get_queue(queue_name)
            deadline = time.monotonic() + (wait_seconds_timeout or 0)
            while True:
                with queue._messages_lock:
                    _RECEIVING.queue = queue
                    try:
                        # One pass, as moto's receive without a wait.
                        got = receive(
                            backend,
                            queue_name,
                            count,
                            0,
                            visibility_timeout,
                            message_attribute_names,
                        )
                    finally:
                        _RECEIVING.queue = None
                    now = time.time()
                    state = _tenants(queue)
                    for message in got:
                        state.received_at[message.id] = now
                    remaining = deadline - time.monotonic()
                    if got or remaining <= 0:
                        return list(got)
                    # Released while waiting; add_message notifies.
                    queue._messages_lock.wait(min(_RECHECK_SECONDS, remaining))

        patched: list[tuple[type, str, Any]] = [
            (Queue, "delete_message", delete_message),
            (Queue, "messages", property(_visible)),
            (SQSBackend, "receive_message", receive_message),
            (
                SQSBackend,
                "change_message_visibility",
                _locked(SQSBackend.change_message_visibility),
            ),
            (SQSBackend, "purge_queue", _locked(SQSBackend.purge_queue)),
            (Queue, "_fanout_delivery", True),
        ]
        for owner, name, value in patched:
            setattr(owner, name, value)
