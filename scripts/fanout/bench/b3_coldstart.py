"""B3: cold start, as the import cost of the function's module against boto3's alone.

Each import is timed inside a fresh interpreter (``perf_counter`` around the import statement,
so interpreter start-up is excluded from both), alternating the two so that disk cache and CPU
frequency drift hit both alike; the ratio is of the medians. ``-X importtime`` then shows where
the function's import time goes.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from typing import Any, Final

from fanout.bench.common import QUIET_ENV, REPO_ROOT, Result

__all__ = ["run"]

TARGET_RATIO: Final = 1.5
_TIMER: Final = (
    "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
)


def _env() -> dict[str, str]:
    # What the function's environment would hold at import; nothing is read before a call.
    # Bytecode is written (a shell's PYTHONDONTWRITEBYTECODE dropped) so that both imports are
    # timed from .pyc, as boto3 is in Lambda's runtime; compiling the function's own modules
    # from source would add ~50 ms on this machine (measured 2026-12-02).
    env = {**os.environ, **QUIET_ENV, "AWS_REGION": "us-east-1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _time_import(module: str) -> float:
    out = subprocess.run(  # noqa: S603 - our own interpreter, fixed code
        [sys.executable, "-c", _TIMER.format(module=module)],
        cwd=REPO_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out.strip().splitlines()[-1])


def _importtime(module: str) -> list[dict[str, Any]]:
    err = subprocess.run(  # noqa: S603 - as above
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        cwd=REPO_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    rows = []
    for line in err.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line[len("import time:") :].split("|")
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        rows.append(
            {
                "module": name.strip(),
                "depth": depth,
                "self_ms": int(self_us) / 1000,
                "cumulative_ms": int(cumulative_us) / 1000,
            }
        )
    return rows


def _by_package(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Self import time per top-level package, ms: who the cold start is spent on."""
    totals: dict[str, float] = {}
    for row in rows:
        package = str(row["module"]).split(".", 1)[0]
        totals[package] = totals.get(package, 0.0) + float(row["self_ms"])
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def run(*, quick: bool) -> Result:
    runs = 5 if quick else 11
    # Untimed: writes any missing bytecode and warms the page cache for both.
    _time_import("handler.app")
    _time_import("boto3")
    boto3_s: list[float] = []
    handler_s: list[float] = []
    for _ in range(runs):
        boto3_s.append(_time_import("boto3"))
        handler_s.append(_time_import("handler.app"))
    boto3_median = statistics.median(boto3_s)
    handler_median = statistics.median(handler_s)
    ratio = handler_median / boto3_median
    rows = _importtime("handler.app")
    top = sorted(rows, key=lambda r: -float(r["cumulative_ms"]))[:10]
    packages = _by_package(rows)
    heavy = ", ".join(f"{name} {ms:.0f}" for name, ms in list(packages.items())[:6])
    return Result(
        key="B3",
        title="Cold start (import handler.app / import boto3)",
        measured=ratio,
        display=f"{ratio:.2f}",
        target=f"<= {TARGET_RATIO}",
        met=ratio <= TARGET_RATIO,
        notes=(
            f"median of {runs} fresh interpreters: handler.app {handler_median * 1000:.0f} ms, "
            f"boto3 {boto3_median * 1000:.0f} ms (ratio of the minima "
            f"{min(handler_s) / min(boto3_s):.2f}). -X importtime self ms by package: {heavy}"
        ),
        details={
            "runs": runs,
            "boto3_seconds": boto3_s,
            "handler_app_seconds": handler_s,
            "boto3_median_s": boto3_median,
            "handler_app_median_s": handler_median,
            "importtime_top10": top,
            "importtime_self_ms_by_package": packages,
        },
    )
