"""Fuzzing the real ``lambda_handler``: whatever the bodies, no record is lost.

Batches of up to ten records mix one known-good invalidation with fuzzed bodies: arbitrary
text, arbitrary JSON (nested, wrong types, large, unicode with escaped lone surrogates, huge
numbers), and legacy and v1 envelopes mutated (fields dropped, added, retyped). Whatever comes
in, the handler must not raise; every dead letter must carry a one-line ``fanout.reason``; the
good record must take effect; and every record must end one of three ways: acknowledged with
its effect, dead-lettered, or reported in ``batchItemFailures`` (SQS delivers it again).
"""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from handler import app
from handler.app import lambda_handler
from handler.envelope import Envelope, parse_message
from handler.exceptions import PermanentError
from tasks.base import Call
from tasks.ssm import job_token
from tests.unit.fakes import (
    REGION,
    TARGET_ACCOUNTS,
    FakeLambdaContext,
    client_in,
    create_distribution,
    failures,
    sqs_event,
    sqs_record,
)

pytestmark = pytest.mark.usefixtures("worker_env")

SQS_MAX_BODY = 256 * 1024
ACCOUNTS = (*TARGET_ACCOUNTS[:2], "999999999999", "12345", "")
INSTANCE_IDS = ("i-0123456789abcdef0", "i-0fedcba987654321f", "mi-0123456789abcdef0", "i-x")
PATHS = ("/index.html", "/img/*", "/*", "no-slash", "/a b", "/" + "x" * 5000, "")


def _sqs_valid(text: str) -> bool:
    """SQS accepts #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF, up to 256 KiB."""
    ok = all(
        c in "\t\n\r" or " " <= c <= "\ud7ff" or "\ue000" <= c <= "\ufffd" or c >= "\U00010000"
        for c in text
    )
    return ok and len(text.encode("utf-8")) <= SQS_MAX_BODY


def _dumps(value: Any, ascii_only: bool) -> str:
    # Lone surrogates can only travel escaped (\udXXX): SQS refuses them raw.
    return json.dumps(value, ensure_ascii=ascii_only, allow_nan=True)


# -- strategies -------------------------------------------------------------------------------

# Every code point, lone surrogates included (they reach the worker escaped in JSON).
texts = st.text(st.characters(exclude_categories=()), max_size=30)
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=2**63, max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
)
leaves = st.one_of(st.none(), st.booleans(), numbers, texts, st.sampled_from(ACCOUNTS))
json_values = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(texts, children, max_size=5)
    ),
    max_leaves=25,
)
large_values = st.one_of(
    st.builds(lambda c, n: c * n, st.sampled_from("a/é\u2028🙂*"), st.integers(1000, 40_000)),
    st.builds(lambda n: ["/p"] * n, st.integers(2990, 3010)),
    st.builds(lambda n: [{"account": TARGET_ACCOUNTS[0]}] * n, st.integers(400, 600)),
)
wrong_values = st.one_of(json_values, large_values)


def envelopes(distribution_id: str) -> st.SearchStrategy[dict[str, Any]]:
    """Plausible envelopes: the shapes mutations start from (some of them valid)."""
    accounts = st.sampled_from(ACCOUNTS)
    cloudfront_targets = st.fixed_dictionaries(
        {"account": accounts},
        optional={
            "params": st.fixed_dictionaries(
                {"distribution_id": st.sampled_from((distribution_id, "EDOESNOTEXIST1", "bad"))}
            ),
            "region": st.sampled_from((REGION, "eu-west-1", "cn-north-1", "mars-1")),
        },
    )
    invalidate = st.fixed_dictionaries(
        {
            "version": st.just(1),
            "task": st.just("cloudfront.invalidate"),
            "targets": st.lists(cloudfront_targets, min_size=1, max_size=3),
            "params": st.fixed_dictionaries(
                {"paths": st.lists(st.sampled_from(PATHS), min_size=1, max_size=4)}
            ),
        },
        optional={
            "request_id": st.sampled_from(("fuzz-1", "fuzz/2", "has space", "")),
            "options": st.fixed_dictionaries(
                {},
                optional={
                    "dry_run": st.booleans(),
                    "canary": st.booleans(),
                    "max_errors": st.one_of(
                        st.integers(-1, 2), st.sampled_from(("0%", "50%", "100%", "101%"))
                    ),
                },
            ),
        },
    )
    command = st.fixed_dictionaries(
        {
            "version": st.just(1),
            "task": st.just("ssm.send_command"),
            "targets": st.lists(
                st.fixed_dictionaries(
                    {
                        "account": accounts,
                        "params": st.fixed_dictionaries(
                            {"instance_ids": st.lists(st.sampled_from(INSTANCE_IDS), max_size=2)}
                        ),
                    }
                ),
                min_size=1,
                max_size=2,
            ),
            "params": st.fixed_dictionaries(
                {"document_name": st.sampled_from(("AWS-RunShellScript", "x", "../etc"))},
                optional={
                    "parameters": st.builds(lambda: {"commands": ["uptime"]}),
                    "comment": texts,
                },
            ),
        },
        optional={"request_id": st.sampled_from(("fuzz-ssm", "x"))},
    )
    legacy = st.fixed_dictionaries(
        {
            "entries": st.lists(
                st.fixed_dictionaries(
                    {
                        "aws_account_id": accounts,
                        "cloudfront_distribution_id": st.sampled_from((distribution_id, "E1")),
                        "invalidation_path": st.sampled_from(PATHS),
                    }
                ),
                min_size=1,
                max_size=3,
            )
        }
    )
    return st.one_of(invalidate, command, legacy)


def valid_envelopes(distribution_id: str) -> st.SearchStrategy[dict[str, Any]]:
    """Envelopes the worker accepts; some targets name a distribution that does not exist,
    so a message may partly succeed and partly be dead-lettered."""
    accounts = st.sampled_from(TARGET_ACCOUNTS[:2])
    paths = st.lists(st.sampled_from(("/index.html", "/img/*", "/a.css", "/b/c.js")), min_size=1)
    invalidate = st.fixed_dictionaries(
        {
            "version": st.just(1),
            "task": st.just("cloudfront.invalidate"),
            "request_id": st.uuids().map(str),
            "targets": st.lists(
                st.fixed_dictionaries(
                    {
                        "account": st.just(TARGET_ACCOUNTS[0]),
                        "params": st.fixed_dictionaries(
                            {"distribution_id": st.sampled_from((distribution_id, "EMISSING1"))}
                        ),
                    }
                ),
                min_size=1,
                max_size=3,
            ),
            "params": st.fixed_dictionaries({"paths": paths.map(lambda p: sorted(set(p)))}),
        }
    )
    command = st.fixed_dictionaries(
        {
            "version": st.just(1),
            "task": st.just("ssm.send_command"),
            "targets": st.lists(
                st.fixed_dictionaries({"account": accounts}), min_size=1, max_size=3
            ),
            "params": st.fixed_dictionaries(
                {
                    "document_name": st.just("AWS-RunShellScript"),
                    "instance_ids": st.lists(
                        st.sampled_from(INSTANCE_IDS[:2]), min_size=1, max_size=2, unique=True
                    ),
                    "parameters": st.builds(lambda: {"commands": ["uptime"]}),
                }
            ),
        }
    )
    return st.one_of(invalidate, command)


def _locations(value: Any, found: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key or index) in a JSON document, depth first."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in list(items):
        found.append((value, key))
        if isinstance(child, dict | list):
            _locations(child, found)
    return found


@st.composite
def mutated(draw: st.DrawFn, distribution_id: str) -> dict[str, Any]:
    """An envelope with one to three mutations: a field dropped, added, or given a wrong value."""
    # A copy: drawn values may be shared (st.just, cached draws) and must not change under us.
    document = copy.deepcopy(draw(envelopes(distribution_id)))
    for _ in range(draw(st.integers(1, 3))):
        places = _locations(document, [])
        if not places:  # everything was dropped: start again from the empty object
            places = [(document, "x")]
            operation = "add"
        else:
            operation = draw(st.sampled_from(("drop", "add", "retype")))
        container, key = places[draw(st.integers(0, len(places) - 1))]
        if operation == "drop":
            del container[key]
        elif operation == "retype":
            container[key] = draw(wrong_values)
        elif isinstance(container, dict):
            container[draw(st.sampled_from(("role_arn", "version", "x", "entries")))] = draw(
                wrong_values
            )
        else:
            container.append(draw(wrong_values))
    return document


def bodies(distribution_id: str) -> st.SearchStrategy[str]:
    raw = st.text(
        st.characters(
            codec="utf-8",
            exclude_categories=("Cs", "Cc"),
            include_characters="\t\n\r",
            exclude_characters="\ufffe\uffff",
        ),
        max_size=200,
    )
    deep = st.builds(lambda n: "[" * n + "]" * n, st.integers(500, 60_000))
    # Unmutated envelopes too: some are valid, so "acknowledged with its effect" is exercised.
    documents = st.one_of(
        json_values,
        large_values,
        envelopes(distribution_id),
        valid_envelopes(distribution_id),
        mutated(distribution_id),
    )
    encoded = st.builds(_dumps, documents, st.booleans()).filter(_sqs_valid)
    return st.one_of(raw, deep, encoded, encoded, encoded)


# -- what happened to each record -------------------------------------------------------------


def covered(path: str, invalidated: set[str]) -> bool:
    return any(p == path or (p.endswith("*") and path.startswith(p[:-1])) for p in invalidated)


class Looker:
    """Reads moto's state, with clients made once per test (client creation dominates)."""

    def __init__(self) -> None:
        self.sqs = boto3.client("sqs")
        self.dlq_url = self.sqs.get_queue_url(QueueName="fanout-dlq")["QueueUrl"]
        self._clients: dict[tuple[str, str], Any] = {}
        self._paths: dict[tuple[str, str, str], frozenset[str]] = {}
        # Jobs dead-lettered so far, by any message of any example: a job ends once, so a later
        # message repeating it (same request id, target, params) is acknowledged, not re-run.
        self.dead_jobs: set[str] = set()

    def client(self, account: str, service: str) -> Any:
        if (account, service) not in self._clients:
            self._clients[(account, service)] = client_in(account, service)
        return self._clients[(account, service)]

    def invalidated(self, account: str, distribution_id: str) -> set[str]:
        """Every path invalidated on a distribution (each invalidation read once per test)."""
        cloudfront = self.client(account, "cloudfront")
        pages = cloudfront.get_paginator("list_invalidations").paginate(
            DistributionId=distribution_id
        )
        paths: set[str] = set()
        for item in (i for page in pages for i in page["InvalidationList"].get("Items", [])):
            key = (account, distribution_id, item["Id"])
            if key not in self._paths:
                batch = cloudfront.get_invalidation(DistributionId=distribution_id, Id=item["Id"])
                items = batch["Invalidation"]["InvalidationBatch"]["Paths"].get("Items", [])
                self._paths[key] = frozenset(items)
            paths |= self._paths[key]
        return paths

    def drain_dead_letters(self) -> dict[str, list[dict[str, str]]]:
        """Dead letters by source message id (body, fanout.* attributes), removed from the DLQ."""
        found: dict[str, list[dict[str, str]]] = {}
        while messages := self.sqs.receive_message(
            QueueUrl=self.dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", []):
            for message in messages:
                attributes = {
                    k: v["StringValue"] for k, v in message.get("MessageAttributes", {}).items()
                }
                source = attributes.get("fanout.source_message_id", message["MessageId"])
                found.setdefault(source, []).append({"body": message["Body"], **attributes})
                try:  # a refused target's letter may hold params that would not pass
                    named = parse_message(
                        message["Body"], message_id=source, default_region=REGION, check=False
                    )
                except PermanentError:
                    pass
                else:
                    self.dead_jobs |= {job.key for job in named.jobs}
                self.sqs.delete_message(
                    QueueUrl=self.dlq_url, ReceiptHandle=message["ReceiptHandle"]
                )
        return found

    def _all_dead(self, body: str, message_id: str) -> bool:
        try:
            lenient = parse_message(body, message_id=message_id, default_region=REGION, check=False)
        except PermanentError:
            return False
        return bool(lenient.jobs) and {job.key for job in lenient.jobs} <= self.dead_jobs

    def effect_missing(self, envelope: Envelope, dead_keys: set[str]) -> list[str]:
        """Jobs of an acknowledged record that neither took effect nor were dead-lettered."""
        missing = []
        for job in envelope.jobs:
            if job.key in dead_keys or job.dry_run:
                continue
            if job.task == "cloudfront.invalidate":
                paths = self.invalidated(job.account, job.params["distribution_id"])
                if all(covered(p, paths) for p in job.params["paths"]):
                    continue
            elif job.task == "ssm.send_command":
                token = job_token(Call(job.task, job.account, job.region, job.params, (job,)))
                commands = self.client(job.account, "ssm").list_commands()["Commands"]
                if any(c.get("Comment", "").startswith(token) for c in commands):
                    continue
            missing.append(f"{job.task} {job.account} {dict(job.params)}")
        return missing

    def check_record(
        self, record: dict[str, Any], failed: set[str], dead: list[dict[str, str]]
    ) -> str:
        """One record ended in one of the three allowed ways; which one."""
        message_id, body = record["messageId"], record["body"]
        for letter in dead:
            reason = letter.get("fanout.reason", "")
            assert reason, f"dead letter without fanout.reason for {body[:120]!r}"
            assert len(reason.splitlines()) == 1, f"reason on several lines: {reason!r}"
        if message_id in failed:
            return "reported failed"  # SQS delivers it again (its redrive policy ends it)
        try:
            envelope = parse_message(body, message_id=message_id, default_region=REGION)
        except PermanentError:
            # Its own letter, or (a target the worker refuses, whatever its params) jobs that
            # were dead-lettered before: they end once, a repeat is acknowledged.
            assert dead or self._all_dead(body, message_id), (
                f"unparseable body acknowledged without a dead letter: {body[:120]!r}"
            )
            return "dead-lettered"
        keys = {job.key for job in envelope.jobs}
        missing = self.effect_missing(envelope, self.dead_jobs)
        assert not missing, f"acknowledged without effect or dead letter: {missing}"
        if not keys & self.dead_jobs:
            return "acknowledged with effect"
        return "dead-lettered" if keys <= self.dead_jobs else "partly dead-lettered"


@pytest.fixture
def looker(worker_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Looker:
    # Rate limiting is not under test here: at CloudFront's 2 calls/s (SSM's 5) examples would
    # wait for tokens.
    monkeypatch.setenv(
        "RATE_LIMITS", "cloudfront:CreateInvalidation=1000/100,ssm:SendCommand=1000/100"
    )
    app.reset()
    return Looker()


@pytest.fixture
def good_distribution(worker_env: dict[str, str]) -> str:
    return create_distribution(TARGET_ACCOUNTS[0])


def good_body(distribution_id: str) -> tuple[str, str]:
    path = f"/good/{uuid.uuid4().hex}.html"
    body = {
        "version": 1,
        "task": "cloudfront.invalidate",
        "request_id": f"good-{uuid.uuid4().hex}",
        "targets": [
            {"account": TARGET_ACCOUNTS[0], "params": {"distribution_id": distribution_id}}
        ],
        "params": {"paths": [path]},
    }
    return json.dumps(body), path


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_record_is_lost_whatever_the_bodies(
    data: st.DataObject, good_distribution: str, looker: Looker, context: FakeLambdaContext
) -> None:
    """GIVEN a batch of up to ten records: fuzzed bodies around one known-good invalidation
    WHEN the real handler processes it
    THEN it does not raise, every dead letter has a one-line reason, the good record takes
    effect, and every record is acknowledged with effect, dead-lettered, or reported failed."""
    fuzzed = data.draw(st.lists(bodies(good_distribution), min_size=1, max_size=9), "bodies")
    good, good_path = good_body(good_distribution)
    position = data.draw(st.integers(0, len(fuzzed)), "good record position")
    records = [sqs_record(body) for body in fuzzed]
    records.insert(position, sqs_record(good))

    response = lambda_handler(sqs_event(*records), context)

    failed = set(failures(response))
    dead = looker.drain_dead_letters()
    good_id = records[position]["messageId"]
    assert good_id not in failed
    assert good_id not in dead
    assert covered(good_path, looker.invalidated(TARGET_ACCOUNTS[0], good_distribution))
    for record in records[:position] + records[position + 1 :]:
        event(looker.check_record(record, failed, dead.get(record["messageId"], [])))
