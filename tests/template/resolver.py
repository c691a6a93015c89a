"""A small CloudFormation intrinsic-function resolver for template tests.

It answers "what does this template deploy for these parameter values?" without an AWS account:
parameters (defaults overridden by the test), Conditions, Rules, and the intrinsic functions the
templates use (Ref, Fn::GetAtt, Fn::Sub, Fn::Join, Fn::Split, Fn::Select, Fn::If,
Fn::FindInMap, AWS::NoValue). Resources are not created: a Ref to one resolves to
``<Logical>`` and an Fn::GetAtt to ``<Logical>.<Attribute>``, so tests can compare references
without knowing physical names. Anything else is an error, never a silent pass.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = ["PSEUDO_PARAMETERS", "Resolved", "resolve_template"]

PSEUDO_PARAMETERS = {
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::StackName": "fanout-test",
    "AWS::URLSuffix": "amazonaws.com",
}
_NO_VALUE = object()
_SUB_VARIABLE = re.compile(r"\$\{([^}]+)\}")


class ResolveError(ValueError):
    """The template uses something this resolver does not model."""


@dataclass(frozen=True)
class Resolved:
    """The template's resources (created ones only), outputs and conditions for one input."""

    parameters: dict[str, Any]
    conditions: dict[str, bool]
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    failed_rules: tuple[str, ...] = ()

    def properties(self, logical_id: str) -> dict[str, Any]:
        return dict(self.resources[logical_id].get("Properties", {}))


def _parameter_values(template: dict[str, Any], overrides: dict[str, str]) -> dict[str, Any]:
    declared = template.get("Parameters", {})
    unknown = set(overrides) - set(declared)
    if unknown:
        raise ResolveError(f"unknown parameters {sorted(unknown)}")
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        raw = str(overrides.get(name, spec.get("Default", "")))
        pattern = spec.get("AllowedPattern")
        if pattern is not None and spec["Type"] == "String" and not re.fullmatch(pattern, raw):
            raise ResolveError(f"{name}={raw!r} does not match its AllowedPattern {pattern}")
        if "AllowedValues" in spec and raw not in [str(v) for v in spec["AllowedValues"]]:
            raise ResolveError(f"{name}={raw!r} is not one of {spec['AllowedValues']}")
        values[name] = raw.split(",") if spec["Type"] == "CommaDelimitedList" else raw
    return values


class _Resolver:
    def __init__(self, template: dict[str, Any], parameters: dict[str, Any]) -> None:
        self.template = template
        self.parameters = parameters
        self.conditions: dict[str, bool] = {}

    # ------------------------------------------------------------------ conditions and rules

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            self.conditions[name] = self.truth(self.template["Conditions"][name])
        return self.conditions[name]

    def truth(self, node: Any) -> bool:
        if isinstance(node, bool):
            return node
        ((function, argument),) = node.items()
        if function == "Condition":
            return self.condition(argument)
        logic = {"Fn::Not": lambda xs: not xs[0], "Fn::And": all, "Fn::Or": any}
        if function in logic:
            return bool(logic[function]([self.truth(a) for a in argument]))
        left, right = (self.value(a) for a in argument)
        if function == "Fn::Equals":
            return bool(left == right)
        if function == "Fn::Contains":
            return right in left
        raise ResolveError(f"unsupported condition function {function}")

    def failed_rules(self) -> tuple[str, ...]:
        failed = []
        for name, rule in self.template.get("Rules", {}).items():
            if "RuleCondition" in rule and not self.truth(rule["RuleCondition"]):
                continue
            if not all(self.truth(a["Assert"]) for a in rule["Assertions"]):
                failed.append(name)
        return tuple(failed)

    # ------------------------------------------------------------------ values

    def reference(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in self.parameters:
            return self.parameters[name]
        if name in PSEUDO_PARAMETERS:
            return PSEUDO_PARAMETERS[name]
        if name in self.template["Resources"]:
            return f"<{name}>"
        raise ResolveError(f"Ref to unknown {name}")

    def sub(self, text: str, variables: dict[str, Any]) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            logical, _, attribute = name.partition(".")
            if attribute:
                if logical not in self.template["Resources"]:
                    raise ResolveError(f"Fn::Sub GetAtt of unknown {logical}")
                return f"<{logical}.{attribute}>"
            value = self.reference(name)
            if isinstance(value, list):
                raise ResolveError(f"Fn::Sub of list parameter {name}")
            return str(value)

        return _SUB_VARIABLE.sub(replace, text)

    def value(self, node: Any) -> Any:
        if isinstance(node, list):
            items = [self.value(n) for n in node]
            return [i for i in items if i is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, argument),) = node.items()
            if key == "Ref":
                return self.reference(argument)
            if key.startswith("Fn::"):
                intrinsic = self.INTRINSICS.get(key)
                if intrinsic is None:
                    raise ResolveError(f"unsupported intrinsic {key}")
                return intrinsic(self, argument)
        resolved = {k: self.value(v) for k, v in node.items()}
        return {k: v for k, v in resolved.items() if v is not _NO_VALUE}

    def get_att(self, argument: Any) -> str:
        logical, attribute = argument.split(".", 1) if isinstance(argument, str) else argument
        if logical not in self.template["Resources"]:
            raise ResolveError(f"Fn::GetAtt of unknown {logical}")
        return f"<{logical}.{attribute}>"

    def fn_sub(self, argument: Any) -> str:
        if isinstance(argument, str):
            return self.sub(argument, {})
        text, variables = argument
        return self.sub(text, {k: self.value(v) for k, v in variables.items()})

    def fn_join(self, argument: Any) -> str:
        separator, items = argument
        return str(separator).join(str(i) for i in self.value(items))

    def fn_split(self, argument: Any) -> list[str]:
        separator, text = argument
        return str(self.value(text)).split(separator)

    def fn_select(self, argument: Any) -> Any:
        index, items = argument
        return self.value(items)[int(self.value(index))]

    def fn_if(self, argument: Any) -> Any:
        name, when_true, when_false = argument
        return self.value(when_true if self.condition(name) else when_false)

    def fn_find_in_map(self, argument: Any) -> Any:
        mapping, first, second = (self.value(a) for a in argument)
        return self.template["Mappings"][mapping][str(first)][str(second)]

    INTRINSICS: ClassVar[dict[str, Callable[[_Resolver, Any], Any]]] = {
        "Fn::GetAtt": get_att,
        "Fn::Sub": fn_sub,
        "Fn::Join": fn_join,
        "Fn::Split": fn_split,
        "Fn::Select": fn_select,
        "Fn::If": fn_if,
        "Fn::FindInMap": fn_find_in_map,
    }


def resolve_template(template: dict[str, Any], **parameters: str) -> Resolved:
    """Resolve ``template`` for these parameter values (the others keep their defaults).

    Raises ResolveError when a value breaks its AllowedPattern/AllowedValues, like
    CloudFormation would; failed Rules are reported in ``failed_rules``.
    """
    resolver = _Resolver(template, _parameter_values(template, parameters))
    for name in template.get("Conditions", {}):
        resolver.condition(name)
    resources = {
        logical: resolver.value(resource)
        for logical, resource in template["Resources"].items()
        if "Condition" not in resource or resolver.condition(resource["Condition"])
    }
    outputs = {
        name: resolver.value(output["Value"])
        for name, output in template.get("Outputs", {}).items()
        if "Condition" not in output or resolver.condition(output["Condition"])
    }
    return Resolved(
        parameters=resolver.parameters,
        conditions=dict(resolver.conditions),
        resources=resources,
        outputs=outputs,
        failed_rules=resolver.failed_rules(),
    )
