"""Plugins registered by name, imported lazily through a static name -> module map.

The map keeps cold start small (a message for one task imports only that plugin) and makes the
set of tasks predictable. ``@register`` validates a plugin when its module is imported: a
duplicate name or an incomplete declaration fails at import, not at 3 a.m.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from typing import Final, TypeVar

import fastjsonschema

from handler.exceptions import UnknownTaskError
from tasks.base import RateLimit, Task

__all__ = ["TASK_MODULES", "PluginError", "all_tasks", "get_task", "register", "task_names"]

TASK_MODULES: Final[Mapping[str, str]] = {
    "cloudfront.invalidate": "tasks.cloudfront",
    "ssm.send_command": "tasks.ssm",
    "lambda.invoke": "tasks.awslambda",
    "wafv2.update_ip_set": "tasks.wafv2",
    "dns.register_instance": "tasks.dns",
}

_NAME_RE = re.compile(r"^[a-z][a-z0-9]*\.[a-z][a-z0-9_]*$")
_ACTION_RE = re.compile(r"^[a-z0-9-]+:[A-Z][A-Za-z0-9]+$")
_registry: dict[str, Task] = {}

T = TypeVar("T", bound=type[Task])


class PluginError(TypeError):
    """A plugin declaration is invalid; raised at import of the plugin's module."""


def _check_declaration(cls: type[Task]) -> None:
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise PluginError(f"{cls.__qualname__}: name must look like 'service.action', got {name!r}")
    where = f"plugin {name!r} ({cls.__module__}.{cls.__qualname__})"
    if TASK_MODULES.get(name) != cls.__module__:
        raise PluginError(f"{where}: add {name!r}: {cls.__module__!r} to TASK_MODULES")
    if name in _registry:
        raise PluginError(f"{where}: task name already registered")
    for attr in ("description", "service"):
        if not isinstance(getattr(cls, attr, None), str) or not getattr(cls, attr):
            raise PluginError(f"{where}: missing {attr}")
    schema = getattr(cls, "params_schema", None)
    if not isinstance(schema, Mapping) or schema.get("type") != "object":
        raise PluginError(f"{where}: params_schema must be a JSON Schema of type object")
    if schema.get("additionalProperties") is not False:
        raise PluginError(f"{where}: params_schema must refuse unknown fields")
    try:
        fastjsonschema.compile(dict(schema))
    except fastjsonschema.JsonSchemaDefinitionException as exc:
        raise PluginError(f"{where}: params_schema is invalid: {exc}") from exc
    _check_permissions(cls, where)
    rate = getattr(cls, "rate", None)
    if not isinstance(rate, RateLimit) or rate.per_second <= 0 or rate.burst < 1:
        raise PluginError(f"{where}: rate must be a RateLimit with a positive rate")
    if getattr(cls.run, "__isabstractmethod__", False):
        raise PluginError(f"{where}: run() is not implemented")


def _check_permissions(cls: type[Task], where: str) -> None:
    actions = getattr(cls, "iam_actions", None)
    if not actions or not all(isinstance(a, str) and _ACTION_RE.match(a) for a in actions):
        raise PluginError(f"{where}: iam_actions must list 'service:Action' names")
    if not set(getattr(cls, "unscoped_actions", ())) <= set(actions):
        raise PluginError(f"{where}: unscoped_actions must be a subset of iam_actions")
    if cls.resource_arns is Task.resource_arns:
        raise PluginError(f"{where}: resource_arns() is not implemented (session policy)")


def register(cls: T) -> T:
    """Class decorator: validate the plugin and make its task name available."""
    _check_declaration(cls)
    _registry[cls.name] = cls()
    return cls


def task_names() -> tuple[str, ...]:
    return tuple(sorted(TASK_MODULES))


def get_task(name: str) -> Task:
    """The plugin for ``name``, importing its module on first use."""
    module = TASK_MODULES.get(name)
    if module is None:
        known = ", ".join(task_names())
        raise UnknownTaskError(f"unknown task {name!r}; known tasks: {known}")
    if name not in _registry:
        importlib.import_module(module)
    return _registry[name]


def all_tasks() -> list[Task]:
    return [get_task(name) for name in task_names()]
