"""The environment the CLI needs, read from a deployed fanout stack (``fanout env --stack``).

Outputs and parameters of template.yaml map 1:1 to the variables the verbs read; a test keeps
the names below in step with the template.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from fanout.options import DLQ_URL_ENV, LEDGER_TABLE_ENV, QUEUE_URL_ENV, STATUS_ROLE_ENV

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient

__all__ = [
    "OUTPUT_VARIABLES",
    "PARAMETER_VARIABLES",
    "StackNotFoundError",
    "stack_environment",
]

# template.yaml output -> variable.
OUTPUT_VARIABLES: Final[Mapping[str, str]] = {
    "WorkQueueUrl": QUEUE_URL_ENV,
    "DeadLetterQueueUrl": DLQ_URL_ENV,
    "LedgerTableName": LEDGER_TABLE_ENV,
}
# template.yaml parameter -> variable: what `publish` refuses and where `status --refresh`
# looks for the status role (the target role's path).
PARAMETER_VARIABLES: Final[Mapping[str, str]] = {
    "AllowedAccountIds": "ALLOWED_ACCOUNT_IDS",
    "TargetRolePath": "TARGET_ROLE_PATH",
}


class StackNotFoundError(Exception):
    """No stack of that name, or one that is not a fanout stack; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def stack_environment(
    cloudformation: CloudFormationClient, stack_name: str, *, region: str, status_role: str
) -> dict[str, str]:
    """``AWS_REGION``, the queue URLs, the ledger table, the allow-list, the role path and the
    status role's name, in the order a shell should set them."""
    try:
        [stack] = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except cloudformation.exceptions.ClientError as exc:
        if "does not exist" in str(exc):
            raise StackNotFoundError(f"no stack {stack_name!r} in {region}") from None
        raise
    outputs = {o["OutputKey"]: o.get("OutputValue", "") for o in stack.get("Outputs", [])}
    missing = [name for name in OUTPUT_VARIABLES if name not in outputs]
    if missing:
        status = stack.get("StackStatus", "?")
        raise StackNotFoundError(
            f"stack {stack_name!r} ({status}) has no output {', '.join(missing)}: "
            "not a fanout stack, or not deployed yet"
        )
    parameters = {
        p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])
    }
    environment = {"AWS_REGION": region}
    environment.update({var: outputs[name] for name, var in OUTPUT_VARIABLES.items()})
    environment.update(
        {var: parameters[name] for name, var in PARAMETER_VARIABLES.items() if name in parameters}
    )
    environment[STATUS_ROLE_ENV] = status_role
    return environment
