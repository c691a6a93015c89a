"""IAM policies derived from the plugins' declarations.

- :func:`session_policy`: the inline policy passed on every AssumeRole. The effective
  permissions of a session are the intersection of the target role's policies and this one, so a
  job can do only what its plugin declares, on that plugin's resources in that account.
- :func:`target_role_statements`: what the target role itself must allow (``fanout policy``;
  a test keeps ``target-role.yaml`` in step with it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from tasks.base import Task
from tasks.registry import get_task

__all__ = ["session_policy", "statement_sid", "target_role_statements"]


def session_policy(
    task: Task, partition: str, account: str, params: Mapping[str, Any] | None = None
) -> str:
    """Compact JSON (session policies are limited to 2,048 packed characters)."""
    if params is None:
        return _task_policy(task.name, partition, account)
    return _render(task, partition, account, params)


@lru_cache(maxsize=4096)
def _task_policy(task_name: str, partition: str, account: str) -> str:
    # The same for every call of a task in an account: rendered once per execution environment.
    return _render(get_task(task_name), partition, account, None)


def _render(task: Task, partition: str, account: str, params: Mapping[str, Any] | None) -> str:
    scoped = [a for a in task.iam_actions if a not in task.unscoped_actions]
    statements: list[dict[str, Any]] = []
    if scoped:
        resources = list(task.resource_arns(partition, account, params))
        statements.append({"Effect": "Allow", "Action": scoped, "Resource": resources})
    if task.unscoped_actions:
        statements.append(
            {"Effect": "Allow", "Action": list(task.unscoped_actions), "Resource": "*"}
        )
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, separators=(",", ":"))


def statement_sid(task_name: str) -> str:
    """``cloudfront.invalidate`` -> ``CloudfrontInvalidate`` (Sids allow only [A-Za-z0-9])."""
    return "".join(part.capitalize() for part in re.split(r"[._]", task_name))


def target_role_statements(
    tasks: list[Task], partition: str = "${AWS::Partition}"
) -> list[dict[str, Any]]:
    """The target role's statements: one per plugin (plus one for its unscoped actions)."""
    account = "${AWS::AccountId}"
    statements: list[dict[str, Any]] = []
    for task in sorted(tasks, key=lambda t: t.name):
        sid = statement_sid(task.name)
        scoped = [a for a in task.iam_actions if a not in task.unscoped_actions]
        if scoped:
            statements.append(
                {
                    "Sid": sid,
                    "Effect": "Allow",
                    "Action": scoped,
                    "Resource": list(task.resource_arns(partition, account, None)),
                }
            )
        if task.unscoped_actions:
            statements.append(
                {
                    "Sid": sid + "Unscoped",
                    "Effect": "Allow",
                    "Action": list(task.unscoped_actions),
                    "Resource": "*",
                }
            )
    return statements
