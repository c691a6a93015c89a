"""The worker's side of request records: read them before a batch runs (the request-wide
controls every job is gated by), and count the final states the batch's jobs reached after it
(finishing and announcing the requests that are complete).

Counting is idempotent (``handler.requests``): when a count cannot be written, the request's
messages come back, and their replays count again without counting anything twice. Requests are
counted (and announced) concurrently: each is a chain of round trips of its own (count, export,
event, mark) that no other request's waits for, and a batch of legacy messages is ten requests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from aws_lambda_powertools import Logger

from handler.alarms import Alarms, AlarmsUnreadableError
from handler.completion import Completions
from handler.envelope import Envelope
from handler.exceptions import ConfigurationError
from handler.ledger import JobState
from handler.requests import RequestLedger, RequestOpen, RequestRecord, RequestState, RequestView
from handler.sqs import Message
from handler.telemetry import BatchMetrics

__all__ = ["Ended", "RequestTracker"]

logger = Logger(child=True)


@dataclass(frozen=True, slots=True)
class Ended:
    """The final states one message's jobs reached in this delivery."""

    message: Message
    envelope: Envelope
    states: Mapping[str, JobState]


class RequestTracker:
    def __init__(
        self,
        requests: RequestLedger,
        completions: Completions,
        alarms: Alarms | None = None,
        *,
        max_workers: int = 1,
    ) -> None:
        self._requests = requests
        self._completions = completions
        self._alarms = alarms
        self._max_workers = max_workers

    def views(self, messages: Sequence[tuple[Message, Envelope]]) -> dict[str, RequestView]:
        """Each request's controls as its record and this batch's messages state them, after
        checking its stop conditions (its alarms)."""
        ids = sorted({e.request_id for _, e in messages})
        try:
            records = self._requests.requests(ids)
        except ConfigurationError:
            raise
        except Exception as exc:  # noqa: BLE001 - without records, controls act on this batch only
            logger.warning("could not read request records", extra={"reason": str(exc)})
            records = {}
        for message, envelope in messages:
            record = records.get(envelope.request_id)
            stop = self._stop_reason(envelope, record)
            if stop is not None:
                records[envelope.request_id] = self._stop(message, envelope, record, stop)
        views: dict[str, RequestView] = {}
        for _, envelope in messages:
            rid = envelope.request_id
            if rid not in views or envelope.canary_key:
                views[rid] = RequestView(records.get(rid), envelope)
        return views

    def _stop_reason(self, envelope: Envelope, record: RequestRecord | None) -> str | None:
        """Why a running request must stop now (one of its alarms fires), or None."""
        options = envelope.options
        if not options.alarms or self._alarms is None:
            return None
        if record is not None and record.state is not RequestState.RUNNING:
            return None  # stopping, cancelling or finished already
        try:
            firing = self._alarms.firing(options.alarms)
        except AlarmsUnreadableError as exc:
            if options.on_alarm_unreadable == "continue":
                logger.warning(
                    "alarms unreadable; continuing as the request asks",
                    extra={"request_id": envelope.request_id, "reason": exc.reason},
                )
                return None
            return f"alarms cannot be read: {exc.reason}"
        return f"alarm {firing}" if firing else None

    def _stop(
        self, message: Message, envelope: Envelope, record: RequestRecord | None, reason: str
    ) -> RequestRecord:
        try:
            record = self._requests.stop_request(RequestOpen.of(envelope, message.sender), reason)
        except ConfigurationError:
            raise
        except Exception as exc:  # noqa: BLE001 - this batch still honours the stop
            logger.warning("could not record the stop", extra={"reason": str(exc)})
            base = record or RequestRecord(envelope.request_id)
            return replace(base, state=RequestState.STOPPING, stop_reason=reason)
        logger.warning(
            "request stopped", extra={"request_id": envelope.request_id, "reason": reason}
        )
        return record

    def count(self, ended: Sequence[Ended], metrics: BatchMetrics) -> list[str]:
        """Count the final states each request's jobs reached; finish complete requests.
        Returns the ids of the messages that must come back (their request's count failed)."""
        by_request: dict[str, list[Ended]] = {}
        for each in ended:
            by_request.setdefault(each.envelope.request_id, []).append(each)
        groups = list(by_request.values())
        workers = min(self._max_workers, len(groups))
        if workers <= 1:
            return [m for items in groups for m in self._count_request(items, metrics)]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fanout-count") as pool:
            futures = [pool.submit(self._count_request, items, metrics) for items in groups]
            # .result() re-raises a ConfigurationError: the whole batch comes back.
            return [m for future in futures for m in future.result()]

    def _count_request(self, items: Sequence[Ended], metrics: BatchMetrics) -> list[str]:
        """Count one request's ends (all its messages of this batch); the ids of its messages
        that must come back (none when counted)."""
        states = {key: state for item in items for key, state in item.states.items()}
        opening = RequestOpen.of(items[0].envelope, items[0].message.sender)
        # Rolled region by region: each region's ended set too (``handler.rollout``).
        regions = {
            job.key: job.region
            for item in items
            if item.envelope.options.region_order
            for job in item.envelope.jobs
            if job.key in states
        }
        try:
            finished = self._count(opening, states, regions)
            if finished is not None:
                metrics.count(f"Requests{finished.outcome.capitalize()}", finished.task)
        except ConfigurationError:
            raise
        except Exception as exc:  # noqa: BLE001 - the messages come back and count again
            logger.warning(
                "could not count or announce the request's ends",
                extra={"request_id": opening.request_id, "reason": str(exc)},
            )
            return [item.message.message_id for item in items]
        return []

    def _count(
        self, opening: RequestOpen, states: Mapping[str, JobState], regions: Mapping[str, str]
    ) -> RequestRecord | None:
        """Count the ends and settle the request; the record if this call finished it. Ends
        that are every target of the request (a request in one message, ended in one delivery)
        are counted and finished in one write."""
        if 0 < opening.expected <= len(states):
            finished = self._requests.count_and_finish(
                opening, states, regions, announce_until=self._completions.announce_lease()
            )
            if finished is not None:
                self._completions.finished_here(finished)
                return finished
        record = self._requests.count_ended(opening, states, regions)
        return self._completions.settle(record)

    def note_republished(self, message: Message, envelope: Envelope) -> None:
        """Nothing runs again, and the request record says so plainly (``fanout status``)."""
        note = (
            f"message {message.message_id} named {len(envelope.jobs)} target(s) that had "
            "already ended without success: nothing ran again. Use `fanout redrive` on their "
            "dead letters, or publish with a new request id"
        )
        logger.warning(
            "re-published request", extra={"request_id": envelope.request_id, "note": note}
        )
        try:
            self._requests.note_request(RequestOpen.of(envelope, message.sender), note)
        except ConfigurationError:
            raise
        except Exception as exc:  # noqa: BLE001 - a note is not worth a redelivery
            logger.warning("could not note the re-publish", extra={"reason": str(exc)})
