"""``fanout demo``: the embedded end-to-end run (``make demo``)."""

from __future__ import annotations

import click

from fanout.demo import run_demo

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@click.command(
    "demo",
    epilog="""\b
examples:
  fanout demo
  fanout demo --log-level INFO   # with the worker's audit log (JSON, on stderr)""",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="WARNING",
    show_default=True,
    help="the worker's log level",
)
@click.option(
    "--time-limit",
    type=click.FloatRange(min=0, min_open=True),
    default=50.0,
    show_default=True,
    help="seconds for the poller",
)
def command(*, log_level: str, time_limit: float) -> int:
    """Start an embedded AWS emulator with an ops account and three target accounts, publish a
    realistic workload (CloudFront invalidations, a legacy message, an SSM command, a poison
    message), run the real handler through the local poller, and check the effects in every
    account."""
    return run_demo(log_level=log_level.upper(), time_limit_s=time_limit)
