"""B2-multi: several worker instances draining one backlog under one per-account quota.

Lambda runs several instances whenever there is a backlog, so this is the figure that holds as
deployed. B2's workload (``ssm.send_command``, one call per job, Q per account enforced by the
proxy) in smaller messages, so batches of 10 messages spread over every instance as the event
source mapping spreads them, drained by 3 and then 6 worker processes (each its own token
buckets, as Lambda execution environments are), each count configured three ways:

- **shared** (the headline, as deployed): ``RATE_LIMITS`` = Q and the instances share it through
  the ledger table (``RATE_SHARING=table``, ``handler.ratelimit_shared``);
- **split**: each instance paces itself alone at ``RATE_LIMITS`` = Q / instances
  (``RATE_SHARING=instance``), the static share a user would otherwise configure;
- **own buckets**: each alone at Q, what ignoring the quota's sharing gets (the proxy throttles
  the excess and each bucket halves on throttling).

Effects are counted in moto's state as in B2: 0 lost and 0 duplicated hold or the round fails.
"""

from __future__ import annotations

from typing import Any, Final

from fanout.bench.b2_goodput import QUOTA, TARGET_GOODPUT, variant_round
from fanout.bench.common import Host, Result
from fanout.emulator import Organisation

__all__ = ["KEY", "run"]

KEY: Final = "B2-multi"
PROCESSES: Final = (3, 6)
# 50 jobs per batch of 10 messages, 5 per account: every instance gets batches to run.
TARGETS_PER_MESSAGE: Final = 5
TARGET_THROTTLED: Final = 0.02


def variants(processes: int) -> tuple[tuple[str, float, str], ...]:
    """(name, RATE_LIMITS rate, RATE_SHARING) of each round for ``processes`` instances."""
    return (
        ("shared", QUOTA, "table"),
        ("split", QUOTA / processes, "instance"),
        ("own_buckets", QUOTA, "instance"),
    )


def _ok(v: dict[str, Any]) -> bool:
    return bool(
        v["goodput"] >= TARGET_GOODPUT
        and v["throttled_ratio"] <= TARGET_THROTTLED
        and v["lost"] == 0
        and v["duplicated_jobs"] == 0
    )


def _short(v: dict[str, Any]) -> str:
    return (
        f"{v['goodput']:.2f}, {v['throttled_ratio']:.1%} thr, {v['lost']} lost, "
        f"{v['duplicated_jobs']} dup"
    )


def run(host: Host, org: Organisation, *, quick: bool) -> Result:
    jobs = 300 if quick else 1500
    limit = 150.0 if quick else 300.0
    rounds: dict[str, dict[str, Any]] = {}
    for processes in PROCESSES:
        for name, rate, sharing in variants(processes):
            rounds[f"{processes}_{name}"] = variant_round(
                host,
                org,
                jobs,
                name=f"multi-{processes}-{name}",
                processes=processes,
                handler="worker",
                rate=rate,
                time_limit=limit,
                targets_per_message=TARGETS_PER_MESSAGE,
                sharing=sharing,
            )
    headline = [rounds[f"{n}_shared"] for n in PROCESSES]
    worst = min(headline, key=lambda v: v["goodput"])
    notes = "; ".join(
        f"{n} workers: shared {_short(rounds[f'{n}_shared'])}, "
        f"split {_short(rounds[f'{n}_split'])}, "
        f"own buckets {_short(rounds[f'{n}_own_buckets'])}"
        for n in PROCESSES
    )
    return Result(
        key=KEY,
        title="Goodput with several instances (quota shared through the ledger table)",
        measured=worst["goodput"],
        display=" / ".join(f"{n}: {_short(rounds[f'{n}_shared'])}" for n in PROCESSES),
        target=f">= {TARGET_GOODPUT}, <= {TARGET_THROTTLED:.0%} throttled, 0 lost, 0 dup",
        met=all(_ok(v) for v in headline),
        notes=notes,
        details={
            "quota_per_account": QUOTA,
            "accounts": len(org.account_ids),
            "jobs": jobs,
            "targets_per_message": TARGETS_PER_MESSAGE,
            "processes": list(PROCESSES),
            "rounds": rounds,
        },
    )
