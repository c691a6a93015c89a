"""The function's configuration: one validated object, built once per execution environment.

Every environment variable the worker reads is named here and nowhere else. Build it with
:func:`get_settings` (cached; tests call ``get_settings.cache_clear()`` after ``monkeypatch``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Final

from handler.contract import MAX_TARGETS_PER_MESSAGE
from handler.exceptions import ConfigurationError
from tasks.aws import ACCOUNT_ID_RE

__all__ = ["OperatorSettings", "Settings", "get_settings", "operator_settings", "tracing_enabled"]

_OU_RE = re.compile(r"^ou-[0-9a-z]{4,32}-[a-z0-9]{8,32}$")
# IAM role names: 1-64 of [\w+=,.@-]; paths: "/" or "/segment/.../".
# template.yaml's TargetRoleName default (tests/template checks they agree): the operator tools'
# and the emulator's default too.
DEFAULT_TARGET_ROLE_NAME: Final = "OpsFanoutTargetRole"
_ROLE_NAME_RE = re.compile(r"^[\w+=,.@-]{1,64}$", re.ASCII)
_ROLE_PATH_RE = re.compile(r"^/(?:[\x21-\x7e]{1,510}/)?$")
_EXTERNAL_ID_RE = re.compile(r"^[\w+=,.@:/-]{2,1224}$", re.ASCII)
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigurationError(f"{name} must be true or false, got {value!r}")


_RATE_RE = re.compile(r"^([a-z0-9-]+:[A-Za-z0-9]+)=([0-9]+(?:\.[0-9]+)?)(?:/([0-9]+))?$")


def _rate_limits(raw: str) -> dict[str, tuple[float, int]]:
    """``"cloudfront:CreateInvalidation=5/10,ssm:SendCommand=20"`` (rate per second[/burst])."""
    limits: dict[str, tuple[float, int]] = {}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        match = _RATE_RE.match(item)
        if match is None or float(match.group(2)) <= 0:
            raise ConfigurationError(
                f"RATE_LIMITS entries look like service:Action=rate[/burst], got {item!r}"
            )
        rate = float(match.group(2))
        burst = int(match.group(3) or max(1, round(rate)))
        limits[match.group(1)] = (rate, max(1, burst))
    return limits


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, "").strip().lower() or choices[0]
    if value not in choices:
        raise ConfigurationError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not re.fullmatch(r"[0-9]+", raw) or int(raw) < 1:
        raise ConfigurationError(f"{name} must be a positive integer, got {raw!r}")
    return int(raw)


@dataclass(frozen=True, slots=True)
class Settings:
    """What the worker may do and where. Build with :meth:`from_env` or directly in tests."""

    region: str
    target_role_name: str
    target_role_path: str = "/"
    external_id: str | None = None
    allowed_account_ids: frozenset[str] = frozenset()
    allowed_ou_ids: frozenset[str] = frozenset()
    allow_any_account: bool = False
    dead_letter_queue_url: str | None = None
    work_queue_url: str | None = None
    ledger_table: str | None = None
    # Where "Request Finished" events go (an EventBridge bus name or ARN); unset: none.
    event_bus_name: str | None = None
    # Where each finished request's per-target results are exported (JSON lines); unset: none.
    results_bucket: str | None = None
    max_attempts: int = 5
    # Deliveries in which a target could not start (no time left, its lane stopped, its canary
    # pending) before it is dead-lettered: waiting is bounded too.
    max_waits: int = 20
    service_name: str = "fanout"
    metrics_namespace: str = "Fanout"
    max_workers: int = 16  # lanes mostly wait on I/O or a token bucket: threads are cheap
    # Per-API overrides of the plugins' declared rates: api -> (per second, burst).
    rate_limits: Mapping[str, tuple[float, int]] = field(default_factory=dict)
    # "table": with a ledger table, instances share each quota through it
    # (handler.ratelimit_shared); "instance": each instance paces itself alone.
    rate_sharing: str = "table"
    # "task": session policy = the task's actions on its resources in the account (one STS
    # call per account and task); "resource": only the call's own resources (one per resource).
    session_policy_scope: str = "task"
    max_targets_per_message: int = MAX_TARGETS_PER_MESSAGE

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or ""
        if not region:
            raise ConfigurationError("AWS_REGION (or AWS_DEFAULT_REGION) must be set")
        role_name = _role_name(env, required=True)
        return cls(
            region=region,
            target_role_name=role_name,
            target_role_path=_role_path(env),
            external_id=_external_id(env),
            allowed_account_ids=_allowed_accounts(env),
            allowed_ou_ids=_allowed_ous(env),
            allow_any_account=_flag(env, "ALLOW_ANY_ACCOUNT"),
            dead_letter_queue_url=_queue_url(env, "DEAD_LETTER_QUEUE_URL"),
            work_queue_url=_queue_url(env, "WORK_QUEUE_URL"),
            ledger_table=env.get("LEDGER_TABLE", "").strip() or None,
            event_bus_name=env.get("EVENT_BUS_NAME", "").strip() or None,
            results_bucket=env.get("RESULTS_BUCKET", "").strip() or None,
            max_attempts=_positive_int(env, "MAX_ATTEMPTS", 5),
            max_waits=_positive_int(env, "MAX_WAITS", 20),
            service_name=env.get("POWERTOOLS_SERVICE_NAME", "").strip() or "fanout",
            metrics_namespace=env.get("POWERTOOLS_METRICS_NAMESPACE", "").strip() or "Fanout",
            max_workers=_positive_int(env, "MAX_WORKERS", 16),
            rate_limits=_rate_limits(env.get("RATE_LIMITS", "")),
            rate_sharing=_choice(env, "RATE_SHARING", ("table", "instance")),
            session_policy_scope=_choice(env, "SESSION_POLICY_SCOPE", ("task", "resource")),
            max_targets_per_message=_positive_int(
                env, "MAX_TARGETS_PER_MESSAGE", MAX_TARGETS_PER_MESSAGE
            ),
        )


def _role_name(env: Mapping[str, str], *, required: bool) -> str:
    """TARGET_ROLE_NAME, validated; "" when unset and not ``required``."""
    role_name = env.get("TARGET_ROLE_NAME", "").strip()
    if not role_name and not required:
        return ""
    if not _ROLE_NAME_RE.match(role_name):
        raise ConfigurationError(
            f"TARGET_ROLE_NAME must be an IAM role name ([\\w+=,.@-], 1-64), got {role_name!r}"
        )
    return role_name


def _role_path(env: Mapping[str, str]) -> str:
    role_path = env.get("TARGET_ROLE_PATH", "").strip() or "/"
    if not _ROLE_PATH_RE.match(role_path):
        raise ConfigurationError(f"TARGET_ROLE_PATH must start and end with '/', got {role_path!r}")
    return role_path


def _external_id(env: Mapping[str, str]) -> str | None:
    external_id = env.get("EXTERNAL_ID", "").strip() or None
    if external_id is not None and not _EXTERNAL_ID_RE.match(external_id):
        raise ConfigurationError("EXTERNAL_ID must be 2-1224 of [\\w+=,.@:/-]")
    return external_id


_QUEUE_URL_RE = re.compile(r"^https?://[^\s/]+/[0-9]{12}/[A-Za-z0-9_-]{1,80}(\.fifo)?$")


def _queue_url(env: Mapping[str, str], name: str) -> str | None:
    """An SQS queue URL, or None when unset. A template that resolved to something else (a
    logical id such as ``WorkQueue`` under ``sam local invoke``) is a configuration error."""
    value = env.get(name, "").strip()
    if value and not _QUEUE_URL_RE.match(value):
        raise ConfigurationError(
            f"{name} must be a queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>), "
            f"got {value!r}"
        )
    return value or None


def _allowed_accounts(env: Mapping[str, str]) -> frozenset[str]:
    accounts = frozenset(
        a.strip() for a in env.get("ALLOWED_ACCOUNT_IDS", "").split(",") if a.strip()
    )
    bad = sorted(a for a in accounts if not ACCOUNT_ID_RE.match(a))
    if bad:
        raise ConfigurationError(f"ALLOWED_ACCOUNT_IDS has invalid account ids: {bad}")
    return accounts


def _allowed_ous(env: Mapping[str, str]) -> frozenset[str]:
    ous = frozenset(o.strip() for o in env.get("ALLOWED_OU_IDS", "").split(",") if o.strip())
    bad = sorted(o for o in ous if not _OU_RE.match(o))
    if bad:
        raise ConfigurationError(f"ALLOWED_OU_IDS has invalid OU ids: {bad}")
    return ous


@dataclass(frozen=True, slots=True)
class OperatorSettings:
    """The part of the worker's configuration an operator's tools need, read as the worker
    reads it; ``None`` where the variable is unset (an operator's shell rarely has them all)."""

    target_role_name: str | None
    target_role_path: str = "/"
    external_id: str | None = None
    allowed_account_ids: frozenset[str] = frozenset()
    allowed_ou_ids: frozenset[str] = frozenset()
    allow_any_account: bool = False
    ledger_table: str | None = None

    def refuses(self, account: str) -> bool:
        """True when the worker would certainly refuse ``account``: an allow-list is set, the
        account is not on it, and neither OUs nor ALLOW_ANY_ACCOUNT could admit it."""
        if self.allow_any_account or self.allowed_ou_ids or not self.allowed_account_ids:
            return False
        return account not in self.allowed_account_ids


def operator_settings(env: Mapping[str, str] | None = None) -> OperatorSettings:
    """Role, allow-list and ledger settings from ``env`` (default: the process environment),
    validated like :meth:`Settings.from_env` but without requiring the worker-only variables."""
    env = os.environ if env is None else env
    return OperatorSettings(
        target_role_name=_role_name(env, required=False) or None,
        target_role_path=_role_path(env),
        external_id=_external_id(env),
        allowed_account_ids=_allowed_accounts(env),
        allowed_ou_ids=_allowed_ous(env),
        allow_any_account=_flag(env, "ALLOW_ANY_ACCOUNT"),
        ledger_table=env.get("LEDGER_TABLE", "").strip() or None,
    )


def tracing_enabled(env: Mapping[str, str] | None = None) -> bool:
    """``TRACING=true``: wrap the handler with Powertools Tracer (decided at import time)."""
    return _flag(os.environ if env is None else env, "TRACING")


@cache
def get_settings() -> Settings:
    """The settings of this execution environment, read from the environment on first use."""
    return Settings.from_env()
