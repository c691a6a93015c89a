"""Plugins registered by name, imported lazily through a static name -> module map.

The map keeps cold start small (a message for one task imports only that plugin) and makes the
set of tasks predictable. ``@register`` validates a plugin when its module is imported and keeps
its compiled parameter validator: a duplicate name or an incomplete declaration fails at import,
not at 3 a.m., and a schema is compiled once per execution environment.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import fastjsonschema

from tasks.base import TARGET, Access, RateLimit, Task
from tasks.errors import UnknownTaskError

__all__ = [
    "TASK_MODULES",
    "PluginError",
    "all_tasks",
    "get_task",
    "params_validator",
    "register",
    "task_names",
]

TASK_MODULES: Final[Mapping[str, str]] = {
    "cloudfront.invalidate": "tasks.cloudfront",
    "ssm.send_command": "tasks.ssm",
    "lambda.invoke": "tasks.awslambda",
    "wafv2.update_ip_set": "tasks.wafv2",
    "dns.register_instance": "tasks.dns",
}

_NAME_RE = re.compile(r"^[a-z][a-z0-9]*\.[a-z][a-z0-9_]*$")
_ACTION_RE = re.compile(r"^[a-z0-9-]+:[A-Z][A-Za-z0-9]+$")
_ROLE_RE = re.compile(r"^[a-z][a-z_]*$")
_registry: dict[str, Task] = {}
_validators: dict[str, Callable[[Any], Any]] = {}

T = TypeVar("T", bound=type[Task])


class PluginError(TypeError):
    """A plugin declaration is invalid; raised at import of the plugin's module."""


def _check_declaration(cls: type[Task]) -> Callable[[Any], Any]:
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
    validator = _compile_schema(cls, where)
    _check_access(cls, where)
    rate = getattr(cls, "rate", None)
    if not isinstance(rate, RateLimit) or rate.per_second <= 0 or rate.burst < 1:
        raise PluginError(f"{where}: rate must be a RateLimit with a positive rate")
    if not rate.source:
        raise PluginError(f"{where}: rate.source must say where the figure comes from")
    if getattr(cls.run, "__isabstractmethod__", False):
        raise PluginError(f"{where}: run() is not implemented")
    return validator


def _compile_schema(cls: type[Task], where: str) -> Callable[[Any], Any]:
    schema = getattr(cls, "params_schema", None)
    if not isinstance(schema, Mapping) or schema.get("type") != "object":
        raise PluginError(f"{where}: params_schema must be a JSON Schema of type object")
    if schema.get("additionalProperties") is not False:
        raise PluginError(f"{where}: params_schema must refuse unknown fields")
    try:
        # A plain-JSON copy: fastjsonschema wants dicts and lists, not Mappings and tuples.
        validator: Callable[[Any], Any] = fastjsonschema.compile(json.loads(json.dumps(schema)))
    except fastjsonschema.JsonSchemaDefinitionException as exc:
        raise PluginError(f"{where}: params_schema is invalid: {exc}") from exc
    return validator


def _check_access(cls: type[Task], where: str) -> None:
    access = getattr(cls, "access", None)
    if not isinstance(access, Mapping) or TARGET not in access:
        raise PluginError(f"{where}: access must map account roles to Access, with {TARGET!r}")
    for role, grant in access.items():
        if not isinstance(grant, Access) or not _ROLE_RE.match(role):
            raise PluginError(f"{where}: access[{role!r}] must be an Access")
        actions = grant.all_actions
        if not all(isinstance(a, str) and _ACTION_RE.match(a) for a in actions):
            raise PluginError(f"{where}: access[{role!r}] must list 'service:Action' names")
    if not any(grant.all_actions for grant in access.values()):
        raise PluginError(f"{where}: access grants no action")
    if cls.resource_arns is Task.resource_arns:
        raise PluginError(f"{where}: resource_arns() is not implemented (session policy)")


def register(cls: T) -> T:
    """Class decorator: validate the plugin and make its task name available."""
    validator = _check_declaration(cls)
    _registry[cls.name] = cls()
    _validators[cls.name] = validator
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


def params_validator(name: str) -> Callable[[Any], Any]:
    """The compiled JSON Schema validator of ``name``'s parameters (raises like fastjsonschema)."""
    get_task(name)
    return _validators[name]


def all_tasks() -> list[Task]:
    return [get_task(name) for name in task_names()]
