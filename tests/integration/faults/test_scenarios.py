"""The promise under faults: every job ends exactly once (succeeded, or dead-lettered with a
reason), and no side effect happens twice. See ``harness`` for how each is counted."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from fanout import demo
from fanout.emulator.proxy import (
    Forwarded,
    Request,
    after_effect,
    delay,
    deny_assume_role,
    lose_response,
    server_error,
    throttle,
    where,
)
from fanout.publish import bodies_from_document, build_bodies
from tests.integration.faults.conftest import ACCOUNTS, Scenario
from tests.integration.faults.handlers import REDELIVERED
from tests.integration.faults.harness import (
    Figures,
    cf_body,
    covered,
    fake_instances,
    new_id,
    ssm_body,
)

pytestmark = pytest.mark.integration

A, B, C = ACCOUNTS


def assert_promise(figures: Figures) -> None:
    assert (figures.duplicated, figures.lost, figures.ended_twice) == (0, 0, 0), figures.explain()
    assert not figures.problems, figures.explain()


def mixed_bodies(
    scenario: Scenario, accounts: tuple[str, ...], *, invalidations: int, commands: int
) -> list[str]:
    """``invalidations`` messages over two fresh distributions per account (so that a batch
    coalesces them) and ``commands`` SSM messages, every message on every account."""
    dists = {a: scenario.distributions(a, 2) for a in accounts}
    bodies = [
        cf_body(
            new_id("cf"),
            [(a, dists[a][n % 2]) for a in accounts],
            [f"/{new_id('page')}.html"],
        )
        for n in range(invalidations)
    ]
    bodies += [
        ssm_body(new_id("ssm"), [(a, fake_instances(1)) for a in accounts]) for _ in range(commands)
    ]
    return bodies


def test_every_message_twice_and_two_pollers_at_once(scenario: Scenario) -> None:
    """GIVEN every body published twice (the publisher retried), and two workers - another
    process and this one - polling the queue at the same time
    WHEN both run until the queue is empty
    THEN each job ran once: one command per instance, one invalidation reference per job."""
    bodies = mixed_bodies(scenario, (A, B), invalidations=6, commands=4)
    scenario.workload.publish(bodies, copies=2)

    other = scenario.spawn(wait_until_polling=True)
    scenario.poll()
    assert other.wait(timeout=90) == 0
    figures = scenario.verify("1 every message twice, two pollers")

    assert_promise(figures)
    assert figures.succeeded == figures.jobs == 20
    assert scenario.worker_stats(other)["records"] > 0, "the second worker took no part"


def test_assume_role_denied_in_one_account_and_flaky_in_another(scenario: Scenario) -> None:
    """GIVEN account C's role refuses the worker (AccessDenied) and account A's first seven
    AssumeRole calls fail (503, 500, Throttling: transient), from whichever lane asks first
    WHEN the worker runs messages targeting A, B and C
    THEN C's jobs are dead-lettered with the AccessDenied reason, all others succeed."""
    scenario.proxy.add(
        deny_assume_role([C]),
        server_error("sts 503", where(operations=["AssumeRole"], accounts=[A]), times=3),
        server_error(
            "sts 500", where(operations=["AssumeRole"], accounts=[A]), status=500, times=2
        ),
        throttle("sts throttled", where(operations=["AssumeRole"], accounts=[A]), times=2),
    )
    bodies = mixed_bodies(scenario, (A, B, C), invalidations=4, commands=3)
    scenario.workload.publish(bodies)

    scenario.poll()
    figures = scenario.verify("2 AssumeRole denied / flaky")

    assert_promise(figures)
    expected = {A: "succeeded", B: "succeeded", C: "dead-lettered"}
    units = scenario.workload.units
    assert figures.states == {key: expected[str(u.account)] for key, u in units.items()}
    assert (figures.succeeded, figures.dead_lettered) == (14, 7)
    for reasons in figures.reasons.values():
        assert all("AccessDenied" in r and f"arn:aws:iam::{C}:role/" in r for r in reasons)
    assert scenario.proxy.fired("sts 503") == 3


def test_throttling_storms_and_5xx_bursts(scenario: Scenario) -> None:
    """GIVEN CreateInvalidation and SendCommand throttled at random in A, 5xx bursts in B
    (before the call ran, and after: the response lost), and a throttling storm on
    CreateInvalidation in C that never ends; at most 3 attempts per target
    WHEN the worker runs until the queue is empty
    THEN everything succeeds except C's invalidations, dead-lettered after 3 attempts with the
    last error, and no command or invalidation happened twice."""
    # Quotas above the emulator's speed: the adaptive buckets still halve on every throttle.
    scenario.configure(
        MAX_ATTEMPTS="3", RATE_LIMITS="cloudfront:CreateInvalidation=20/4,ssm:SendCommand=20/4"
    )
    cf, ssm = ["CreateInvalidation"], ["SendCommand"]
    scenario.proxy.add(
        # At random, but bounded: enough to exhaust the in-function retries of one call once.
        throttle(
            "cf throttled A", where(operations=cf, accounts=[A]), probability=0.5, times=8, seed=1
        ),
        throttle(
            "ssm throttled A", where(operations=ssm, accounts=[A]), probability=0.5, times=5, seed=1
        ),
        server_error("cf 503 B", where(operations=cf, accounts=[B]), times=3),
        lose_response("cf lost B", where(operations=cf, accounts=[B]), status=500, times=1),
        lose_response("ssm lost B", where(operations=ssm, accounts=[B]), times=2),
        server_error("ssm 500 B", where(operations=ssm, accounts=[B]), status=500, times=1),
        throttle("cf storm C", where(operations=cf, accounts=[C])),
    )
    bodies = mixed_bodies(scenario, (A, B, C), invalidations=4, commands=4)
    scenario.workload.publish(bodies)

    scenario.poll(time_limit_s=90)
    figures = scenario.verify("3 throttling storms, 5xx bursts")

    assert_promise(figures)
    units = scenario.workload.units
    storm = {k for k, u in units.items() if u.account == C and u.task == "cloudfront.invalidate"}
    assert {k for k, s in figures.states.items() if s == "dead-lettered"} == storm
    assert (figures.succeeded, figures.dead_lettered) == (20, 4)
    for key in storm:
        [reason] = figures.reasons[key]
        assert "gave up after 3 attempts" in reason
        assert "CreateInvalidation: Throttling: Rate exceeded" in reason
    for rule in ("cf throttled A", "ssm throttled A", "cf 503 B", "ssm lost B", "ssm 500 B"):
        assert scenario.proxy.fired(rule) > 0, rule


def test_function_timeout_in_the_middle_of_a_batch(scenario: Scenario) -> None:
    """GIVEN a batch that needs longer than the function's time (CloudFront at 1 call/s in
    each account, a 7 s function timeout), and one deferral that reaches SQS only after the
    function timed out
    WHEN the worker runs until the queue is empty
    THEN that invocation is stopped hard (its process is killed while the deferral is in
    flight, and its whole batch comes back), a fresh environment takes over (a cold start)
    after each stop, and every job ends once."""
    scenario.configure(RATE_LIMITS="cloudfront:CreateInvalidation=1/1")
    scenario.proxy.add(
        delay("late deferral", where(operations=["SendMessage"]), seconds=6.5, times=1)
    )
    dists = {a: scenario.distributions(a, 5) for a in (A, B)}
    bodies = [
        cf_body(new_id("cf"), [(a, dists[a][n]) for a in (A, B)], [f"/{new_id('t')}.html"])
        for n in range(5)
    ]
    bodies += [ssm_body(new_id("ssm"), [(a, fake_instances(1)) for a in (A, B)]) for _ in range(3)]
    scenario.workload.publish(bodies)

    stats = scenario.poll(function_timeout_s=7)
    figures = scenario.verify("4 function timeout mid-batch")

    assert_promise(figures)
    assert figures.succeeded == figures.jobs == 16
    # The late SendMessage was a deferral: the first invocation ran out of time for some jobs.
    assert scenario.proxy.fired("late deferral") == 1
    # At least the late invocation is stopped; on a loaded machine a later one can be too (its
    # own CPU time runs past the margin), which the promise above must survive as well.
    assert stats.function_timeouts >= 1, "the late invocation should have been stopped"
    assert stats.handler_errors == 0
    assert stats.cold_starts == 1 + stats.function_timeouts, (
        "each invocation after a timeout needs a new environment"
    )


def test_worker_killed_in_the_middle_of_a_batch(scenario: Scenario) -> None:
    """GIVEN a worker process SIGKILLed right after its second SendCommand reached AWS (before
    it heard back: that job ran, unrecorded), with invalidations and commands in flight in
    other lanes
    WHEN a fresh worker runs once the dead one's locks have expired
    THEN every job succeeds once: the unrecorded command is found by its job token instead of
    being sent again, and no invalidation is issued under a second CallerReference."""
    bodies = mixed_bodies(scenario, (A, B), invalidations=4, commands=4)
    scenario.workload.publish(bodies)
    victims: list[subprocess.Popen[bytes]] = []

    def kill(_request: Request, _response: Forwarded) -> None:
        scenario.kill(victims[0])  # before the worker hears back

    rule = after_effect("kill", where(operations=["SendCommand"]), kill, skip=1, times=1)
    scenario.proxy.add(rule)

    victims.append(scenario.spawn(function_timeout_s=20))
    assert victims[0].wait(timeout=60) == -signal.SIGKILL
    scenario.locks_expire()
    scenario.poll()
    figures = scenario.verify("5 worker SIGKILLed mid-batch")

    assert_promise(figures)
    assert figures.succeeded == figures.jobs == 16
    assert scenario.proxy.count("ListCommands") > 0, "the unrecorded command was not looked for"


def poison_bodies(scenario: Scenario) -> dict[str, str]:
    """Bad messages, each a different way to be bad; named for the assertion messages."""
    [dist] = scenario.distributions(A, 1)
    return {
        "not json": "not json {",
        "json, not an object": "[1, 2, 3]",
        "injected role_arn": json.dumps(
            {
                "version": 1,
                "task": "cloudfront.invalidate",
                "targets": [{"account": A, "params": {"distribution_id": dist}}],
                "params": {"paths": ["/x"]},
                "role_arn": f"arn:aws:iam::{A}:role/Admin",
            }
        ),
        "unknown task": json.dumps(
            {"version": 1, "task": "s3.delete_everything", "targets": [{"account": A}]}
        ),
        "account not allowed": cf_body(new_id("cf"), [("999999999999", dist)], ["/x"]),
        "legacy path without /": json.dumps(
            {
                "entries": [
                    {
                        "aws_account_id": A,
                        "cloudfront_distribution_id": dist,
                        "invalidation_path": "no-slash.jpg",
                    }
                ]
            }
        ),
        "no such distribution": cf_body(new_id("cf"), [(A, "EDOESNOTEXIST1")], ["/x"]),
        "bad instance id": ssm_body(new_id("ssm"), [(B, ["not-an-instance"])]),
    }


def test_poison_messages_among_good_ones(scenario: Scenario) -> None:
    """GIVEN batches mixing good messages with messages bad in eight ways (not JSON, not an
    object, an injected role ARN, an unknown task, an account not allowed, an invalid legacy
    path, a distribution that does not exist, an invalid instance id)
    WHEN the worker runs until the queue is empty
    THEN each bad one is dead-lettered once with a one-line reason, every good job succeeds,
    and nothing is retried."""
    good = mixed_bodies(scenario, (A, B), invalidations=4, commands=4)
    poison = poison_bodies(scenario)
    mixed = [body for pair in zip(good, poison.values(), strict=True) for body in pair]
    scenario.workload.publish(mixed)

    stats = scenario.poll()
    figures = scenario.verify("6 poison among good")

    assert_promise(figures)
    assert (figures.succeeded, figures.dead_lettered) == (16, len(poison))
    assert stats.failures_reported == 0
    assert scenario.proxy.count("SendMessage") == len(poison), "dead letters only, no deferral"


def demo_workload(
    scenario: Scenario, accounts: tuple[str, ...]
) -> tuple[list[str], list[str], dict[tuple[str, str], set[str]], dict[str, list[str]]]:
    """``fanout demo``'s workload, rebuilt the way ``fanout.demo`` builds it (its builder is
    private) with the publisher's builders and the demo's own constants, on distributions and
    instances of this test and request ids made unique (the ledger outlives a test).

    Returns the v1 bodies, the other bodies (legacy, poison: no request id of their own), the
    paths expected per (account, distribution) and the instances expected to run the command.
    """
    run = new_id("demo")
    dists = {a: scenario.distributions(a, 2) for a in accounts}
    instances = {a: fake_instances(2) for a in accounts}
    expected: dict[tuple[str, str], set[str]] = {}
    first = accounts[0]
    v1 = build_bodies(
        "cloudfront.invalidate",
        accounts=",".join(accounts),
        params=[f"paths={path}" for path in demo.SITE_PATHS],
        target_params=[f"{a}:distribution_id={dists[a][0]}" for a in accounts],
        request_id=f"{run}-release-42",
    )
    for a in accounts:
        expected.setdefault((a, dists[a][0]), set()).update(demo.SITE_PATHS)
    for n, path in enumerate(demo.OVERLAPPING_PATHS):
        v1 += build_bodies(
            "cloudfront.invalidate",
            accounts=first,
            params=[f"paths={path}"],
            target_params=[f"{first}:distribution_id={dists[first][1]}"],
            request_id=f"{run}-img-{n + 1}",
        )
    expected.setdefault((first, dists[first][1]), set()).update(demo.OVERLAPPING_PATHS)
    legacy = {
        "entries": [
            {
                "aws_account_id": a,
                "cloudfront_distribution_id": dists[a][1],
                "invalidation_path": demo.LEGACY_PATH,
            }
            for a in accounts
        ]
    }
    others = bodies_from_document(json.dumps(legacy))
    for a in accounts:
        expected.setdefault((a, dists[a][1]), set()).add(demo.LEGACY_PATH)
    v1 += build_bodies(
        "ssm.send_command",
        accounts=",".join(accounts),
        params=[f"document_name={demo.SSM_DOCUMENT}", 'parameters={"commands": ["uptime"]}'],
        target_params=[f"{a}:instance_ids={json.dumps(instances[a])}" for a in accounts],
        request_id=f"{run}-uptime",
    )
    others.append(demo.POISON_BODY)
    return v1, others, expected, instances


def test_demo_workload_delivered_twice_has_the_effects_of_one_delivery(
    scenario: Scenario,
) -> None:
    """GIVEN ``fanout demo``'s workload where every v1 body is published twice and every
    message is delivered twice (a legacy body has no request id: its copies are redeliveries
    of one message)
    WHEN the worker runs until the queue is empty
    THEN the accounts show exactly what one delivery does: each expected path invalidated,
    under one CallerReference per job, nothing else invalidated, one command per instance."""
    accounts = (A, B, C)
    v1, others, expected, instances = demo_workload(scenario, accounts)
    scenario.workload.publish(v1, copies=2)
    scenario.workload.publish(others)

    scenario.poll(handler_factory=REDELIVERED)
    figures = scenario.verify("7 demo workload, each message twice")

    assert_promise(figures)
    assert figures.succeeded == figures.jobs - 1  # all but the poison message
    assert figures.dead_lettered == 1
    for (account, dist), paths in expected.items():
        found = scenario.inspector.invalidations(account, dist)
        invalidated = set().union(*(i.paths for i in found))
        assert all(covered(p, invalidated) for p in paths), (account, dist, invalidated)
        assert invalidated <= paths, f"{account}/{dist} invalidated more: {invalidated - paths}"
    commands = {
        i: len(scenario.inspector.commands_on(a, i)) for a, ids in instances.items() for i in ids
    }
    assert commands == dict.fromkeys(commands, 1)
    assert len(commands) == 6
