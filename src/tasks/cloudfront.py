"""``cloudfront.invalidate``: CreateInvalidation, coalesced and idempotent.

Jobs of one batch that target the same distribution become one invalidation with the union of
their paths (minus paths a wildcard in the same set already covers). Each call's CallerReference
is derived from its requests, its target and its sorted paths; CloudFront answers a repeated
CallerReference with the same batch by returning the existing invalidation, so repeating the
identical call can never create a second one. That is the whole recovery story: a call whose
answer was lost is simply made again, identically (the worker records a coalesced call's exact
paths in its ledger so that a redelivery in another batch can repeat it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from botocore.exceptions import ClientError

from tasks.api import (
    GLOBAL_CONTROL_PLANE_REGION,
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
    register,
)

# CloudFront quotas per distribution for invalidations in progress.
MAX_PATHS: Final = 3000
MAX_WILDCARD_PATHS: Final = 15
# A coalesced call's paths are recorded in the ledger (DynamoDB items hold 400 KB): keep each
# call's paths under this many bytes of JSON.
MAX_CALL_PATH_BYTES: Final = 200_000


def is_wildcard(path: str) -> bool:
    return path.endswith("*")


def reduce_paths(paths: Iterable[str]) -> list[str]:
    """Sorted unique paths, without those a wildcard of the same set covers.

    ``/img/*`` covers ``/img/a.jpg`` and ``/img/sub/*``; ``/*`` covers everything.
    """
    unique = sorted(set(paths))
    prefixes = [p[:-1] for p in unique if is_wildcard(p)]
    return [p for p in unique if not any(p != w + "*" and p.startswith(w) for w in prefixes)]


def covered(path: str, by: Iterable[str]) -> bool:
    """True when invalidating ``by`` also invalidates ``path`` (same path, or a wildcard)."""
    return any(p == path or (is_wildcard(p) and path.startswith(p[:-1])) for p in by)


def caller_reference(
    request_ids: Sequence[str], account: str, distribution: str, paths: Sequence[str]
) -> str:
    """The CallerReference of one call: the same for the same requests, target and paths."""
    key = {
        "requests": list(request_ids),
        "account": account,
        "distribution_id": distribution,
        "paths": list(paths),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return f"fanout-{digest[:48]}"


@register
class InvalidateTask(Task):
    name = "cloudfront.invalidate"
    description = "Invalidate paths of a CloudFront distribution (CreateInvalidation)."
    service = "cloudfront"
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["distribution_id", "paths"],
        "properties": {
            "distribution_id": {
                "type": "string",
                "pattern": "^[A-Z0-9]{8,32}$",
                "description": "Distribution id in the target account, e.g. E2QWRUHEXAMPLE.",
            },
            "paths": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_PATHS,
                "items": {
                    "type": "string",
                    "maxLength": 4000,
                    # Printable ASCII starting with '/', '*' only as the last character
                    # (CloudFront wants other characters URL-encoded).
                    "pattern": r"^/[!-)+-~]*\*?$",
                },
                "description": f"Paths starting with '/'; at most {MAX_PATHS}, "
                f"{MAX_WILDCARD_PATHS} of them ending in '*'.",
            },
        },
    }
    access = {TARGET: Access(actions=("cloudfront:CreateInvalidation",))}
    status_actions = ("cloudfront:GetInvalidation",)
    rate = RateLimit(
        api="cloudfront:CreateInvalidation",
        per_second=2.0,
        burst=5,
        global_api=True,
        source="unpublished: CloudFront documents quotas on invalidations in progress (3,000 "
        "paths, 15 wildcards per distribution) but no request rate for CreateInvalidation. "
        "Field reports: 6-7 requests in a row succeed before 'Rate exceeded' "
        "(github.com/aws/aws-sdk-js/issues/3983), ~10 in one second throttle "
        "(mhdez.com/notes/hidden-cloudfront-invalidation-rate-limits): burst 5 stays under "
        "them; 2/s sustained is an assumption - set RATE_LIMITS to what your accounts sustain",
    )
    idempotent = True  # deterministic CallerReference, and CloudFront deduplicates it
    quota_codes = frozenset({"TooManyInvalidationsInProgress"})

    def resource_arns(
        self, role: str, partition: str, account: str, params: Mapping[str, Any] | None
    ) -> tuple[str, ...]:
        distribution = params["distribution_id"] if params else "*"
        return (f"arn:{partition}:cloudfront::{account}:distribution/{distribution}",)

    def check(self, params: Mapping[str, Any], *, account: str, region: str) -> None:
        wildcards = [p for p in reduce_paths(params["paths"]) if is_wildcard(p)]
        if len(wildcards) > MAX_WILDCARD_PATHS:
            raise self.fail(
                f"paths has {len(wildcards)} wildcard paths; CloudFront allows "
                f"{MAX_WILDCARD_PATHS} in progress per distribution"
            )

    def plan(self, jobs: Sequence[Job]) -> list[Call]:
        groups: dict[tuple[str, str], list[Job]] = {}
        for job in sorted(jobs, key=lambda j: (j.request_id, j.index, j.key)):
            groups.setdefault((job.account, job.params["distribution_id"]), []).append(job)
        calls: list[Call] = []
        for (account, distribution_id), group in groups.items():
            for packed, paths in _pack(group):
                requests = sorted({job.request_id for job in packed})
                calls.append(
                    Call(
                        task=self.name,
                        account=account,
                        region=packed[0].region,
                        params={"distribution_id": distribution_id, "paths": paths},
                        jobs=tuple(packed),
                        idempotency_key=caller_reference(requests, account, distribution_id, paths),
                    )
                )
        return calls

    def run(self, ctx: TaskContext, call: Call) -> TaskResult:
        distribution_id = str(call.params["distribution_id"])
        paths = list(call.params["paths"])
        response = ctx.client("cloudfront").create_invalidation(
            DistributionId=distribution_id,
            InvalidationBatch={
                "Paths": {"Quantity": len(paths), "Items": paths},
                "CallerReference": call.idempotency_key,
            },
        )
        invalidation = response["Invalidation"]
        return TaskResult(
            resource_id=invalidation["Id"],
            detail={
                "distribution_id": distribution_id,
                "status": invalidation.get("Status", ""),
                "caller_reference": call.idempotency_key,
                "paths": len(paths),
            },
        )

    def remote_status(self, ctx: TaskContext, result: TaskResult) -> RemoteStatus | None:
        distribution = result.detail.get("distribution_id")
        if not distribution:
            return RemoteStatus("distribution not recorded")
        cloudfront = ctx.client("cloudfront", region=GLOBAL_CONTROL_PLANE_REGION)
        try:
            invalidation = cloudfront.get_invalidation(
                DistributionId=str(distribution), Id=result.resource_id
            )["Invalidation"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchInvalidation":
                return RemoteStatus("invalidation not found", Progress.FAILED)
            raise
        status = str(invalidation.get("Status", ""))
        # CloudFront says "Completed" / "InProgress" (the emulator: upper case).
        if status.lower() == "completed":
            return RemoteStatus("Completed", Progress.SUCCEEDED)
        if status.lower() == "inprogress":
            return RemoteStatus("InProgress", Progress.PENDING)
        return RemoteStatus(status or "unknown")


def _fits(paths: Sequence[str]) -> bool:
    size = len(json.dumps(list(paths)).encode())
    wildcards = sum(map(is_wildcard, paths))
    return (
        len(paths) <= MAX_PATHS and wildcards <= MAX_WILDCARD_PATHS and size <= MAX_CALL_PATH_BYTES
    )


def _pack(jobs: Sequence[Job]) -> list[tuple[list[Job], list[str]]]:
    """Greedily pack jobs into invalidations within CloudFront's path quotas (and a size that
    the ledger can record)."""
    packs: list[tuple[list[Job], list[str]]] = []
    current: list[Job] = []
    current_paths: list[str] = []
    for job in jobs:
        merged = reduce_paths([*current_paths, *job.params["paths"]])
        if current and not _fits(merged):
            packs.append((current, current_paths))
            current, merged = [], reduce_paths(job.params["paths"])
        current.append(job)
        current_paths = merged
    if current:
        packs.append((current, current_paths))
    return packs
