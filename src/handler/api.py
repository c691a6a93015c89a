"""What the operator tools (``scripts/fanout``) may use of the worker: the one door into it.

The CLI imports from this module only (a test enforces it), so the modules behind it can be
reshaped freely as long as these names keep their meaning. It offers:

Messages (the queue's contract)
    ``parse_message``, ``Envelope``   a body parsed and validated exactly as the worker does
    ``job_key``                       a job's ledger key (its SSM comment token is the first 16)
    ``PermanentError``                raised for bad input (``.reason`` is one line)
    ``split_bodies``, ``is_legacy``   the one splitter, and the legacy-body test
    ``message_group``                 the tenant (MessageGroupId) SQS fair queues see a body as
    ``BODY_BUDGET_BYTES``, ``PUBLISH_TARGETS_PER_MESSAGE``, ``SQS_BATCH``,
    ``SQS_MAX_MESSAGE_BYTES``         limits
    ``ACCOUNT_ID_RE``                 what an account id is
    ``DEAD_LETTER_ATTRIBUTE_PREFIX``  prefix of the attributes the worker writes on dead letters
    ``REDRIVEN_ATTRIBUTE``, ``LETTER_ID_ATTRIBUTE``  what redrive marks / reads
    ``Options``, ``MAX_CONCURRENCY``  a request's options (e.g. the cap a percentage resolves to)
    ``ramp_allows``, ``ramp_wave``    where a ramping request is (``handler.rollout``)

Targets by organisation
    ``Selection``, ``Directory``, ``plan_selection``, ``plan_targets``, ``Planned``: what a
    ``select`` block expands to, by the worker's own code (``fanout targets``)

Configuration
    ``operator_settings``, ``OperatorSettings``  role name/path, external id, allow-list and
    ledger table, read and validated as the worker reads them (``ConfigurationError`` if bad);
    ``DEFAULT_TARGET_ROLE_NAME``

Target accounts
    ``partition_of``, ``role_arn``, ``session_name``  how the worker names the role it assumes

Ledger
    ``status_source``, ``StatusSource``: the job records and the request record of a request
    (read side, and the operator's writes: cancel, update); ``JobRecord``, ``JobState``,
    ``RequestRecord``

Plugins
    ``all_tasks``, ``get_task``, ``task_names``, ``Task``, ``RateLimit``, ``TARGET``,
    ``TaskResult``, ``RemoteStatus``, ``Progress`` (a plugin's ``remote_status`` hook);
    ``covered`` (whether one CloudFront invalidation path covers another)

Policies
    ``target_role_statements``, ``session_policy``, ``status_role_actions``

The Lambda entry point itself stays ``handler.app.lambda_handler`` (the template's Handler).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from handler.contract import (
    ATTRIBUTE_PREFIX as DEAD_LETTER_ATTRIBUTE_PREFIX,
)
from handler.contract import (
    BODY_BUDGET_BYTES,
    LETTER_ID_ATTRIBUTE,
    MAX_CONCURRENCY,
    PUBLISH_TARGETS_PER_MESSAGE,
    REDRIVEN_ATTRIBUTE,
    SQS_BATCH,
    SQS_MAX_MESSAGE_BYTES,
    is_legacy,
    message_group,
    split_bodies,
)
from handler.envelope import Envelope, Options, job_key, parse_message
from handler.exceptions import ConfigurationError, PermanentError
from handler.expansion import Planned, plan_selection, plan_targets
from handler.ledger import JobRecord, JobState, Ledger
from handler.ledger_dynamodb import DynamoDBLedger
from handler.organization import Directory
from handler.policy import session_policy, status_role_actions, target_role_statements
from handler.requests import RequestLedger, RequestRecord
from handler.requests_dynamodb import DynamoDBRequests
from handler.rollout import ramp_allows, ramp_wave
from handler.selection import Selection
from handler.sessions import role_arn, session_name
from handler.settings import DEFAULT_TARGET_ROLE_NAME, OperatorSettings, operator_settings
from tasks.aws import ACCOUNT_ID_RE, partition_of
from tasks.base import TARGET, Progress, RateLimit, RemoteStatus, Task, TaskResult
from tasks.cloudfront import covered
from tasks.registry import all_tasks, get_task, task_names

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

__all__ = [
    "ACCOUNT_ID_RE",
    "BODY_BUDGET_BYTES",
    "DEAD_LETTER_ATTRIBUTE_PREFIX",
    "DEFAULT_TARGET_ROLE_NAME",
    "LETTER_ID_ATTRIBUTE",
    "MAX_CONCURRENCY",
    "PUBLISH_TARGETS_PER_MESSAGE",
    "REDRIVEN_ATTRIBUTE",
    "SQS_BATCH",
    "SQS_MAX_MESSAGE_BYTES",
    "TARGET",
    "ConfigurationError",
    "Directory",
    "Envelope",
    "JobRecord",
    "JobState",
    "OperatorSettings",
    "Options",
    "PermanentError",
    "Planned",
    "Progress",
    "RateLimit",
    "RemoteStatus",
    "RequestRecord",
    "Selection",
    "StatusSource",
    "Task",
    "TaskResult",
    "all_tasks",
    "covered",
    "get_task",
    "is_legacy",
    "job_key",
    "message_group",
    "operator_settings",
    "parse_message",
    "partition_of",
    "plan_selection",
    "plan_targets",
    "ramp_allows",
    "ramp_wave",
    "role_arn",
    "session_name",
    "session_policy",
    "split_bodies",
    "status_role_actions",
    "status_source",
    "target_role_statements",
    "task_names",
]


@dataclass(frozen=True, slots=True)
class StatusSource:
    """A request's records in the ledger table: its jobs and its request record."""

    jobs: Ledger
    requests: RequestLedger


def status_source(table: str, client: Callable[[], DynamoDBClient]) -> StatusSource:
    """The worker's ledger in DynamoDB ``table``; ``client`` is called once, on first use.

    The CLI reads jobs (``jobs(request_id)``) and request records; of the request records it
    writes only what an operator decides (cancel, update). It never claims or finishes jobs.
    """
    return StatusSource(DynamoDBLedger(table, client), DynamoDBRequests(table, client))
