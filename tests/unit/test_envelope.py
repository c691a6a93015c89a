"""Message bodies -> jobs: handler.envelope.parse_message (envelope v1 and the legacy form)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handler.envelope import Envelope, Target, parse_message
from handler.exceptions import (
    BadMessageError,
    InvalidParamsError,
    PermanentError,
    UnknownTaskError,
)

DEFAULT_REGION = "eu-west-1"
MESSAGE_ID = "5b2d9e14-3c6f-4f0a-8e27-91c4a6b3d702"
ACCOUNT_A = "111111111111"
ACCOUNT_B = "222222222222"
DIST_A = "E2QWRUHEXAMPLE"
DIST_B = "E1B2C3D4EXAMPLE"
INSTANCE = "i-0123456789abcdef0"


def cloudfront_doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "version": 1,
        "task": "cloudfront.invalidate",
        "request_id": "deploy-42",
        "targets": [{"account": ACCOUNT_A, "params": {"distribution_id": DIST_A}}],
        "params": {"paths": ["/index.html", "/img/*"]},
    }
    doc.update(overrides)
    return doc


def ssm_doc(**params: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "task": "ssm.send_command",
        "targets": [{"account": ACCOUNT_A}],
        "params": {"document_name": "AWS-RunShellScript", **params},
    }


def parse(body: dict[str, Any] | list[Any] | str, *, message_id: str = MESSAGE_ID) -> Envelope:
    text = body if isinstance(body, str) else json.dumps(body)
    return parse_message(text, message_id=message_id, default_region=DEFAULT_REGION)


def with_change(doc: dict[str, Any], change: Any) -> dict[str, Any]:
    changed = copy.deepcopy(doc)
    change(changed)
    return changed


# --- envelope v1 -------------------------------------------------------------------------------


def test_v1_target_params_are_merged_over_the_shared_params() -> None:
    """GIVEN shared params and two targets, the second overriding `paths`
    WHEN the message is parsed
    THEN each job has the shared params with its own target params on top."""
    doc = cloudfront_doc(
        targets=[
            {"account": ACCOUNT_A, "params": {"distribution_id": DIST_A}},
            {"account": ACCOUNT_B, "params": {"distribution_id": DIST_B, "paths": ["/b.css"]}},
        ]
    )

    envelope = parse(doc)

    assert [dict(job.params) for job in envelope.jobs] == [
        {"distribution_id": DIST_A, "paths": ["/index.html", "/img/*"]},
        {"distribution_id": DIST_B, "paths": ["/b.css"]},
    ]


def test_v1_target_without_region_gets_the_default_region() -> None:
    """GIVEN one target without a region and one with us-east-2
    WHEN the message is parsed
    THEN the first job runs in the default region and the second in us-east-2."""
    doc = cloudfront_doc(
        targets=[
            {"account": ACCOUNT_A, "params": {"distribution_id": DIST_A}},
            {"account": ACCOUNT_B, "region": "us-east-2", "params": {"distribution_id": DIST_B}},
        ]
    )

    envelope = parse(doc)

    assert [job.region for job in envelope.jobs] == [DEFAULT_REGION, "us-east-2"]


def test_v1_request_id_defaults_to_the_sqs_message_id() -> None:
    """GIVEN a v1 body without request_id
    WHEN it is parsed
    THEN the envelope and its jobs carry the SQS message id as request id."""
    doc = cloudfront_doc()
    del doc["request_id"]

    envelope = parse(doc, message_id="msg-77")

    assert envelope.request_id == "msg-77"
    assert {job.request_id for job in envelope.jobs} == {"msg-77"}


def test_v1_explicit_request_id_is_kept_and_jobs_name_their_task_and_message() -> None:
    """GIVEN a v1 body with request_id deploy-42
    WHEN it is parsed
    THEN the envelope is a non-legacy cloudfront.invalidate request deploy-42
    AND the job names its task, account, message and position."""
    envelope = parse(cloudfront_doc(), message_id="msg-1")

    assert (envelope.request_id, envelope.task, envelope.legacy) == (
        "deploy-42",
        "cloudfront.invalidate",
        False,
    )
    (job,) = envelope.jobs
    assert (job.task, job.account, job.message_id, job.index, job.request_id) == (
        "cloudfront.invalidate",
        ACCOUNT_A,
        "msg-1",
        0,
        "deploy-42",
    )


@pytest.mark.parametrize(("options", "expected"), [({"dry_run": True}, True), ({}, False)])
def test_options_dry_run_marks_every_job_as_dry_run(
    options: dict[str, Any], expected: bool
) -> None:
    """GIVEN two targets and options {dry_run: True} (or no dry_run)
    WHEN the message is parsed
    THEN the envelope and every job have dry_run set accordingly."""
    doc = cloudfront_doc(
        options=options,
        targets=[
            {"account": ACCOUNT_A, "params": {"distribution_id": DIST_A}},
            {"account": ACCOUNT_B, "params": {"distribution_id": DIST_B}},
        ],
    )

    envelope = parse(doc)

    assert envelope.options.dry_run is expected
    assert [job.dry_run for job in envelope.jobs] == [expected, expected]


def _targets(count: int) -> list[dict[str, Any]]:
    return [
        {"account": f"{n + 1:012d}", "params": {"distribution_id": DIST_A}} for n in range(count)
    ]


def test_options_canary_names_the_first_target_of_a_whole_request() -> None:
    """GIVEN three targets in one message and options {canary: True}
    WHEN the message is parsed
    THEN the request's canary is the first target, and that job is the message's canary."""
    envelope = parse(cloudfront_doc(options={"canary": True}, targets=_targets(3)))

    assert envelope.options.canary == Target("000000000001", "eu-west-1")
    assert envelope.canary_key == envelope.jobs[0].key
    assert envelope.options.as_json()["canary"] == {
        "account": "000000000001",
        "region": "eu-west-1",
    }


def test_a_split_request_must_name_its_canary() -> None:
    """GIVEN one part of a request split across messages with options {canary: True}
    WHEN it is parsed
    THEN it is refused: each part would take its own first target for the canary."""
    doc = cloudfront_doc(
        options={"canary": True}, targets=_targets(2), request={"targets": 4, "part": 2, "parts": 2}
    )

    with pytest.raises(BadMessageError, match="name the canary target"):
        parse(doc)


def test_a_part_without_its_canary_knows_the_canary_by_name() -> None:
    """GIVEN part 2 of a request whose canary (named in options) is in part 1
    WHEN it is parsed
    THEN the request names the canary, and no job of this part is it."""
    canary = {"account": "000000000009", "region": "eu-west-1"}
    doc = cloudfront_doc(
        options={"canary": canary},
        targets=_targets(2),
        request={"targets": 9, "part": 2, "parts": 5},
    )

    envelope = parse(doc)

    assert envelope.options.canary == Target("000000000009", "eu-west-1")
    assert envelope.canary_key is None
    assert (envelope.request.expected_targets, envelope.request.part) == (9, 2)


def test_without_canary_no_job_is_canary() -> None:
    """GIVEN three targets and no canary option
    WHEN the message is parsed
    THEN the request has no canary."""
    envelope = parse(cloudfront_doc(targets=_targets(3)))

    assert (envelope.options.canary, envelope.canary_key) == (None, None)


@pytest.mark.parametrize(
    ("max_errors", "targets", "expected"),
    [(3, 5, 3), (0, 5, 0), ("10%", 15, 2), ("100%", 4, 4), (None, 4, None)],
)
def test_options_max_errors_is_a_count_or_a_rounded_up_percentage_of_the_targets(
    max_errors: int | str | None, targets: int, expected: int | None
) -> None:
    """GIVEN options.max_errors as a count, a percentage, or absent
    WHEN a message with that many targets is parsed
    THEN the limit is the count, or the percentage of the request's targets rounded up."""
    options = {} if max_errors is None else {"max_errors": max_errors}

    envelope = parse(cloudfront_doc(options=options, targets=_targets(targets)))

    assert envelope.options.max_errors_for(envelope.request.expected_targets) == expected


def test_a_percentage_counts_the_whole_request_not_the_part() -> None:
    """GIVEN max_errors 10% on part 1 of a 40-target request that holds 2 of its targets
    WHEN it is parsed
    THEN the limit is 4 (10% of 40), whichever part carries it."""
    doc = cloudfront_doc(
        options={"max_errors": "10%"},
        targets=_targets(2),
        request={"targets": 40, "part": 1, "parts": 20},
    )

    envelope = parse(doc)

    assert envelope.options.max_errors_for(envelope.request.expected_targets) == 4


def test_a_message_without_a_request_block_is_a_whole_request() -> None:
    """GIVEN a message with three distinct targets and no request block
    WHEN it is parsed
    THEN its request expects exactly those three targets."""
    envelope = parse(cloudfront_doc(targets=_targets(3)))

    assert envelope.request.expected_targets == 3
    assert envelope.request.whole


def test_a_part_larger_than_its_request_is_refused() -> None:
    """GIVEN a part with three targets claiming a request of two
    WHEN it is parsed
    THEN it is refused with both numbers."""
    doc = cloudfront_doc(targets=_targets(3), request={"targets": 2})

    with pytest.raises(BadMessageError, match=r"is 2, but this part alone has 3"):
        parse(doc)


def test_the_same_target_twice_in_one_message_is_one_job() -> None:
    """GIVEN a message listing the same account, region and params twice
    WHEN it is parsed
    THEN it yields a single job (the first occurrence), so the target cannot run twice."""
    target = {"account": ACCOUNT_A, "params": {"distribution_id": DIST_A}}
    doc = cloudfront_doc(targets=[target, copy.deepcopy(target)])

    envelope = parse(doc)

    assert len(envelope.jobs) == 1
    assert envelope.jobs[0].index == 0


def test_the_same_account_in_two_regions_is_two_jobs() -> None:
    """GIVEN one account targeted in two regions with the same params
    WHEN the message is parsed
    THEN there are two jobs, not one."""
    doc = ssm_doc(instance_ids=[INSTANCE])
    doc["targets"] = [
        {"account": ACCOUNT_A, "region": "us-east-1"},
        {"account": ACCOUNT_A, "region": "us-west-2"},
    ]

    envelope = parse(doc)

    assert [job.region for job in envelope.jobs] == ["us-east-1", "us-west-2"]


# --- job keys ----------------------------------------------------------------------------------


def test_job_keys_are_stable_across_parses_and_deliveries() -> None:
    """GIVEN the same v1 body delivered as two different SQS messages (same request_id)
    WHEN both are parsed
    THEN the job keys are identical (a redelivered or re-sent request is the same job)."""
    first = parse(cloudfront_doc(), message_id="msg-1")
    second = parse(cloudfront_doc(), message_id="msg-2")

    assert [j.key for j in first.jobs] == [j.key for j in second.jobs]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda d: d.update(params={"paths": ["/other.html"]}), id="params"),
        pytest.param(lambda d: d["targets"][0].update(region="us-west-2"), id="region"),
        pytest.param(lambda d: d.update(request_id="deploy-43"), id="request_id"),
        pytest.param(lambda d: d["targets"][0].update(account=ACCOUNT_B), id="account"),
    ],
)
def test_job_key_changes_when_params_region_request_or_account_change(change: Any) -> None:
    """GIVEN a body and a copy differing in one of params, region, request id or account
    WHEN both are parsed
    THEN their job keys differ."""
    original = parse(cloudfront_doc())
    changed = parse(with_change(cloudfront_doc(), change))

    assert original.jobs[0].key != changed.jobs[0].key


def test_dry_run_and_live_jobs_of_the_same_target_have_different_keys() -> None:
    """GIVEN a live body and the same body with options.dry_run
    WHEN both are parsed
    THEN their job keys differ (one batch must never merge a dry run into a live job)."""
    live = parse(cloudfront_doc())
    dry = parse(cloudfront_doc(options={"dry_run": True}))

    assert live.jobs[0].key != dry.jobs[0].key


# --- legacy form -------------------------------------------------------------------------------


def test_legacy_entries_map_to_cloudfront_invalidate_jobs() -> None:
    """GIVEN a legacy {"entries": [...]} body with two entries
    WHEN it is parsed
    THEN it is a legacy cloudfront.invalidate envelope whose request id is the message id
    AND each entry becomes a job in the default region with paths [invalidation_path]."""
    body = {
        "entries": [
            {
                "aws_account_id": ACCOUNT_A,
                "cloudfront_distribution_id": DIST_A,
                "invalidation_path": "/images/cat.jpg",
            },
            {
                "aws_account_id": ACCOUNT_B,
                "cloudfront_distribution_id": DIST_B,
                "invalidation_path": "/images/*",
            },
        ]
    }

    envelope = parse(body, message_id="msg-legacy")

    assert (envelope.task, envelope.legacy, envelope.request_id, envelope.options.dry_run) == (
        "cloudfront.invalidate",
        True,
        "msg-legacy",
        False,
    )
    assert [(j.task, j.account, j.region, dict(j.params)) for j in envelope.jobs] == [
        (
            "cloudfront.invalidate",
            ACCOUNT_A,
            DEFAULT_REGION,
            {"distribution_id": DIST_A, "paths": ["/images/cat.jpg"]},
        ),
        (
            "cloudfront.invalidate",
            ACCOUNT_B,
            DEFAULT_REGION,
            {"distribution_id": DIST_B, "paths": ["/images/*"]},
        ),
    ]


# --- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param('{"version": 1, "version": 1}', "appears twice", id="repeated-field"),
        pytest.param('{"a": NaN}', "NaN is not a JSON number", id="nan"),
        pytest.param('{"a": Infinity}', "Infinity is not a JSON number", id="infinity"),
    ],
)
def test_json_that_two_readers_could_read_differently_is_refused(text: str, reason: str) -> None:
    """GIVEN a body with a repeated field name, or NaN/Infinity (not JSON; Python accepts them)
    WHEN it is parsed
    THEN it is refused with a one-line reason.

    Regression (issue 9.10): NaN was accepted in a lambda payload."""
    with pytest.raises(BadMessageError, match=reason):
        parse(text)


def test_a_nan_payload_is_refused_before_it_reaches_a_plugin() -> None:
    """GIVEN a lambda.invoke message whose payload holds NaN
    WHEN it is parsed
    THEN it is refused (no job, nothing after it)."""
    text = (
        '{"version": 1, "task": "lambda.invoke", "targets": [{"account": "111111111111"}], '
        '"params": {"function_name": "f", "payload": {"x": NaN}}}'
    )

    with pytest.raises(BadMessageError, match="NaN"):
        parse(text)


def test_a_whole_number_written_as_a_float_is_refused_at_parse_time() -> None:
    """GIVEN an SSM timeout_seconds of 100.0 (JSON Schema counts it as an integer)
    WHEN the message is parsed
    THEN it is refused there, naming the field (not after STS with a misleading reason).

    Regression (issue 9.10, the same for dns ttl_seconds)."""
    with pytest.raises(
        InvalidParamsError, match=r"timeout_seconds must be a whole number, got 100.0"
    ):
        parse(ssm_doc(instance_ids=[INSTANCE], timeout_seconds=100.0))


@pytest.mark.parametrize(
    ("change", "shows"),
    [
        pytest.param({"targets": [{"account": "11111111111"}]}, 'got "11111111111"', id="pattern"),
        pytest.param({"role_arn": "x"}, "unknown field\\(s\\): role_arn", id="unknown-field"),
    ],
)
def test_a_refusal_shows_the_offending_value_and_no_python_reprs(
    change: dict[str, Any], shows: str
) -> None:
    """GIVEN a body with a bad account id, or an unknown field
    WHEN it is parsed
    THEN the reason names the field and shows the value (not just the regex, not a Python set)."""
    with pytest.raises(BadMessageError, match=shows) as raised:
        parse({**cloudfront_doc(), **change})

    assert "{'" not in raised.value.reason


def test_an_sqs_event_given_as_a_body_gets_a_hint() -> None:
    """GIVEN an SQS event file ({"Records": [...]}) sent as a message body
    WHEN it is parsed
    THEN the reason says what it is and what to send instead."""
    with pytest.raises(BadMessageError, match="SQS event"):
        parse({"Records": [{"body": "{}"}]})


def test_identical_targets_collapse_but_still_count_against_the_limit() -> None:
    """GIVEN the same target written three times
    WHEN parsed
    THEN it is one job, and the envelope still counts three targets (the worker's
    MAX_TARGETS_PER_MESSAGE applies to what was written).

    Regression (issue 9.10): 10,000 identical targets passed the target limit unnoticed."""
    target = {"account": ACCOUNT_A, "params": {"distribution_id": DIST_A}}

    envelope = parse(cloudfront_doc(targets=[target, target, target]))

    assert (len(envelope.jobs), envelope.target_count) == (1, 3)


_SSM_BOTH = ssm_doc(instance_ids=[INSTANCE], targets=[{"key": "tag:Role", "values": ["web"]}])
_LEGACY_WITH_ROLE = {
    "entries": [
        {
            "aws_account_id": ACCOUNT_A,
            "cloudfront_distribution_id": DIST_A,
            "invalidation_path": "/x",
            "role_arn": "arn:aws:iam::999999999999:role/Admin",
        }
    ]
}

REFUSALS = [
    pytest.param("not json {", BadMessageError, "not valid JSON", id="not-json"),
    pytest.param([cloudfront_doc()], BadMessageError, "JSON object, got list", id="json-array"),
    pytest.param(
        cloudfront_doc(role_arn="arn:aws:iam::999999999999:role/Admin"),
        BadMessageError,
        "role_arn",
        id="unknown-top-level-field",
    ),
    pytest.param(
        with_change(cloudfront_doc(), lambda d: d["targets"][0].update(role="Admin")),
        BadMessageError,
        "targets[0]",
        id="unknown-target-field",
    ),
    pytest.param(
        with_change(cloudfront_doc(), lambda d: d["targets"][0].update(account="12345678901")),
        BadMessageError,
        "targets[0].account",
        id="account-11-digits",
    ),
    pytest.param(
        with_change(cloudfront_doc(), lambda d: d["targets"][0].update(account="12345678901a")),
        BadMessageError,
        "targets[0].account",
        id="account-not-digits",
    ),
    pytest.param(
        with_change(cloudfront_doc(), lambda d: d["targets"][0].update(region="US-EAST-1")),
        BadMessageError,
        "targets[0].region",
        id="bad-region",
    ),
    pytest.param(cloudfront_doc(version=2), BadMessageError, "version", id="version-2"),
    pytest.param(
        cloudfront_doc(options={"dry_run": True, "force": True}),
        BadMessageError,
        "force",
        id="unknown-option",
    ),
    pytest.param(cloudfront_doc(targets=[]), BadMessageError, "targets", id="no-targets"),
    pytest.param(
        cloudfront_doc(options={"max_errors": "150%"}),
        BadMessageError,
        "max_errors",
        id="max-errors-over-100-percent",
    ),
    pytest.param(
        cloudfront_doc(options={"max_errors": -1}),
        BadMessageError,
        "max_errors",
        id="max-errors-negative",
    ),
    pytest.param(
        cloudfront_doc(options={"canary": "yes"}),
        BadMessageError,
        "canary",
        id="canary-not-boolean",
    ),
    pytest.param(_LEGACY_WITH_ROLE, BadMessageError, "role_arn", id="legacy-unknown-field"),
    pytest.param(
        cloudfront_doc(task="s3.delete_everything"),
        UnknownTaskError,
        "s3.delete_everything",
        id="unknown-task",
    ),
    pytest.param(
        cloudfront_doc(params={"paths": ["index.html"]}),
        InvalidParamsError,
        "paths[0]",
        id="path-without-leading-slash",
    ),
    pytest.param(
        cloudfront_doc(params={"paths": ["/img/*.jpg"]}),
        InvalidParamsError,
        "paths[0]",
        id="wildcard-not-at-end",
    ),
    pytest.param(
        cloudfront_doc(params={"paths": [f"/dir{i}/*" for i in range(16)]}),
        InvalidParamsError,
        "16 wildcard paths",
        id="16-wildcard-paths",
    ),
    pytest.param(
        with_change(cloudfront_doc(), lambda d: d["targets"][0]["params"].update(dist="E1")),
        InvalidParamsError,
        "dist",
        id="unknown-param",
    ),
    pytest.param(_SSM_BOTH, InvalidParamsError, "exactly one of", id="ssm-instances-and-targets"),
    pytest.param(ssm_doc(), InvalidParamsError, "exactly one of", id="ssm-neither"),
    pytest.param(
        ssm_doc(instance_ids=[f"i-{n:017x}" for n in range(51)]),
        InvalidParamsError,
        "instance_ids",
        id="ssm-51-instances",
    ),
]


@pytest.mark.parametrize(("body", "error", "needle"), REFUSALS)
def test_bad_messages_are_refused_with_a_single_line_reason(
    body: Any, error: type[PermanentError], needle: str
) -> None:
    """GIVEN a body that breaks one rule of the message contract
    WHEN it is parsed
    THEN the specific PermanentError subclass is raised
    AND its reason names what is wrong, on one line."""
    with pytest.raises(error) as caught:
        parse(body)

    assert needle in caught.value.reason
    assert "\n" not in caught.value.reason


def test_params_refusal_names_the_offending_target() -> None:
    """GIVEN a message whose second target has a bad distribution id
    WHEN it is parsed
    THEN InvalidParamsError names target 1 and its account (and no job of it runs)."""
    doc = cloudfront_doc(
        targets=[
            {"account": ACCOUNT_A, "params": {"distribution_id": DIST_A}},
            {"account": ACCOUNT_B, "params": {"distribution_id": "not-an-id"}},
        ]
    )

    with pytest.raises(InvalidParamsError) as caught:
        parse(doc)

    assert f"target 1 ({ACCOUNT_B}" in caught.value.reason


def test_unknown_task_reason_lists_the_known_tasks() -> None:
    """GIVEN a v1 body naming a task no plugin registers
    WHEN it is parsed
    THEN the UnknownTaskError reason lists the tasks that do exist."""
    with pytest.raises(UnknownTaskError) as caught:
        parse(cloudfront_doc(task="s3.nuke"))

    assert "cloudfront.invalidate" in caught.value.reason
    assert "ssm.send_command" in caught.value.reason


def test_a_body_with_a_huge_integer_is_a_bad_message() -> None:
    """GIVEN a body that is a 5000-digit JSON integer
    WHEN it is parsed
    THEN BadMessageError is raised (one bad record, not a crashed batch)."""
    with pytest.raises(BadMessageError):
        parse_message("1" * 5000, message_id=MESSAGE_ID, default_region=DEFAULT_REGION)


def test_an_account_of_non_ascii_digits_is_refused() -> None:
    """GIVEN a target account written in Arabic-Indic digits (12 Unicode 'digits')
    WHEN the message is parsed
    THEN it is refused: an account id is 12 ASCII digits."""
    doc = with_change(cloudfront_doc(), lambda d: d["targets"][0].update(account="\u0661" * 12))

    with pytest.raises(BadMessageError):
        parse(doc)


# --- robustness --------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


FIELD_NAMES = st.sampled_from(
    [
        "version",
        "task",
        "request_id",
        "targets",
        "params",
        "options",
        "entries",
        "account",
        "region",
        "paths",
        "distribution_id",
        "instance_ids",
        "targets",
        "dry_run",
        "role_arn",
    ]
) | st.text(max_size=8)


def _slots(node: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) pair in a JSON document, depth first."""
    pairs: list[tuple[Any, Any]]
    if isinstance(node, dict):
        pairs = [(node, key) for key in node]
        return pairs + [p for value in node.values() for p in _slots(value)]
    if isinstance(node, list):
        pairs = [(node, index) for index in range(len(node))]
        return pairs + [p for value in node for p in _slots(value)]
    return []


@st.composite
def mutated_bodies(draw: st.DrawFn) -> Any:
    """A valid body (v1 or legacy) with zero to three random edits anywhere in it."""
    doc = copy.deepcopy(draw(st.sampled_from(VALID_BODIES)))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        slots = _slots(doc)
        if not slots:
            break
        container, key = draw(st.sampled_from(slots))
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            container[key] = draw(json_values)
        elif action == "delete":
            del container[key]
        elif isinstance(container, dict):
            container[draw(FIELD_NAMES)] = draw(json_values)
        else:
            container.append(draw(json_values))
    return doc


VALID_BODIES = [
    cloudfront_doc(),
    cloudfront_doc(
        options={"dry_run": True},
        targets=[
            {"account": ACCOUNT_A, "region": "us-east-1", "params": {"distribution_id": DIST_A}},
            {"account": ACCOUNT_B, "params": {"distribution_id": DIST_B, "paths": ["/b/*"]}},
        ],
    ),
    ssm_doc(instance_ids=[INSTANCE], parameters={"commands": ["uptime"]}, timeout_seconds=60),
    ssm_doc(targets=[{"key": "tag:Role", "values": ["web"]}]),
    {
        "entries": [
            {
                "aws_account_id": ACCOUNT_A,
                "cloudfront_distribution_id": DIST_A,
                "invalidation_path": "/images/*",
            }
        ]
    },
]


def _parse_or_refuse(body: str) -> None:
    error: PermanentError | None = None
    try:
        result = parse_message(body, message_id=MESSAGE_ID, default_region=DEFAULT_REGION)
    except PermanentError as exc:
        error = exc
    if error is not None:
        assert "\n" not in error.reason
    else:
        assert isinstance(result, Envelope)
        assert result.jobs


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, mutated_bodies()))
def test_any_json_body_parses_or_is_refused_permanently(value: Any) -> None:
    """GIVEN any JSON value as body (arbitrary, or a valid body with random edits)
    WHEN it is parsed
    THEN the result is an Envelope with jobs, or a PermanentError with a one-line reason;
    never any other exception."""
    _parse_or_refuse(json.dumps(value))


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_any_text_body_parses_or_is_refused_permanently(body: str) -> None:
    """GIVEN arbitrary text as body
    WHEN it is parsed
    THEN it is an Envelope or a PermanentError; never any other exception."""
    _parse_or_refuse(body)
