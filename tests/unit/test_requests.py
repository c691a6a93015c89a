"""Request records (``handler.requests``), checked on both implementations, and the
request-wide controls a batch applies from them."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import boto3
import pytest
from moto import mock_aws

from handler.envelope import parse_message
from handler.exceptions import CanaryPendingError, NotRunError
from handler.ledger import JobState
from handler.requests import RequestLedger, RequestOpen, RequestRecord, RequestState, RequestView
from handler.requests_dynamodb import DynamoDBRequests
from handler.requests_memory import InMemoryRequests
from tests.unit.test_ledger import Clock, create_ledger_table

OPENING = RequestOpen("req-1", "ssm.send_command", expected=3, options={}, publisher="AIDAOPS")


@pytest.fixture(params=["memory", "dynamodb"])
def requests(request: pytest.FixtureRequest) -> Iterator[RequestLedger]:
    if request.param == "memory":
        yield InMemoryRequests(clock=Clock())
        return
    with mock_aws():
        table = create_ledger_table()
        yield DynamoDBRequests(table, lambda: boto3.client("dynamodb"), clock=Clock())


def key(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()[:32]


def test_the_first_count_opens_the_record_with_the_whole_requests_size(
    requests: RequestLedger,
) -> None:
    """GIVEN a request nobody has seen WHEN its first ending is counted
    THEN the record exists with the expected total, publisher and one succeeded."""
    record = requests.count_ended(OPENING, {key(1): JobState.SUCCEEDED})

    assert (record.expected, record.publisher, record.count(JobState.SUCCEEDED)) == (
        3,
        "AIDAOPS",
        1,
    )
    assert (record.pending, record.complete, record.outcome) == (2, False, "running")


def test_counting_the_same_ending_twice_counts_it_once(requests: RequestLedger) -> None:
    """GIVEN an ending counted WHEN a duplicate delivery counts it again
    THEN the count does not change (a set of job keys, not a counter)."""
    requests.count_ended(OPENING, {key(1): JobState.FAILED})

    record = requests.count_ended(OPENING, {key(1): JobState.FAILED})

    assert (record.count(JobState.FAILED), record.ended_total) == (1, 1)


def test_a_redriven_job_moves_from_failed_to_succeeded(requests: RequestLedger) -> None:
    """GIVEN a job counted failed, another failing in the same update
    WHEN the first succeeds after a redrive
    THEN it leaves the failed count and enters the succeeded one; the total counts it once."""
    requests.count_ended(OPENING, {key(1): JobState.FAILED})

    record = requests.count_ended(OPENING, {key(1): JobState.SUCCEEDED, key(2): JobState.FAILED})

    assert (record.count(JobState.SUCCEEDED), record.count(JobState.FAILED)) == (1, 1)
    assert record.ended_total == 2


def test_a_complete_request_is_finished_exactly_once(requests: RequestLedger) -> None:
    """GIVEN every expected target ended
    WHEN two workers both try to finish the request
    THEN exactly one gets the finished record; the state says failed (one target failed)."""
    record = requests.count_ended(
        OPENING, {key(1): JobState.SUCCEEDED, key(2): JobState.SUCCEEDED, key(3): JobState.FAILED}
    )
    assert record.complete

    first = requests.finish_request("req-1")
    second = requests.finish_request("req-1")

    assert first is not None
    assert second is None
    assert (first.state, first.outcome) == (RequestState.FINISHED, "failed")


def test_every_target_ended_at_once_is_counted_and_finished_in_one_write(
    requests: RequestLedger,
) -> None:
    """GIVEN a request nobody has seen, whose three targets all succeeded in one delivery
    WHEN they are counted and finished together, and a duplicate delivery does the same
    THEN the first call gets the finished record (3 succeeded, the announcement's lease held:
    nobody else may claim it), the duplicate gets None and changes nothing."""
    ends = {key(n): JobState.SUCCEEDED for n in (1, 2, 3)}

    first = requests.count_and_finish(OPENING, ends, announce_until=2_000_000_000.0)
    again = requests.count_and_finish(OPENING, ends, announce_until=2_000_000_000.0)

    assert first is not None
    assert (first.state, first.outcome, first.count(JobState.SUCCEEDED)) == (
        RequestState.FINISHED,
        "succeeded",
        3,
    )
    assert again is None
    assert requests.claim_announcement("req-1", lease_until=2_000_000_001.0) is None
    assert requests.requests(["req-1"])["req-1"].count(JobState.SUCCEEDED) == 3


@pytest.mark.parametrize(
    ("before", "ends"),
    [
        pytest.param({}, {1: JobState.SUCCEEDED, 2: JobState.SUCCEEDED}, id="fewer-than-expected"),
        pytest.param(
            {}, {1: JobState.SUCCEEDED, 2: JobState.FAILED, 3: JobState.SUCCEEDED}, id="two-states"
        ),
        pytest.param(
            {1: JobState.SUCCEEDED, 2: JobState.SUCCEEDED, 3: JobState.SUCCEEDED},
            {1: JobState.SUCCEEDED, 2: JobState.SUCCEEDED, 3: JobState.SUCCEEDED},
            id="finished-already",
        ),
    ],
)
def test_ends_that_do_not_complete_the_request_for_certain_are_not_finished_in_one_write(
    requests: RequestLedger, before: dict[int, JobState], ends: dict[int, JobState]
) -> None:
    """GIVEN ends that are not every target, or of two states (counted in two writes), or of
    a request finished already
    WHEN they are offered to count_and_finish
    THEN it answers None and writes nothing: the caller counts them the usual way."""
    if before:
        requests.count_ended(OPENING, {key(n): state for n, state in before.items()})
        assert requests.finish_request("req-1") is not None
    seen = requests.requests(["req-1"]).get("req-1")

    answer = requests.count_and_finish(OPENING, {key(n): state for n, state in ends.items()})

    assert answer is None
    assert requests.requests(["req-1"]).get("req-1") == seen


def test_a_record_expecting_more_targets_is_not_finished_by_fewer(
    requests: RequestLedger,
) -> None:
    """GIVEN a record opened by a part stating 3 targets
    WHEN a message stating 2 targets (a re-publish of fewer) offers both of its ends
    THEN nothing is finished: the record still expects 3."""
    requests.count_ended(OPENING, {})
    smaller = RequestOpen("req-1", "ssm.send_command", expected=2, options={}, publisher="AIDAOPS")

    answer = requests.count_and_finish(
        smaller, {key(1): JobState.SUCCEEDED, key(2): JobState.SUCCEEDED}
    )

    assert answer is None
    record = requests.requests(["req-1"])["req-1"]
    assert (record.state, record.ended_total) == (RequestState.RUNNING, 0)


def test_a_cancelled_request_finishes_as_cancelled(requests: RequestLedger) -> None:
    """GIVEN a running request WHEN it is cancelled and its other targets end cancelled
    THEN it finishes as cancelled."""
    requests.count_ended(OPENING, {key(1): JobState.SUCCEEDED})
    assert requests.cancel_request("req-1").state is RequestState.CANCELLING

    requests.count_ended(OPENING, {key(2): JobState.CANCELLED, key(3): JobState.CANCELLED})
    finished = requests.finish_request("req-1")

    assert finished is not None
    assert finished.outcome == "cancelled"


def test_an_update_overrides_the_published_options(requests: RequestLedger) -> None:
    """GIVEN a request published with max_errors 5 WHEN updated to 1 THEN the record says 1."""
    opening = RequestOpen("req-1", "ssm.send_command", 3, {"max_errors": 5}, "AIDAOPS")
    requests.count_ended(opening, {})

    record = requests.update_request("req-1", {"max_errors": 1})

    assert record.options["max_errors"] == 1


def test_notes_are_kept_for_the_operator(requests: RequestLedger) -> None:
    """GIVEN a note WHEN the record is read THEN it carries the note."""
    requests.note_request(OPENING, "re-published: nothing ran")

    assert requests.requests(["req-1"])["req-1"].notes == ("re-published: nothing ran",)


# --- request-wide controls ---------------------------------------------------------------------


def envelope(options: str, request: str = "") -> object:
    body = (
        '{"version":1,"task":"ssm.send_command","request_id":"req-1",'
        f"{request}"
        '"targets":[{"account":"111111111111"},{"account":"222222222222"}],'
        '"params":{"document_name":"AWS-RunShellScript","instance_ids":["i-0123456789abcdef0"]},'
        f'"options":{options}}}'
    )
    return parse_message(body, message_id="m-1", default_region="us-east-1")


def test_max_errors_counts_the_whole_requests_failures() -> None:
    """GIVEN max_errors 1 and a record saying one target of the request already failed
    WHEN a job of another part is gated after a second failure in this batch
    THEN it is held back as not run (the limit is request-wide, not per message)."""
    env = envelope('{"max_errors":1}', '"request":{"targets":10,"part":2,"parts":5},')
    record = RequestRecord("req-1", expected=10, ended={JobState.FAILED: frozenset({"x"})})
    view = RequestView(record, env)  # type: ignore[arg-type]
    assert view.held_back("k") is None

    view.ended("other", JobState.FAILED)

    assert isinstance(view.held_back("k"), NotRunError)


def test_others_wait_for_the_canary_and_run_once_it_succeeded() -> None:
    """GIVEN a canary request WHEN its other targets are gated
    THEN they wait while the canary has not ended, and may run once it succeeded."""
    env = envelope('{"canary":true}')
    view = RequestView(None, env)  # type: ignore[arg-type]
    canary, other = (j.key for j in env.jobs)  # type: ignore[attr-defined]

    assert view.held_back(canary) is None
    assert isinstance(view.held_back(other), CanaryPendingError)
    view.ended(canary, JobState.SUCCEEDED)
    assert view.held_back(other) is None


def test_a_failed_canary_holds_back_every_other_target() -> None:
    """GIVEN a canary that failed WHEN the others are gated THEN they are not run."""
    env = envelope('{"canary":true}')
    view = RequestView(None, env)  # type: ignore[arg-type]
    canary, other = (j.key for j in env.jobs)  # type: ignore[attr-defined]

    view.ended(canary, JobState.FAILED)

    assert isinstance(view.held_back(other), NotRunError)


def test_a_part_without_its_canary_reads_the_canarys_state_from_the_record() -> None:
    """GIVEN part 2 of a canary request, the canary in part 1, and a record saying the canary
    succeeded WHEN its jobs are gated THEN they run (the gate survives splits and re-sends)."""
    canary = '{"canary":{"account":"999999999999","region":"us-east-1"}}'
    env = envelope(canary, '"request":{"targets":3,"part":2,"parts":2},')
    canary_key = "c" * 32
    pending = RequestRecord("req-1", expected=3, canary_key=canary_key[:16])
    done = RequestRecord(
        "req-1",
        expected=3,
        canary_key=canary_key[:16],
        ended={JobState.SUCCEEDED: frozenset({canary_key[:16]})},
    )

    waiting: Callable[[RequestRecord], object] = lambda r: RequestView(r, env).held_back("k")  # type: ignore[arg-type]  # noqa: E731

    assert isinstance(waiting(pending), CanaryPendingError)
    assert waiting(done) is None


def test_a_finished_request_is_announced_by_one_caller_at_a_time(requests: RequestLedger) -> None:
    """GIVEN a finished request
    WHEN two callers claim its announcement, one announces, and a third claims later
    THEN only the first gets the lease, and once announced nobody does again."""
    requests.count_ended(
        OPENING,
        {key(1): JobState.SUCCEEDED, key(2): JobState.SUCCEEDED, key(3): JobState.SUCCEEDED},
    )
    requests.finish_request("req-1")

    first = requests.claim_announcement("req-1", lease_until=2_000_000.0)
    second = requests.claim_announcement("req-1", lease_until=2_000_000.0)
    assert first is not None
    assert second is None

    requests.announced("req-1", results_uri="s3://bucket/req-1.jsonl")

    assert requests.claim_announcement("req-1", lease_until=3_000_000.0) is None
    record = requests.requests(["req-1"])["req-1"]
    assert record.results_uri == "s3://bucket/req-1.jsonl"
    assert record.announced_at is not None


def test_a_dead_announcers_lease_expires(requests: RequestLedger) -> None:
    """GIVEN an announcement lease taken by a caller that died (lease already past)
    WHEN another caller claims it THEN it gets it."""
    requests.count_ended(
        OPENING, {key(1): JobState.SUCCEEDED, key(2): JobState.FAILED, key(3): JobState.SUCCEEDED}
    )
    requests.finish_request("req-1")
    assert requests.claim_announcement("req-1", lease_until=0.0) is not None  # expired at once

    assert requests.claim_announcement("req-1", lease_until=2_000_000.0) is not None


def test_the_finisher_holds_the_announcement_from_the_finishing_write(
    requests: RequestLedger,
) -> None:
    """GIVEN a request finished with the announcement's lease in the same write
    WHEN another caller claims the announcement THEN it is refused while the lease lives, and
    gets it once the lease passed (the finisher died before announcing)."""
    requests.count_ended(
        OPENING,
        {key(1): JobState.SUCCEEDED, key(2): JobState.SUCCEEDED, key(3): JobState.SUCCEEDED},
    )
    assert requests.finish_request("req-1", announce_until=2_000_000_000.0) is not None

    assert requests.claim_announcement("req-1", lease_until=2_000_000_000.0) is None
    requests.count_ended(OPENING, {})  # a replay of the last message changes nothing
    assert requests.claim_announcement("req-1", lease_until=2_000_000_000.0) is None


def test_a_finishers_expired_announcement_lease_is_taken_over(requests: RequestLedger) -> None:
    requests.count_ended(
        OPENING,
        {key(1): JobState.SUCCEEDED, key(2): JobState.SUCCEEDED, key(3): JobState.SUCCEEDED},
    )
    assert requests.finish_request("req-1", announce_until=0.0) is not None  # past at once

    assert requests.claim_announcement("req-1", lease_until=2_000_000_000.0) is not None


def test_an_unfinished_request_is_never_announced(requests: RequestLedger) -> None:
    """GIVEN a request with targets still pending WHEN its announcement is claimed THEN no."""
    requests.count_ended(OPENING, {key(1): JobState.SUCCEEDED})

    assert requests.claim_announcement("req-1", lease_until=2_000_000.0) is None
