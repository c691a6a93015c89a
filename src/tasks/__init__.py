"""Task plugins, one module per AWS service area, registered by name (see ``registry``).

``tasks.api`` is the plugin API (what a plugin may import); ``tasks.registry`` is how the worker
finds plugins.
"""

from tasks.base import Call, Job, RateLimit, Task, TaskContext, TaskResult
from tasks.registry import TASK_MODULES, all_tasks, get_task, register

__all__ = [
    "TASK_MODULES",
    "Call",
    "Job",
    "RateLimit",
    "Task",
    "TaskContext",
    "TaskResult",
    "all_tasks",
    "get_task",
    "register",
]
