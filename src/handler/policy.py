"""IAM policies derived from the plugins' declarations (``Task.access``).

- :func:`session_policy`: the inline policy passed on every AssumeRole. The effective
  permissions of a session are the intersection of the target role's policies and this one, so
  a job can do in an account only what its plugin declares for that account's role (the target,
  or e.g. the directory account of ``dns.register_instance``), on that plugin's resources there.
- :func:`target_role_statements`: what the target role itself must allow - every role of every
  plugin, since any allowed account may play any role (``fanout policy``; a test keeps
  ``target-role.yaml`` in step with it).
- :func:`status_role_actions`: the read-only actions of ``fanout status --refresh``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from tasks.base import TARGET, Task
from tasks.registry import get_task

__all__ = ["session_policy", "statement_sid", "status_role_actions", "target_role_statements"]


def session_policy(
    task: Task,
    partition: str,
    account: str,
    roles: Iterable[str] = (TARGET,),
    params: Mapping[str, Any] | None = None,
) -> str:
    """Compact JSON (session policies are limited to 2,048 packed characters).

    ``roles``: what ``account`` is to the job (usually just the target). ``params``: the call's
    own parameters for the narrowest scope, or None for the task's resources in the account.
    """
    ordered = tuple(sorted(set(roles)))
    if params is None:
        return _task_policy(task.name, partition, account, ordered)
    return _render(task, partition, account, ordered, params)


@lru_cache(maxsize=4096)
def _task_policy(task_name: str, partition: str, account: str, roles: tuple[str, ...]) -> str:
    # The same for every call of a task in an account: rendered once per execution environment.
    return _render(get_task(task_name), partition, account, roles, None)


def _render(
    task: Task,
    partition: str,
    account: str,
    roles: tuple[str, ...],
    params: Mapping[str, Any] | None,
) -> str:
    statements: list[dict[str, Any]] = []
    for role in roles:
        access = task.access.get(role)
        if access is None:
            continue
        if access.actions:
            resources = list(task.resource_arns(role, partition, account, params))
            statements.append(
                {"Effect": "Allow", "Action": list(access.actions), "Resource": resources}
            )
        if access.unscoped:
            statements.append({"Effect": "Allow", "Action": list(access.unscoped), "Resource": "*"})
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, separators=(",", ":"))


def statement_sid(task_name: str, role: str = TARGET) -> str:
    """``cloudfront.invalidate`` -> ``CloudfrontInvalidate`` (Sids allow only [A-Za-z0-9]);
    a role other than the target is appended (``DnsRegisterInstanceDirectory``)."""
    parts = re.split(r"[._]", task_name) + ([] if role == TARGET else re.split(r"_", role))
    return "".join(part.capitalize() for part in parts)


def target_role_statements(
    tasks: list[Task], partition: str = "${AWS::Partition}"
) -> list[dict[str, Any]]:
    """The target role's statements: per plugin and account role, scoped and unscoped."""
    account = "${AWS::AccountId}"
    statements: list[dict[str, Any]] = []
    for task in sorted(tasks, key=lambda t: t.name):
        for role in sorted(task.access, key=lambda r: (r != TARGET, r)):
            access = task.access[role]
            sid = statement_sid(task.name, role)
            if access.actions:
                statements.append(
                    {
                        "Sid": sid,
                        "Effect": "Allow",
                        "Action": list(access.actions),
                        "Resource": list(task.resource_arns(role, partition, account, None)),
                    }
                )
            if access.unscoped:
                statements.append(
                    {
                        "Sid": sid + "Unscoped",
                        "Effect": "Allow",
                        "Action": list(access.unscoped),
                        "Resource": "*",
                    }
                )
    return statements


def status_role_actions(tasks: list[Task]) -> list[str]:
    """Every read-only action ``fanout status --refresh`` may call, sorted."""
    return sorted({action for task in tasks for action in task.status_actions})
