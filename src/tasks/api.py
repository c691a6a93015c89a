"""The plugin API: everything a task plugin may import, and nothing of the worker.

Plugins depend on this small surface, never on ``handler``; the worker depends on the plugins
through ``tasks.registry``. A new plugin imports its names from here.
"""

from tasks.aws import ACCOUNT_ID_PATTERN, GLOBAL_CONTROL_PLANE_REGION, REGION_PATTERN, partition_of
from tasks.base import (
    TARGET,
    Access,
    Call,
    Job,
    Progress,
    RateLimit,
    RemoteStatus,
    Task,
    TaskContext,
    TaskResult,
)
from tasks.errors import (
    FanoutError,
    InvalidParamsError,
    PermanentError,
    RetryableError,
    TaskFailedError,
    TransientError,
)
from tasks.registry import get_task, register

__all__ = [
    "ACCOUNT_ID_PATTERN",
    "GLOBAL_CONTROL_PLANE_REGION",
    "REGION_PATTERN",
    "TARGET",
    "Access",
    "Call",
    "FanoutError",
    "InvalidParamsError",
    "Job",
    "PermanentError",
    "Progress",
    "RateLimit",
    "RemoteStatus",
    "RetryableError",
    "Task",
    "TaskContext",
    "TaskFailedError",
    "TaskResult",
    "TransientError",
    "get_task",
    "partition_of",
    "register",
]
