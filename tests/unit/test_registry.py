"""Meta-tests walking the task registry, and the guards ``@register`` applies at import."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

import tasks
from handler.envelope import parse_message, validate
from handler.exceptions import BadMessageError, PermanentError, UnknownTaskError
from tasks import registry
from tasks.base import TARGET, Access, Call, RateLimit, Task, TaskContext, TaskResult
from tasks.registry import TASK_MODULES, PluginError, all_tasks, get_task, register

REPO = Path(__file__).resolve().parents[2]
EVENTS = REPO / "events"
NOT_PLUGINS = {"__init__", "base", "registry", "api", "aws", "errors"}
ACTION = r"^[a-z0-9-]+:[A-Z][A-Za-z0-9]+$"


def sample_bodies() -> list[tuple[str, str]]:
    """(file name, SQS body) of every record in events/*.json."""
    bodies = []
    for path in sorted(EVENTS.glob("*.json")):
        event = json.loads(path.read_text())
        bodies += [(path.name, r["body"]) for r in event.get("Records", []) if "body" in r]
    return bodies


def valid_samples() -> dict[str, list[Mapping[str, Any]]]:
    """Task name -> params of every job in the valid sample bodies (legacy ones included)."""
    samples: dict[str, list[Mapping[str, Any]]] = {}
    for _, body in sample_bodies():
        try:
            envelope = parse_message(body, message_id="sample", default_region="us-east-1")
        except PermanentError:
            continue  # samples of bad messages are there on purpose
        samples.setdefault(envelope.task, []).extend(job.params for job in envelope.jobs)
    return samples


# --- walking the registry ----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "module"), sorted(TASK_MODULES.items()))
def test_every_mapped_module_registers_exactly_its_task_name(name: str, module: str) -> None:
    """GIVEN a TASK_MODULES entry name -> module
    WHEN the module is imported and the task looked up
    THEN the plugin is registered under that name, by a class of that module."""
    importlib.import_module(module)

    task = get_task(name)

    assert task.name == name
    assert type(task).__module__ == module


def test_every_plugin_module_in_the_package_is_mapped() -> None:
    """GIVEN the modules in src/tasks/ other than the plugin API and the registry
    WHEN they are compared with TASK_MODULES
    THEN every one of them is mapped (a plugin cannot exist unreachable)."""
    modules = {f"tasks.{m.name}" for m in pkgutil.iter_modules(tasks.__path__)}

    assert modules - {f"tasks.{n}" for n in NOT_PLUGINS} <= set(TASK_MODULES.values())


def test_the_registry_holds_every_mapped_task_and_nothing_else() -> None:
    """GIVEN every plugin loaded
    WHEN the registry is listed
    THEN its task names are exactly TASK_MODULES' names."""
    assert sorted(t.name for t in all_tasks()) == sorted(TASK_MODULES)


@pytest.mark.parametrize("name", sorted(TASK_MODULES))
def test_every_plugin_declares_description_service_actions_and_rate(name: str) -> None:
    """GIVEN a registered plugin
    WHEN its declaration is read
    THEN it has a description, a service, 'service:Action' IAM actions including its rate-limited
    API, and a positive RateLimit."""
    task = get_task(name)

    assert task.description.strip()
    assert task.service.strip()
    assert task.iam_actions
    assert all(re.match(ACTION, a) for a in task.iam_actions)
    assert isinstance(task.rate, RateLimit)
    assert task.rate.per_second > 0
    assert task.rate.burst >= 1
    assert task.rate.api in task.iam_actions
    assert task.rate.source.strip(), "a declared rate says where it comes from"


@pytest.mark.parametrize("name", sorted(TASK_MODULES))
def test_every_plugin_has_a_valid_sample_in_events(name: str) -> None:
    """GIVEN the SQS events in events/*.json
    WHEN their bodies are parsed like the worker does
    THEN at least one valid body is a message for this task."""
    assert valid_samples().get(name), f"no valid events/*.json sample for {name}"


@pytest.mark.parametrize("name", sorted(TASK_MODULES))
def test_every_plugin_schema_refuses_unknown_fields(name: str) -> None:
    """GIVEN valid params of the plugin (from its events/ sample) plus one unknown field
    WHEN they are validated against the plugin's params_schema
    THEN they are refused, and the reason names the unknown field."""
    task = get_task(name)
    params = valid_samples()[name][0]
    validate(task.params_schema, dict(params), what="params")  # the sample itself is valid

    with pytest.raises(BadMessageError) as caught:
        validate(task.params_schema, {**params, "role_arn": "x"}, what="params")

    assert "role_arn" in caught.value.reason


@pytest.mark.parametrize("module", sorted(set(TASK_MODULES.values())))
def test_every_plugin_module_has_a_unit_test_file(module: str) -> None:
    """GIVEN a plugin module tasks.<area>
    WHEN tests/unit is listed
    THEN tests/unit/test_<area>_plugin.py exists."""
    area = module.rsplit(".", 1)[1]

    assert (REPO / "tests" / "unit" / f"test_{area}_plugin.py").is_file()


def test_get_task_of_an_unknown_name_lists_the_known_tasks() -> None:
    """GIVEN a task name that is not in TASK_MODULES
    WHEN it is looked up
    THEN UnknownTaskError is raised naming it and every known task."""
    with pytest.raises(UnknownTaskError) as caught:
        get_task("s3.delete_bucket")

    assert "s3.delete_bucket" in caught.value.reason
    assert all(name in caught.value.reason for name in TASK_MODULES)


# --- registration guards -----------------------------------------------------------------------

TEST_TASK = "unittest.echo"


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry copy, with TEST_TASK mapped to this module; both restored afterwards."""
    all_tasks()  # load the real plugins first, so the copy holds them
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    monkeypatch.setitem(registry.TASK_MODULES, TEST_TASK, __name__)


class Complete(Task):
    """A minimal plugin that passes every check (subclasses break one thing each)."""

    name = TEST_TASK
    description = "Echo for tests."
    service = "sts"
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"word": {"type": "string"}},
    }
    access: ClassVar[Mapping[str, Access]] = {TARGET: Access(unscoped=("sts:GetCallerIdentity",))}
    rate = RateLimit(api="sts:GetCallerIdentity", per_second=1.0, source="a test")

    def resource_arns(
        self, role: str, partition: str, account: str, params: Mapping[str, Any] | None
    ) -> tuple[str, ...]:
        return ()

    def run(self, ctx: TaskContext, call: Call) -> TaskResult:
        return TaskResult(resource_id="echo")


def test_a_complete_plugin_registers_and_is_found_by_name(sandbox: None) -> None:
    """GIVEN a complete plugin class whose name is mapped to its module
    WHEN it is decorated with @register
    THEN get_task returns an instance of it."""
    register(Complete)

    assert isinstance(get_task(TEST_TASK), Complete)


def test_registering_a_duplicate_name_fails(sandbox: None) -> None:
    """GIVEN a plugin already registered under a name
    WHEN a second class with the same name is decorated
    THEN PluginError says the name is already registered, and the first plugin stays."""
    register(Complete)

    class Again(Complete):
        pass

    with pytest.raises(PluginError, match="already registered"):
        register(Again)
    assert type(get_task(TEST_TASK)) is Complete


def test_registering_a_name_missing_from_task_modules_fails(sandbox: None) -> None:
    """GIVEN a complete plugin whose name is not in TASK_MODULES
    WHEN it is decorated
    THEN PluginError asks for the TASK_MODULES entry, and nothing is registered."""

    class Unmapped(Complete):
        name = "unittest.unmapped"

    with pytest.raises(PluginError, match="TASK_MODULES"):
        register(Unmapped)
    assert "unittest.unmapped" not in registry._registry


def test_registering_a_plugin_of_another_module_than_mapped_fails(sandbox: None) -> None:
    """GIVEN a plugin named like a real task (cloudfront.invalidate) defined in another module
    WHEN it is decorated
    THEN PluginError is raised (a plugin cannot hijack another module's task name)."""

    class Hijack(Complete):
        name = "cloudfront.invalidate"

    with pytest.raises(PluginError, match="TASK_MODULES"):
        register(Hijack)
    assert type(get_task("cloudfront.invalidate")).__name__ == "InvalidateTask"


class NoActions(Complete):
    access: ClassVar[Mapping[str, Access]] = {TARGET: Access()}


class BadAction(Complete):
    access: ClassVar[Mapping[str, Access]] = {TARGET: Access(actions=("sts.GetCallerIdentity",))}


class NoTargetRole(Complete):
    access: ClassVar[Mapping[str, Access]] = {"other": Access(actions=("sts:GetCallerIdentity",))}


class UnsourcedRate(Complete):
    rate = RateLimit(api="sts:GetCallerIdentity", per_second=1.0)


class OpenSchema(Complete):
    params_schema: ClassVar[Mapping[str, Any]] = {"type": "object", "properties": {}}


class NotObjectSchema(Complete):
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "array",
        "additionalProperties": False,
    }


class NoRate(Complete):
    rate = None  # type: ignore[assignment]


class ZeroRate(Complete):
    rate = RateLimit(api="sts:GetCallerIdentity", per_second=0.0, source="a test")


class NoDescription(Complete):
    description = ""


class BadName(Complete):
    name = "Unittest Echo"


class NoRun(Task):
    name = TEST_TASK
    description = "No run."
    service = "sts"
    params_schema: ClassVar[Mapping[str, Any]] = Complete.params_schema
    access = Complete.access
    rate = Complete.rate
    resource_arns = Complete.resource_arns


class NoResourceArns(Task):
    name = TEST_TASK
    description = "No resource_arns."
    service = "sts"
    params_schema: ClassVar[Mapping[str, Any]] = Complete.params_schema
    access = Complete.access
    rate = Complete.rate
    run = Complete.run


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        pytest.param(NoActions, "grants no action", id="no-actions"),
        pytest.param(BadAction, "'service:Action'", id="action-not-service-colon-action"),
        pytest.param(NoTargetRole, "'target'", id="no-target-role"),
        pytest.param(UnsourcedRate, "rate.source", id="rate-without-source"),
        pytest.param(OpenSchema, "refuse unknown fields", id="schema-allows-unknown-fields"),
        pytest.param(NotObjectSchema, "type object", id="schema-not-an-object"),
        pytest.param(NoRate, "RateLimit", id="no-rate"),
        pytest.param(ZeroRate, "positive rate", id="zero-rate"),
        pytest.param(NoDescription, "description", id="no-description"),
        pytest.param(BadName, "service.action", id="bad-name"),
        pytest.param(NoRun, "run()", id="no-run"),
        pytest.param(NoResourceArns, "resource_arns()", id="no-resource-arns"),
    ],
)
def test_registering_an_incomplete_plugin_fails_naming_what_is_missing(
    sandbox: None, plugin: type[Task], message: str
) -> None:
    """GIVEN a plugin class that is complete but for one declaration
    WHEN it is decorated with @register
    THEN PluginError names the missing declaration, and the task is not registered."""
    with pytest.raises(PluginError) as caught:
        register(plugin)

    assert message in str(caught.value)
    assert TEST_TASK not in registry._registry
