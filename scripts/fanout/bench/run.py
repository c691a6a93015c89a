"""Run the benchmark suite and write ``bench/results/latest.{md,json}``.

    python -m fanout.bench.run                 # all of them, ~15 minutes on 2 cores
    python -m fanout.bench.run --only B1,B3    # a selection
    python -m fanout.bench.run --quick         # smaller workloads, a smoke run

Run from the repository root. B1, B2 and B4 start the emulator host (moto behind the counting,
rate-limiting proxy, in a process of its own) and seed an organisation of 10 accounts once.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Final

from fanout.bench.common import QUIET_ENV, REPO_ROOT, Host, Result, machine

__all__ = ["main"]

ALL: Final = ("B1", "B2", "B2-multi", "B3", "B4", "B5", "B6", "B7")
NEEDS_EMULATOR: Final = frozenset({"B1", "B2", "B2-multi", "B4", "B6", "B7"})
ACCOUNTS: Final = 10
DISTRIBUTIONS_PER_ACCOUNT: Final = 2


def _selection(text: str | None) -> list[str]:
    if not text:
        return list(ALL)
    by_name = {key.upper(): key for key in ALL}
    chosen = [by_name.get(part.strip().upper(), part.strip()) for part in text.split(",")]
    chosen = [key for key in chosen if key]
    unknown = sorted(set(chosen) - set(ALL))
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(ALL)}")
    return [key for key in ALL if key in chosen]  # suite order, whatever the order given


def _guarded(key: str, run: Callable[[], Result]) -> Result:
    """One benchmark's failure is reported as such; the others still run."""
    started = time.perf_counter()
    try:
        result = run()
    except Exception as exc:  # noqa: BLE001 - reported in the results, with its traceback
        traceback.print_exc()
        result = Result(key, "failed", None, "error", "-", None, f"{type(exc).__name__}: {exc}")
    result.seconds = time.perf_counter() - started
    print(f"{key} done in {result.seconds:.0f} s: {result.display}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fanout.bench.run", description=__doc__)
    parser.add_argument("--only", help="comma-separated benchmarks, e.g. B1,B2-multi")
    parser.add_argument("--quick", action="store_true", help="smaller workloads (smoke run)")
    parser.add_argument(
        "--output", type=Path, default=REPO_ROOT / "bench" / "results", help="results directory"
    )
    args = parser.parse_args(argv)
    selected = _selection(args.only)
    # Before the worker is imported: Powertools reads these when its Logger is created.
    os.environ.update(QUIET_ENV)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    # Powertools warns on every invocation whose metrics it already auto-flushed.
    warnings.filterwarnings("ignore", message="No application metrics to publish")

    from fanout.bench import (  # noqa: PLC0415 - after the environment is set
        b1_throughput,
        b2_goodput,
        b2_multi,
        b3_coldstart,
        b4_memory,
        b5_overhead,
        b6_scale,
        b7_fairness,
        report,
    )
    from fanout.bench.harness import seed  # noqa: PLC0415

    started = time.perf_counter()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    results: list[Result] = []
    # Interpreter- and CPU-bound benchmarks first, before the emulator holds any memory.
    if "B3" in selected:
        results.append(_guarded("B3", lambda: b3_coldstart.run(quick=args.quick)))
    if "B5" in selected:
        results.append(_guarded("B5", lambda: b5_overhead.run(quick=args.quick)))
    if NEEDS_EMULATOR & set(selected):
        with Host() as host:
            seeded = time.perf_counter()
            org = seed(host.moto_url, ACCOUNTS, distributions=DISTRIBUTIONS_PER_ACCOUNT)
            print(f"emulator seeded in {time.perf_counter() - seeded:.0f} s", flush=True)
            if "B1" in selected:
                results.append(
                    _guarded("B1", lambda: b1_throughput.run(host, org, quick=args.quick))
                )
            if "B2" in selected:
                results.append(_guarded("B2", lambda: b2_goodput.run(host, org, quick=args.quick)))
            if b2_multi.KEY in selected:
                results.append(
                    _guarded(b2_multi.KEY, lambda: b2_multi.run(host, org, quick=args.quick))
                )
            if "B4" in selected:
                results.append(_guarded("B4", lambda: b4_memory.run(host, org, quick=args.quick)))
            if "B6" in selected:
                results.append(_guarded("B6", lambda: b6_scale.run(host, org, quick=args.quick)))
            if "B7" in selected:
                results.append(_guarded("B7", lambda: b7_fairness.run(host, org, quick=args.quick)))
    results.sort(key=lambda r: r.key)
    seconds = time.perf_counter() - started
    command = "python -m fanout.bench.run" + (" --quick" if args.quick else "")
    if args.only:
        command += f" --only {','.join(selected)}"
    meta = {
        "mode": "quick" if args.quick else "full",
        "seconds": seconds,
        "command": command,
        "load_average_at_start": load_at_start,
    }
    md, js = report.write(args.output, results, machine(), meta)
    print()
    for line in report.summary_lines(results):
        print(line)
    print(f"\nsuite: {seconds:.0f} s; wrote {md}, {js}")
    return 0 if all(r.met is not None for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
