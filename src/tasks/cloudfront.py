"""``cloudfront.invalidate``: CreateInvalidation, coalesced and idempotent.

Jobs of one batch that target the same distribution become one invalidation with the union of
their paths (minus paths a wildcard in the same set already covers). The CallerReference is
derived from the requests, the target and the sorted paths, so a redelivered batch can never
create a second invalidation in CloudFront: it returns the existing one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from tasks.base import Call, Job, RateLimit, Task, TaskContext, TaskResult
from tasks.registry import register

# CloudFront quotas per distribution for invalidations in progress.
MAX_PATHS = 3000
MAX_WILDCARD_PATHS = 15
# Recovery looks at this many of the distribution's newest invalidations, this far back.
RECOVERY_SCAN = 25
RECOVERY_WINDOW = timedelta(hours=1)


class InvalidateParams(TypedDict):
    distribution_id: str
    paths: list[str]


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


def caller_reference(call_key: Mapping[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(call_key, sort_keys=True).encode()).hexdigest()
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
    iam_actions = (
        "cloudfront:CreateInvalidation",
        "cloudfront:GetInvalidation",
        "cloudfront:ListInvalidations",  # recovery after a lost answer (find_previous)
    )
    # CloudFront's control-plane API is global and strict; a few calls per second per account.
    rate = RateLimit(api="cloudfront:CreateInvalidation", per_second=2.0, burst=2, global_api=True)
    idempotent = True  # deterministic CallerReference
    quota_codes = frozenset({"TooManyInvalidationsInProgress"})

    def resource_arns(
        self, partition: str, account: str, params: Mapping[str, Any] | None
    ) -> tuple[str, ...]:
        distribution = params["distribution_id"] if params else "*"
        return (f"arn:{partition}:cloudfront::{account}:distribution/{distribution}",)

    def check(self, params: Mapping[str, Any]) -> None:
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
                calls.append(
                    Call(
                        task=self.name,
                        account=account,
                        region=packed[0].region,
                        params={"distribution_id": distribution_id, "paths": paths},
                        jobs=tuple(packed),
                    )
                )
        return calls

    def find_previous(self, ctx: TaskContext, call: Call) -> TaskResult | None:
        # The CallerReference of a coalesced call depends on which jobs shared its batch, so a
        # call whose answer was lost is recognised by its effect instead: a recent fanout
        # invalidation of this distribution that already covers every path of the call.
        cloudfront = ctx.client("cloudfront")
        distribution_id = call.params["distribution_id"]
        since = datetime.now(UTC) - RECOVERY_WINDOW
        listing = cloudfront.list_invalidations(
            DistributionId=distribution_id, MaxItems=str(RECOVERY_SCAN)
        )["InvalidationList"]
        for item in listing.get("Items", []):
            created = item.get("CreateTime")
            if isinstance(created, datetime) and created.astimezone(UTC) < since:
                continue
            invalidation = cloudfront.get_invalidation(
                DistributionId=distribution_id, Id=item["Id"]
            )["Invalidation"]
            batch = invalidation["InvalidationBatch"]
            paths = batch["Paths"].get("Items", [])
            if batch["CallerReference"].startswith("fanout-") and all(
                covered(p, paths) for p in call.params["paths"]
            ):
                return TaskResult(
                    resource_id=invalidation["Id"],
                    detail={
                        "distribution_id": distribution_id,
                        "status": invalidation.get("Status", ""),
                        "recovered": True,
                    },
                )
        return None

    def run(self, ctx: TaskContext, call: Call) -> TaskResult:
        params = InvalidateParams(
            distribution_id=call.params["distribution_id"], paths=list(call.params["paths"])
        )
        reference = caller_reference(
            {
                "requests": list(call.request_ids),
                "account": call.account,
                "distribution_id": params["distribution_id"],
                "paths": params["paths"],
            }
        )
        response = ctx.client("cloudfront").create_invalidation(
            DistributionId=params["distribution_id"],
            InvalidationBatch={
                "Paths": {"Quantity": len(params["paths"]), "Items": params["paths"]},
                "CallerReference": reference,
            },
        )
        invalidation = response["Invalidation"]
        return TaskResult(
            resource_id=invalidation["Id"],
            detail={
                "distribution_id": params["distribution_id"],
                "status": invalidation.get("Status", ""),
                "caller_reference": reference,
                "paths": len(params["paths"]),
            },
        )


def _pack(jobs: Sequence[Job]) -> list[tuple[list[Job], list[str]]]:
    """Greedily pack jobs into invalidations that stay within CloudFront's path quotas."""
    packs: list[tuple[list[Job], list[str]]] = []
    current: list[Job] = []
    current_paths: list[str] = []
    for job in jobs:
        merged = reduce_paths([*current_paths, *job.params["paths"]])
        fits = len(merged) <= MAX_PATHS and sum(map(is_wildcard, merged)) <= MAX_WILDCARD_PATHS
        if current and not fits:
            packs.append((current, current_paths))
            current, merged = [], reduce_paths(job.params["paths"])
        current.append(job)
        current_paths = merged
    if current:
        packs.append((current, current_paths))
    return packs
