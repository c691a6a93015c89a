"""handler.dispatch.Dispatcher: real plugins, fake target-account clients, no real sleeping.

A fake session cache hands each plugin a fake client per account that records its calls and
fails the way the test says; the rate limiter's sleep is a no-op and ``no_sleep`` (conftest)
does the same for tenacity's backoff.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handler.clients import TargetClientKey
from handler.deadline import Deadline
from handler.dispatch import Dispatcher
from handler.durations import CallDurations
from handler.envelope import Envelope, parse_message
from handler.exceptions import (
    DeadlineExceededError,
    JobBusyError,
    LaneStoppedError,
    NotStartedError,
    PermanentError,
    QuotaExceededError,
    RetryableError,
    TaskFailedError,
    ThrottledError,
    TransientError,
)
from handler.execute import CallRunner
from handler.ledger import Claim, Ending, JobState, Ledger
from handler.ledger_memory import InMemoryLedger
from handler.outcome import JobOutcome, Result
from handler.ratelimit import RateLimiter
from handler.requests import RequestView
from handler.telemetry import BatchMetrics
from tasks.base import Job

ACCOUNT_A = "111111111111"
ACCOUNT_B = "222222222222"
ACCOUNT_C = "333333333333"
DIST_1 = "E2QWRUHEXAMPLE"
DIST_2 = "E1B2C3D4EXAMPLE"
INSTANCE = "i-0123456789abcdef0"


def client_error(code: str, status: int, operation: str) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": code},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, operation)


ERRORS: Mapping[str, tuple[str, int]] = {
    "throttled": ("Throttling", 400),
    "missing": ("NoSuchDistribution", 404),
    "server": ("InternalError", 500),
    "quota": ("TooManyInvalidationsInProgress", 400),
}


@dataclass
class FakeAccountClient:
    """CloudFront and SSM of one target account: records calls, fails on request."""

    account: str
    failures: Mapping[str, str]  # resource (distribution id / document) -> ERRORS key
    calls: list[str] = field(default_factory=list)

    def _maybe_fail(self, resource: str, operation: str) -> None:
        self.calls.append(resource)
        if resource in self.failures:
            raise client_error(*ERRORS[self.failures[resource]], operation)

    def create_invalidation(self, DistributionId: str, InvalidationBatch: Any) -> Any:  # noqa: N803
        self._maybe_fail(DistributionId, "CreateInvalidation")
        return {"Invalidation": {"Id": f"I-{self.account}-{DistributionId}", "Status": "Done"}}

    def send_command(self, DocumentName: str, **_: Any) -> Any:  # noqa: N803
        self._maybe_fail(DocumentName, "SendCommand")
        return {"Command": {"CommandId": f"C-{self.account}", "Status": "Pending"}}

    def get_caller_identity(self) -> Any:
        self._maybe_fail("GetCallerIdentity", "GetCallerIdentity")
        return {"Account": self.account}


class FakeClients:
    """Stands in for TargetClients: one fake client per account, every request recorded."""

    def __init__(self, failures: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self.failures = failures or {}
        self.accounts: dict[str, FakeAccountClient] = {}
        self.requests: list[dict[str, Any]] = []

    def client(self, key: TargetClientKey, *, request_id: str) -> FakeAccountClient:
        self.requests.append(
            {
                "service": key.service,
                "account": key.account,
                "region": key.region,
                "request_id": request_id,
                "max_attempts": key.max_attempts,
            }
        )
        return self.accounts.setdefault(
            key.account, FakeAccountClient(key.account, self.failures.get(key.account, {}))
        )

    def calls(self, account: str) -> list[str]:
        return self.accounts[account].calls if account in self.accounts else []

    def services(self) -> set[str]:
        return {r["service"] for r in self.requests}


FakeSessions = FakeClients


def invalidation(
    request_id: str,
    account: str = ACCOUNT_A,
    distribution_id: str = DIST_1,
    paths: Sequence[str] = ("/index.html",),
    *,
    dry_run: bool = False,
    index: int = 0,
) -> Job:
    return Job(
        key=f"cf/{request_id}/{account}/{distribution_id}/{dry_run}",
        request_id=request_id,
        task="cloudfront.invalidate",
        account=account,
        region="us-east-1",
        params={"distribution_id": distribution_id, "paths": list(paths)},
        message_id=f"msg-{request_id}",
        index=index,
        dry_run=dry_run,
    )


def command(
    request_id: str,
    account: str = ACCOUNT_A,
    document: str = "AWS-RunShellScript",
    *,
    dry_run: bool = False,
) -> Job:
    return Job(
        key=f"ssm/{request_id}/{account}/{document}/{dry_run}",
        request_id=request_id,
        task="ssm.send_command",
        account=account,
        region="eu-west-1",
        params={"document_name": document, "instance_ids": [INSTANCE]},
        message_id=f"msg-{request_id}",
        index=0,
        dry_run=dry_run,
    )


def dispatch(
    clients: FakeClients,
    jobs: Sequence[Job],
    *,
    remaining_ms: int = 600_000,
    ledger: Ledger | None = None,
    max_workers: int = 4,
    views: Mapping[str, RequestView] | None = None,
) -> dict[str, JobOutcome]:
    runner = CallRunner(clients, RateLimiter(sleep=lambda _seconds: None), CallDurations())
    dispatcher = Dispatcher(ledger or InMemoryLedger(), runner, max_workers=max_workers)
    deadline = Deadline(remaining_ms=lambda: remaining_ms)
    return dispatcher.run(list(jobs), views or {}, deadline, BatchMetrics())


def states(outcomes: Mapping[str, JobOutcome]) -> dict[str, Result]:
    return {key: outcome.result for key, outcome in outcomes.items()}


# --- behaviour ---------------------------------------------------------------------------------


def test_dry_run_jobs_are_a_pre_flight_without_the_tasks_call() -> None:
    """GIVEN dry-run jobs of both plugins
    WHEN they are dispatched
    THEN each ends DRY_RUN "would run" (resource id 'dry-run'): a session was opened in its
    account (the role is assumable) and used once in its region (GetCallerIdentity), but
    neither CreateInvalidation nor SendCommand was made."""
    clients = FakeClients()
    jobs = [invalidation("req-1", dry_run=True), command("req-2", ACCOUNT_B, dry_run=True)]

    outcomes = dispatch(clients, jobs)

    assert {
        k: (o.result, o.task_result.resource_id if o.task_result else None)
        for k, o in outcomes.items()
    } == {job.key: (Result.DRY_RUN, "dry-run") for job in jobs}
    assert clients.services() == {"sts"}
    assert clients.calls(ACCOUNT_A) == clients.calls(ACCOUNT_B) == ["GetCallerIdentity"]


def test_a_coalesced_call_that_succeeds_settles_all_its_jobs_with_its_result() -> None:
    """GIVEN two requests invalidating the same distribution
    WHEN they are dispatched
    THEN CloudFront is called once and both jobs succeed with the same invalidation id."""
    sessions = FakeSessions()
    jobs = [invalidation("req-1", paths=["/a"]), invalidation("req-2", paths=["/b"])]

    outcomes = dispatch(sessions, jobs)

    assert sessions.calls(ACCOUNT_A) == [DIST_1]
    assert {o.task_result.resource_id for o in outcomes.values() if o.task_result} == {
        f"I-{ACCOUNT_A}-{DIST_1}"
    }
    assert set(states(outcomes).values()) == {Result.SUCCEEDED}


def test_a_permanent_error_fails_every_job_of_its_call_without_retry() -> None:
    """GIVEN two requests coalesced into one invalidation of a distribution that does not exist
    WHEN they are dispatched
    THEN CloudFront is called once and both jobs FAIL with a TaskFailedError."""
    sessions = FakeSessions({ACCOUNT_A: {DIST_1: "missing"}})
    jobs = [invalidation("req-1", paths=["/a"]), invalidation("req-2", paths=["/b"])]

    outcomes = dispatch(sessions, jobs)

    assert sessions.calls(ACCOUNT_A) == [DIST_1]
    assert states(outcomes) == {job.key: Result.FAILED for job in jobs}
    assert all(isinstance(o.error, TaskFailedError) for o in outcomes.values())


def test_a_call_that_stays_throttled_sends_the_rest_of_its_lane_back_uncalled(
    no_sleep: None,
) -> None:
    """GIVEN account A with two distributions (one CloudFront rate lane) where the first is
    always throttled, and account B with a healthy distribution
    WHEN the jobs are dispatched
    THEN the throttled call is retried, then both jobs of account A are RETRY - the second one
    not started (its lane stopped because of the throttle) - the second distribution is never
    called,
    AND account B's lane is not affected."""
    sessions = FakeSessions({ACCOUNT_A: {DIST_1: "throttled"}})
    first = invalidation("req-a", ACCOUNT_A, DIST_1)
    second = invalidation("req-b", ACCOUNT_A, DIST_2)
    elsewhere = invalidation("req-c", ACCOUNT_B, DIST_1)

    outcomes = dispatch(sessions, [first, second, elsewhere])

    assert states(outcomes) == {
        first.key: Result.RETRY,
        second.key: Result.RETRY,
        elsewhere.key: Result.SUCCEEDED,
    }
    stopped = outcomes[second.key].error
    assert isinstance(stopped, LaneStoppedError)
    assert isinstance(stopped.cause, ThrottledError)
    assert not outcomes[second.key].started  # uncalled: it uses no attempt
    assert DIST_2 not in sessions.calls(ACCOUNT_A)
    assert len(sessions.calls(ACCOUNT_A)) > 1  # the throttled call itself was retried


def test_a_full_quota_defers_only_its_call_and_the_lane_goes_on() -> None:
    """GIVEN account A's first distribution has too many invalidations in progress
    WHEN two distributions of account A are dispatched
    THEN the first job is RETRY with QuotaExceededError and the second still succeeds."""
    sessions = FakeSessions({ACCOUNT_A: {DIST_1: "quota"}})
    first = invalidation("req-a", ACCOUNT_A, DIST_1)
    second = invalidation("req-b", ACCOUNT_A, DIST_2)

    outcomes = dispatch(sessions, [first, second])

    assert states(outcomes) == {first.key: Result.RETRY, second.key: Result.SUCCEEDED}
    assert isinstance(outcomes[first.key].error, QuotaExceededError)


def test_a_server_error_of_a_non_idempotent_call_is_not_repeated() -> None:
    """GIVEN SendCommand answering 500 (it may or may not have run)
    WHEN an ssm.send_command job is dispatched
    THEN SendCommand is called exactly once and the job is RETRY with a TransientError."""
    sessions = FakeSessions({ACCOUNT_A: {"AWS-RunShellScript": "server"}})
    job = command("req-1")

    outcomes = dispatch(sessions, [job])

    assert sessions.calls(ACCOUNT_A) == ["AWS-RunShellScript"]
    assert outcomes[job.key].result is Result.RETRY
    assert isinstance(outcomes[job.key].error, TransientError)


def test_a_server_error_of_an_idempotent_call_is_retried_in_function(no_sleep: None) -> None:
    """GIVEN CreateInvalidation (idempotent) always answering 500
    WHEN a cloudfront job is dispatched
    THEN the call is attempted more than once before the job is RETRY."""
    sessions = FakeSessions({ACCOUNT_A: {DIST_1: "server"}})
    job = invalidation("req-1")

    outcomes = dispatch(sessions, [job])

    assert len(sessions.calls(ACCOUNT_A)) > 1
    assert outcomes[job.key].result is Result.RETRY


def test_clients_are_requested_in_the_target_with_botocore_retries_only_if_idempotent() -> None:
    """GIVEN one cloudfront job (idempotent) and one ssm job (not idempotent)
    WHEN they are dispatched
    THEN each client is requested in its job's account and region, naming its request id,
    with max_attempts 2 for CloudFront and 1 for SSM (no botocore retry of SendCommand)."""
    sessions = FakeSessions()

    dispatch(sessions, [invalidation("req-cf", ACCOUNT_A), command("req-ssm", ACCOUNT_B)])

    assert sorted(sessions.requests, key=lambda r: r["service"]) == [
        {
            "service": "cloudfront",
            "account": ACCOUNT_A,
            "region": "us-east-1",
            "request_id": "req-cf",
            "max_attempts": 2,
        },
        {
            "service": "ssm",
            "account": ACCOUNT_B,
            "region": "eu-west-1",
            "request_id": "req-ssm",
            "max_attempts": 1,
        },
    ]


def test_calls_are_not_started_without_time_to_finish_them() -> None:
    """GIVEN a deadline with 3.5 s left (0.5 s after the 3 s safety margin, less than a call)
    WHEN jobs of both plugins are dispatched
    THEN every job is RETRY with DeadlineExceededError and no client is even requested."""
    sessions = FakeSessions()
    jobs = [invalidation("req-1"), command("req-2", ACCOUNT_B)]

    outcomes = dispatch(sessions, jobs, remaining_ms=3_500)

    assert states(outcomes) == {job.key: Result.RETRY for job in jobs}
    assert all(isinstance(o.error, DeadlineExceededError) for o in outcomes.values())
    assert sessions.requests == []


# --- blast-radius controls ----------------------------------------------------------------------


def test_max_errors_of_one_request_does_not_hold_back_another_requests_job() -> None:
    """GIVEN request A (max_errors=0) whose first distribution is missing and whose second is
    shared with request B (no max_errors), in the same account (one lane, in order)
    WHEN they are dispatched
    THEN A's second job is held back (not run) but B's job still succeeds."""
    clients = FakeClients({ACCOUNT_A: {DIST_2: "missing"}})
    a_missing = invalidation("req-a", ACCOUNT_A, DIST_2, index=0)
    a_shared = invalidation("req-a", ACCOUNT_A, DIST_1, index=1)
    b_shared = invalidation("req-b", ACCOUNT_A, DIST_1, paths=["/b.html"])
    view = RequestView(None, envelope_of("req-a", '{"max_errors": 0}', targets=2))

    outcomes = dispatch(
        clients, [a_missing, a_shared, b_shared], views={"req-a": view}, max_workers=1
    )

    assert outcomes[a_missing.key].result is Result.FAILED
    assert outcomes[a_shared.key].result is Result.NOT_RUN
    assert outcomes[b_shared.key].result is Result.SUCCEEDED


def envelope_of(request_id: str, options: str, *, targets: int) -> Envelope:
    """An envelope of ``request_id`` with ``targets`` targets and these options."""
    body = {
        "version": 1,
        "task": "cloudfront.invalidate",
        "request_id": request_id,
        "targets": [
            {"account": f"{n + 1:012d}", "params": {"distribution_id": DIST_1}}
            for n in range(targets)
        ],
        "params": {"paths": ["/x"]},
        "options": json.loads(options),
    }
    return parse_message(json.dumps(body), message_id="m", default_region="us-east-1")


# --- the ledger --------------------------------------------------------------------------------


def test_a_job_the_ledger_holds_as_succeeded_is_replayed_without_a_call() -> None:
    """GIVEN a job that already succeeded (recorded in the ledger by an earlier dispatch)
    WHEN the same job is dispatched again
    THEN it succeeds with the stored invalidation id and CloudFront is not called again."""
    ledger = InMemoryLedger()
    job = invalidation("req-1")
    dispatch(FakeSessions(), [job], ledger=ledger)
    again = FakeSessions()

    outcomes = dispatch(again, [job], ledger=ledger)

    replayed = outcomes[job.key]
    assert replayed.result is Result.SUCCEEDED
    assert replayed.task_result is not None
    assert replayed.task_result.resource_id == f"I-{ACCOUNT_A}-{DIST_1}"
    assert again.requests == []


def test_a_job_locked_by_another_invocation_is_retried_later_without_a_call() -> None:
    """GIVEN a job whose ledger lock another invocation holds
    WHEN the job is dispatched
    THEN it is RETRY with JobBusyError and no client is requested."""
    ledger = InMemoryLedger()
    job = invalidation("req-1")
    ledger.claim([job], lock_until=time.time() + 900)
    sessions = FakeSessions()

    outcomes = dispatch(sessions, [job], ledger=ledger)

    assert outcomes[job.key].result is Result.RETRY
    assert isinstance(outcomes[job.key].error, JobBusyError)
    assert sessions.requests == []


def test_every_outcome_is_recorded_in_the_ledger() -> None:
    """GIVEN one job that succeeds and one whose distribution is missing
    WHEN they are dispatched
    THEN the ledger holds them as succeeded (with the invalidation id) and failing (its dead
    letter is written next, by the settle step)."""
    ledger = InMemoryLedger()
    good = invalidation("req-1", ACCOUNT_A)
    bad = invalidation("req-1", ACCOUNT_B)

    dispatch(FakeSessions({ACCOUNT_B: {DIST_1: "missing"}}), [good, bad], ledger=ledger)

    records = {r.job_key: (r.state, r.result_id) for r in ledger.jobs("req-1")}
    assert records == {
        good.key: (JobState.SUCCEEDED, f"I-{ACCOUNT_A}-{DIST_1}"),
        bad.key: (JobState.FAILING, None),
    }


class CountingLedger(InMemoryLedger):
    """Counts the ledger writes (one per ``claim``, ``finish``, ``release``: one transaction
    each, up to 100 items) and their sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.claims: list[int] = []
        self.finishes: list[int] = []
        self.releases: list[int] = []

    def claim(self, jobs: Sequence[Job], **kwargs: Any) -> list[Claim]:
        self.claims.append(len(jobs))
        return super().claim(jobs, **kwargs)

    def finish(self, endings: Sequence[Ending]) -> list[bool]:
        self.finishes.append(len(endings))
        return super().finish(endings)

    def release(self, claims: Sequence[Claim]) -> None:
        self.releases.append(len(claims))
        super().release(claims)


def test_a_plain_lane_claims_its_calls_in_one_write() -> None:
    """GIVEN three invalidations of one account (one lane of three calls) of a plain request
    WHEN they are dispatched
    THEN the three jobs are claimed in one ledger write (not one per call), nothing is
    released, and each succeeded."""
    ledger = CountingLedger()
    jobs = [invalidation("req-1", ACCOUNT_A, f"E{n}EXAMPLE", index=n) for n in range(3)]
    view = RequestView(None, envelope_of("req-1", "{}", targets=3))

    outcomes = dispatch(FakeSessions(), jobs, ledger=ledger, views={"req-1": view})

    assert (ledger.claims, ledger.releases) == ([3], [])
    assert states(outcomes) == {job.key: Result.SUCCEEDED for job in jobs}


def test_a_lane_the_batch_reads_claims_call_by_call() -> None:
    """GIVEN the same lane for a request with max_errors WHEN it is dispatched
    THEN each call claims its job just before it starts (a failure may hold back the next)."""
    ledger = CountingLedger()
    jobs = [invalidation("req-1", ACCOUNT_A, f"E{n}EXAMPLE", index=n) for n in range(3)]
    view = RequestView(None, envelope_of("req-1", '{"max_errors": 1}', targets=3))

    dispatch(FakeSessions(), jobs, ledger=ledger, views={"req-1": view})

    assert ledger.claims == [1, 1, 1]


def test_a_stopped_lane_releases_the_claims_it_took_ahead(no_sleep: None) -> None:
    """GIVEN a lane of three invalidations claimed ahead, whose first call stays throttled
    WHEN it is dispatched
    THEN the two calls that never started have their claims released - RETRY, no attempt used,
    unlocked - so the next delivery claims them fresh and runs them at once (not "busy" until
    the lock expires, not recovered as if they might have run)."""
    ledger = CountingLedger()
    jobs = [invalidation("req-1", ACCOUNT_A, f"E{n}EXAMPLE", index=n) for n in range(3)]
    throttled = FakeSessions({ACCOUNT_A: {"E0EXAMPLE": "throttled"}})

    first = dispatch(throttled, jobs, ledger=ledger)

    assert states(first) == {job.key: Result.RETRY for job in jobs}
    assert ledger.releases == [2]
    released = {r.job_key: r for r in ledger.jobs("req-1") if r.job_key != jobs[0].key}
    assert {(r.state, r.attempts, r.lock_expires) for r in released.values()} == {
        (JobState.RETRY, 0, None)
    }
    again = dispatch(FakeSessions(), jobs, ledger=ledger)
    assert states(again) == {job.key: Result.SUCCEEDED for job in jobs}


def test_ends_nothing_in_the_batch_reads_are_written_in_one_write_per_lane() -> None:
    """GIVEN three invalidations of one account (one lane: three calls, one after another) of a
    request without max_errors, canary or rollout
    WHEN they are dispatched
    THEN their three ends are written together (one ledger write of 3, not three of 1), and
    each job succeeded and is recorded so."""
    ledger = CountingLedger()
    jobs = [invalidation("req-1", ACCOUNT_A, f"E{n}EXAMPLE", index=n) for n in range(3)]
    view = RequestView(None, envelope_of("req-1", "{}", targets=3))

    outcomes = dispatch(FakeSessions(), jobs, ledger=ledger, views={"req-1": view})

    assert ledger.finishes == [3]
    assert states(outcomes) == {job.key: Result.SUCCEEDED for job in jobs}
    assert {r.state for r in ledger.jobs("req-1")} == {JobState.SUCCEEDED}


def test_ends_the_batch_reads_are_written_call_by_call() -> None:
    """GIVEN the same lane, for a request with max_errors (a failure must hold back the rest of
    the batch as soon as it is recorded)
    WHEN it is dispatched
    THEN each call's end is written on its own, before the next call starts."""
    ledger = CountingLedger()
    jobs = [invalidation("req-1", ACCOUNT_A, f"E{n}EXAMPLE", index=n) for n in range(3)]
    view = RequestView(None, envelope_of("req-1", '{"max_errors": 1}', targets=3))

    dispatch(FakeSessions(), jobs, ledger=ledger, views={"req-1": view})

    assert ledger.finishes == [1, 1, 1]


class UnwritableEnds(InMemoryLedger):
    def finish(self, endings: Sequence[Ending]) -> list[bool]:
        raise client_error("InternalServerError", 500, "TransactWriteItems")


def test_deferred_ends_that_cannot_be_written_have_not_ended() -> None:
    """GIVEN a lane of three successful calls whose ends the ledger then fails to write
    WHEN they are dispatched
    THEN every job is RETRY with the reason (succeeded but not recorded), never SUCCEEDED:
    the next delivery recovers them (the identical call, CallerReference and all)."""
    jobs = [invalidation("req-1", ACCOUNT_A, f"E{n}EXAMPLE", index=n) for n in range(3)]

    outcomes = dispatch(FakeSessions(), jobs, ledger=UnwritableEnds())

    assert states(outcomes) == {job.key: Result.RETRY for job in jobs}
    assert all(
        isinstance(o.error, TransientError) and "not recorded in the ledger" in o.error.reason
        for o in outcomes.values()
    )


class BrokenLedger(InMemoryLedger):
    def claim(self, jobs: Sequence[Job], **_: Any) -> Any:
        raise client_error("InternalServerError", 500, "TransactWriteItems")


def test_a_ledger_outage_sends_jobs_back_for_retry_without_running_them() -> None:
    """GIVEN a ledger whose claims fail with a DynamoDB 500
    WHEN jobs are dispatched
    THEN each is RETRY, not started (no attempt used), and nothing runs (no claim, no call)."""
    sessions = FakeSessions()
    jobs = [invalidation("req-1"), command("req-2")]

    outcomes = dispatch(sessions, jobs, ledger=BrokenLedger())

    assert states(outcomes) == {job.key: Result.RETRY for job in jobs}
    assert all(isinstance(o.error, NotStartedError) and not o.started for o in outcomes.values())
    assert sessions.requests == []


# --- every job, one outcome --------------------------------------------------------------------

job_strategy = st.builds(
    lambda kind, request, account, resource, dry: (
        invalidation(request, account, resource, dry_run=dry)
        if kind == "cf"
        else command(request, account, "AWS-RunShellScript", dry_run=dry)
    ),
    st.sampled_from(["cf", "ssm"]),
    st.sampled_from(["req-1", "req-2", "req-3"]),
    st.sampled_from([ACCOUNT_A, ACCOUNT_B, ACCOUNT_C]),
    st.sampled_from([DIST_1, DIST_2]),
    st.booleans(),
)
options_strategy = st.sampled_from(
    ["{}", '{"canary": true}', '{"max_errors": 0}', '{"max_errors": 1}']
)
failure_strategy = st.dictionaries(
    st.sampled_from([ACCOUNT_A, ACCOUNT_B, ACCOUNT_C]),
    st.dictionaries(
        st.sampled_from([DIST_1, DIST_2, "AWS-RunShellScript"]), st.sampled_from(sorted(ERRORS))
    ),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(job_strategy, max_size=12), failure_strategy, options_strategy)
def test_every_job_gets_exactly_one_consistent_outcome(
    no_sleep: None, jobs: list[Job], failures: dict[str, dict[str, str]], options: str
) -> None:
    """GIVEN any mix of live, dry-run, canary, gated and max_errors jobs over three accounts,
    with any failures injected
    WHEN they are dispatched
    THEN there is exactly one outcome per job key, for that job,
    AND its state agrees with it: SUCCEEDED has a result, FAILED a permanent error, RETRY a
    retryable one."""
    unique = list({job.key: job for job in jobs}.values())
    views = {
        r: RequestView(None, envelope_of(r, options, targets=3))
        for r in ("req-1", "req-2", "req-3")
    }

    outcomes = dispatch(FakeClients(failures), unique, views=views)

    assert sorted(outcomes) == sorted(job.key for job in unique)
    for key, outcome in outcomes.items():
        assert outcome.job.key == key
        if outcome.result in (Result.SUCCEEDED, Result.DRY_RUN):
            assert outcome.task_result is not None or outcome.error is not None
        elif outcome.result in (Result.FAILED, Result.NOT_RUN):
            assert isinstance(outcome.error, PermanentError)
        else:
            assert outcome.result is Result.RETRY
            assert isinstance(outcome.error, RetryableError)


@pytest.mark.parametrize("max_workers", [1, 4])
def test_outcomes_do_not_depend_on_the_pool_size(max_workers: int) -> None:
    """GIVEN jobs over three accounts, one with a missing distribution
    WHEN they are dispatched with one worker or with four
    THEN the outcomes are the same: only the missing distribution's job fails."""
    sessions = FakeSessions({ACCOUNT_B: {DIST_1: "missing"}})
    jobs = [invalidation("req-1", account) for account in (ACCOUNT_A, ACCOUNT_B, ACCOUNT_C)]

    outcomes = dispatch(sessions, jobs, max_workers=max_workers)

    assert states(outcomes) == {
        jobs[0].key: Result.SUCCEEDED,
        jobs[1].key: Result.FAILED,
        jobs[2].key: Result.SUCCEEDED,
    }
