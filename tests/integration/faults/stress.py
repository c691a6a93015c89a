# ruff: noqa: T201 - a command-line report: its output is the point
"""``make stress``: the fault-injection suite, round after round, on a machine under load.

Each round runs ``pytest tests/integration/faults`` with two busy processes per core competing
for the CPU (``FANOUT_FAULTS_CONTENTION``) and every AWS answer slowed
(``FANOUT_FAULTS_LATENCY_MS``), and collects every scenario's figures. The run fails unless
every round passed and every scenario, summed over all rounds, shows 0 duplicated, 0 lost and 0
ended twice. The table printed at the end is what the closing notes quote.

    python -m tests.integration.faults.stress --rounds 10 [--latency-ms 20] [--busy 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SUMMED = ("jobs", "duplicated", "lost", "ended twice", "letter copies")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--latency-ms", type=int, default=20, help="added to every AWS answer")
    parser.add_argument(
        "--busy", type=int, default=2 * (os.cpu_count() or 1), help="busy processes"
    )
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (e.g. -k ...)")
    args = parser.parse_args(argv)

    totals: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(SUMMED, 0))
    rounds: dict[str, int] = defaultdict(int)
    failed_rounds = 0
    started = time.monotonic()
    for n in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory() as tmp:
            figures_path = Path(tmp) / "figures.json"
            env = {
                **os.environ,
                "FANOUT_FAULTS_CONTENTION": str(args.busy),
                "FANOUT_FAULTS_LATENCY_MS": str(args.latency_ms),
                "FANOUT_FAULTS_FIGURES": str(figures_path),
            }
            command = [
                sys.executable,
                "-m",
                "pytest",
                "tests/integration/faults",
                "-q",
                "-p",
                "no:cacheprovider",
                *args.pytest_args,
            ]
            result = subprocess.run(command, cwd=ROOT, env=env, check=False)
            if result.returncode != 0:
                failed_rounds += 1
            figures = json.loads(figures_path.read_text()) if figures_path.exists() else []
        for row in figures:
            scenario = row["scenario"]
            rounds[scenario] += 1
            for column in SUMMED:
                totals[scenario][column] += int(row[column])
        print(f"# round {n}/{args.rounds}: pytest exit {result.returncode}", file=sys.stderr)

    print(
        f"\nstress: {args.rounds} rounds, {args.busy} busy processes, +{args.latency_ms} ms per "
        f"AWS answer, {time.monotonic() - started:.0f} s; failed rounds: {failed_rounds}"
    )
    header = ("scenario", "rounds", *SUMMED)
    rows = [(s, str(rounds[s]), *(str(totals[s][c]) for c in SUMMED)) for s in sorted(totals)]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print(
            " | ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    broken = [s for s in totals if any(totals[s][c] for c in ("duplicated", "lost", "ended twice"))]
    if broken or failed_rounds or not rows:
        print(f"stress: FAILED ({len(broken)} scenario(s) broke a promise)", file=sys.stderr)
        return 1
    print("stress: 0 duplicated, 0 lost, 0 ended twice in every scenario of every round")
    return 0


if __name__ == "__main__":
    sys.exit(main())
