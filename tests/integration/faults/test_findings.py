"""Bugs this suite found, kept as regression tests.

Each test failed on the code up to 44f2b6c (then marked ``xfail(strict=True)`` with the bug) and
passes since the fixes in 7f7bc4e and 6ab03c2; each docstring names the bug it guards against.
"""

from __future__ import annotations

import json

import pytest

from fanout.emulator.proxy import Request, deny_assume_role, lose_response, throttle, where
from tests.integration.faults.conftest import ACCOUNTS, Scenario
from tests.integration.faults.handlers import REDELIVERED
from tests.integration.faults.harness import cf_body, new_id
from tests.integration.faults.test_scenarios import assert_promise, mixed_bodies

pytestmark = pytest.mark.integration

A, B, C = ACCOUNTS


def test_a_redelivered_failure_is_dead_lettered_once(scenario: Scenario) -> None:
    """GIVEN a poison message and a job whose account refuses the worker, each delivered twice
    (same message id: the first acknowledgement was lost)
    WHEN the worker handles both deliveries
    THEN each is dead-lettered once: a second dead letter is a second end.

    Bug (fixed in 6ab03c2): a FAILED ledger record was claimable and dead letters were not
    remembered, so every delivery re-ran the failed job and dead-lettered it again (with a
    message published twice during a throttling storm: four to six dead letters per job)."""
    scenario.proxy.add(deny_assume_role([C]))
    [dist] = scenario.distributions(C, 1)
    scenario.workload.publish(["not json {", cf_body(new_id("cf"), [(C, dist)], ["/denied"])])

    scenario.poll(handler_factory=REDELIVERED)
    figures = scenario.verify("R1 redelivered failure: one dead letter")

    assert figures.dead_lettered == figures.jobs == 2
    assert_promise(figures)


def test_an_invalidation_with_a_lost_answer_is_not_issued_again(scenario: Scenario) -> None:
    """GIVEN two messages invalidating one distribution, coalesced into one CreateInvalidation
    whose every answer is lost (it ran; the worker sees 503s) until the worker defers both
    WHEN the deferred copies come back one per batch
    THEN CloudFront holds one invalidation per job.

    Bug (fixed in 7f7bc4e): the CallerReference of a coalesced call depends on which jobs share
    the batch; the retried jobs got new references, so real CloudFront would have created a
    second invalidation of the same paths (a crash after the call had the same effect)."""
    [dist] = scenario.distributions(A, 1)
    first_path, second_path = f"/{new_id('one')}.html", f"/{new_id('two')}.html"
    scenario.workload.publish(
        [cf_body(new_id("cf"), [(A, dist)], [p]) for p in (first_path, second_path)]
    )
    scenario.proxy.add(lose_response("answers lost", where(operations=["CreateInvalidation"])))
    scenario.poll(once=True)  # every try of that invocation ran, and its answer was lost
    assert scenario.proxy.fired("answers lost") > 1
    scenario.proxy.reset()

    scenario.poll(batch_size=1)
    figures = scenario.verify("R2 lost answer, other batches")

    assert figures.succeeded == figures.jobs == 2
    assert_promise(figures)


def test_targets_never_started_are_not_dead_lettered(scenario: Scenario) -> None:
    """GIVEN one message with 12 targets in one account, CloudFront at 1 call/s there, a 6 s
    function timeout (about 3 calls per invocation) and MAX_ATTEMPTS=2
    WHEN the worker runs until the queue is empty
    THEN every target succeeds: none was ever throttled or failed, they only waited.

    Bug (fixed in 7f7bc4e): a target deferred for lack of time counted an attempt; the same
    targets stayed last in their lane and were dead-lettered "after 2 attempts" untried."""
    scenario.configure(MAX_ATTEMPTS="2", RATE_LIMITS="cloudfront:CreateInvalidation=1/1")
    dists = scenario.distributions(A, 12)
    body = {
        "version": 1,
        "task": "cloudfront.invalidate",
        "request_id": new_id("wide"),
        "targets": [{"account": A, "params": {"distribution_id": d}} for d in dists],
        "params": {"paths": ["/peak.html"]},
    }
    scenario.workload.publish([json.dumps(body)])

    scenario.poll(function_timeout_s=6)
    figures = scenario.verify("R3 never started, not dead-lettered")

    assert figures.succeeded == figures.jobs == 12, figures.reasons
    assert_promise(figures)


def test_a_job_whose_outcome_could_not_be_recorded_still_ends_known(scenario: Scenario) -> None:
    """GIVEN the ledger write recording one job's outcome throttled on each of botocore's
    attempts (later writes go through)
    WHEN the worker runs until the queue is empty (the unrecorded job's lock has expired by the
    time its message is back)
    THEN that job ends in a known state too: its record says succeeded, and it ran once.

    Bug (fixed in 7f7bc4e): the failed write was only logged and the message acknowledged: the
    job took effect but stayed in_progress in the ledger (and ``fanout status``) for good."""
    victim: list[str] = []

    def one_jobs_outcome(request: Request) -> bool:
        """A ledger write that records the outcome of the victim job (claims and outcomes
        are both conditional writes; an outcome sets last_token and the job's state)."""
        if request.operation == "UpdateItem":
            updates = [request.json_body]
        elif request.operation == "TransactWriteItems":
            updates = [
                i["Update"] for i in request.json_body.get("TransactItems", []) if "Update" in i
            ]
        else:
            return False
        outcomes = [
            u["Key"]["sk"]["S"]
            for u in updates
            if "last_token = :token" in u.get("UpdateExpression", "")
            and ":state" in u.get("ExpressionAttributeValues", {})
        ]
        if not outcomes:
            return False
        victim[:] = victim or [outcomes[0]]
        return victim[0] in outcomes

    scenario.proxy.add(throttle("outcome not recorded", one_jobs_outcome, times=3))
    scenario.workload.publish(mixed_bodies(scenario, (A, B), invalidations=2, commands=2))
    scenario.poll(once=True)
    assert scenario.proxy.fired("outcome not recorded") == 3

    scenario.locks_expire()
    scenario.poll()
    figures = scenario.verify("R4 outcome not recorded")

    assert figures.succeeded == figures.jobs == 8
    assert_promise(figures)


def test_a_large_partial_failure_is_dead_lettered_with_its_reason(scenario: Scenario) -> None:
    """GIVEN one message (about 120 KB) invalidating 400 long paths on a real distribution and
    on ten that do not exist
    WHEN the worker handles it
    THEN the real one is invalidated and the ten are dead-lettered at once, with the reason.

    Bug (fixed in 7f7bc4e): the partial dead letter repeated the shared params in every failed
    target (about 1.2 MB here), SQS refused it, and the record was retried until SQS's redrive
    moved it to the DLQ without a reason."""
    [real] = scenario.distributions(A, 1)
    paths = [f"/{n:04d}/{'x' * 290}" for n in range(400)]
    targets = [(A, real)] + [(A, f"EMISSING{n:06d}") for n in range(10)]
    scenario.workload.publish([cf_body(new_id("big"), targets, paths)])

    stats = scenario.poll(once=True)
    figures = scenario.verify("R5 large partial failure")

    assert stats.failures_reported == 0, "the record should not wait for SQS's redrive"
    assert (figures.succeeded, figures.dead_lettered) == (1, 10)
    assert_promise(figures)
