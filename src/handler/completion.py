"""A request's end: counted once, finished once, announced once.

After a batch, each request it touched has the final states of its jobs counted (idempotent
sets; ``handler.requests``). When the counts say the request is complete, the conditional
finish elects exactly one worker - of however many instances ended its last jobs at the same
moment. The announcement (the per-target results exported as JSON lines to ``RESULTS_BUCKET``,
then an EventBridge event - source ``fanout``, detail-type ``Request Finished`` - on
``EVENT_BUS_NAME``) is taken under a lease and marked done afterwards, so an announcer that
dies is replaced by the next delivery of the request's last message (which is not acknowledged
before the announcement went out). A replacement after a crash *between* PutEvents and the mark
can repeat the event: its detail carries the request id for consumers to deduplicate on.
Requests of one batch are announced concurrently, their events sharing PutEvents calls
(``handler.event_sender``); each request still learns whether its own event went out.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from aws_lambda_powertools import Logger

from handler.event_sender import EventSender
from handler.ledger import JobRecord
from handler.requests import RequestLedger, RequestRecord, RequestState

__all__ = ["DETAIL_TYPE", "EVENT_SOURCE", "Completions", "completion_detail", "results_lines"]

logger = Logger(child=True)

EVENT_SOURCE: Final = "fanout"
DETAIL_TYPE: Final = "Request Finished"
ANNOUNCE_LEASE_SECONDS: Final = 60.0


def completion_detail(record: RequestRecord, results_uri: str | None = None) -> dict[str, Any]:
    duration = (record.finished_at or record.updated_at) - record.created_at
    detail: dict[str, Any] = {
        "request_id": record.request_id,
        "task": record.task,
        "state": record.outcome,
        "counts": record.counts(),
        "duration_seconds": round(max(0.0, duration), 3),
        "publisher": record.publisher,
        "created_at": record.created_at,
        "finished_at": record.finished_at,
    }
    if results_uri:
        detail["results"] = results_uri
    return detail


def results_lines(records: list[JobRecord]) -> str:
    """One JSON document per target (like Distributed Map's ResultWriter)."""
    lines = [
        json.dumps(
            {
                "account": r.account,
                "region": r.region,
                "task": r.task,
                "state": r.state.value,
                "attempts": r.attempts,
                "result_id": r.result_id,
                "error_class": r.error_class,
                "error": r.last_error,
                "updated_at": r.updated_at,
            },
            sort_keys=True,
        )
        for r in records
    ]
    return "\n".join(lines) + ("\n" if lines else "")


class Completions:
    def __init__(
        self,
        *,
        requests: RequestLedger,
        jobs: Callable[[str], list[JobRecord]],
        event_bus: str | None,
        events: Callable[[], Any],
        results_bucket: str | None = None,
        results_prefix: str = "fanout/results/",
        s3: Callable[[], Any] | None = None,
        clock: Callable[[], float],
    ) -> None:
        self._requests = requests
        self._jobs = jobs
        self._bus = event_bus
        self._events = EventSender(events)  # concurrent announcements share PutEvents calls
        self._bucket = results_bucket
        self._prefix = results_prefix
        self._s3 = s3
        self._clock = clock

    @property
    def enabled(self) -> bool:
        return bool(self._bus or self._bucket)

    def settle(self, record: RequestRecord) -> RequestRecord | None:
        """Finish a complete request (exactly one caller succeeds) and announce a finished one
        that has not been announced; the record if this call finished it. Raises when the
        announcement could not go out: the message carrying the request's last jobs must then
        come back."""
        if not record.complete:
            return None
        if record.state is not RequestState.FINISHED:
            # The finisher takes the announcement's lease in the same write (one write less
            # per request than finishing, then claiming).
            finished = self._requests.finish_request(
                record.request_id, announce_until=self.announce_lease()
            )
            if finished is None:
                return None  # another worker finished it: it announces
            self.finished_here(finished)
            return finished
        self._announce(record)  # finished earlier: announced yet?
        return None

    def announce_lease(self) -> float | None:
        """The announcement's lease a finishing write takes (None: nothing to announce)."""
        return self._clock() + ANNOUNCE_LEASE_SECONDS if self.enabled else None

    def finished_here(self, finished: RequestRecord) -> None:
        """Announce a request this caller finished, holding the lease ``announce_lease`` gave
        (raises when the announcement could not go out, as ``settle`` does)."""
        logger.info("request finished", extra=completion_detail(finished))
        if self.enabled:
            self._announce_claimed(finished)

    def _announce(self, finished: RequestRecord) -> None:
        if not self.enabled or finished.announced_at is not None:
            return
        claimed = self._requests.claim_announcement(
            finished.request_id, lease_until=self._clock() + ANNOUNCE_LEASE_SECONDS
        )
        if claimed is None:
            return  # announced, or being announced elsewhere
        self._announce_claimed(claimed)

    def _announce_claimed(self, claimed: RequestRecord) -> None:
        """Export and announce a request whose announcement lease this caller holds."""
        uri = self._export(claimed)
        self._publish(completion_detail(claimed, uri))
        self._requests.announced(claimed.request_id, results_uri=uri)

    def _export(self, record: RequestRecord) -> str | None:
        if not self._bucket or self._s3 is None:
            return None
        key = f"{self._prefix}{record.request_id}.jsonl"
        body = results_lines(self._jobs(record.request_id)).encode()
        self._s3().put_object(
            Bucket=self._bucket, Key=key, Body=body, ContentType="application/x-ndjson"
        )
        return f"s3://{self._bucket}/{key}"

    def _publish(self, detail: dict[str, Any]) -> None:
        if not self._bus:
            return
        self._events.put(
            {
                "Source": EVENT_SOURCE,
                "DetailType": DETAIL_TYPE,
                "Detail": json.dumps(detail, sort_keys=True),
                "EventBusName": self._bus,
            }
        )
