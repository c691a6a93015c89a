"""The ``fanout`` command: the click group of the verbs in ``fanout.commands``, and ``main``.

``main`` is the one error path: click's usage errors and the verbs' :class:`CliError` become
one ``fanout: error: ...`` line on stderr and their exit code (see ``fanout.errors``). A verb's
module is imported only when that verb is asked for, so ``fanout --help`` loads click and
little else.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Final

import click

from fanout.commands import VERBS, load
from fanout.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError, aws_error

__all__ = ["cli", "main"]

# The CLI's own loggers: not under "fanout", which is the worker's Powertools logger (its
# service name), whose JSON handler would otherwise swallow them.
LOGGER: Final = "fanout_local"
EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, as shells report it

EXIT_CODES_HELP: Final = """\b
exit codes (every verb):
  0  done: every message sent / every target succeeded / every dead letter moved
  1  some targets failed or are still pending, or AWS refused part of the work
  2  usage or validation error, unknown request id: nothing was done
  3  `status --watch`: --timeout ran out while targets were still pending

\b
environment:
  FANOUT_QUEUE_URL, FANOUT_DLQ_URL  default --queue-url / --to and --from
  LEDGER_TABLE                      default --table of `fanout status`
  FANOUT_STATUS_ROLE_NAME           the role `status --refresh` assumes (else TARGET_ROLE_NAME)
  TARGET_ROLE_PATH, EXTERNAL_ID     its path, and the ExternalId sent to it
  ALLOWED_ACCOUNT_IDS               `publish` refuses other accounts when it is set
  AWS_REGION, AWS_ENDPOINT_URL      as for every boto3 client (the emulator sets both)
  NO_COLOR                          no colours (they are only used on a terminal anyway)"""


class _Verbs(click.Group):
    """The verbs of ``fanout.commands.VERBS``, each imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:  # noqa: ARG002 - click's API
        return list(VERBS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:  # noqa: ARG002
        return load(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:  # noqa: ARG002
        # From the map: listing the verbs must not import them all.
        with formatter.section("Commands"):
            formatter.write_dl([(name, verb.summary) for name, verb in VERBS.items()])


@click.group(
    name="fanout",
    cls=_Verbs,
    epilog=EXIT_CODES_HELP,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="fanout", prog_name="fanout")
def cli() -> None:
    """Publish fan-out tasks, follow them, work the dead-letter queue, and run the worker
    locally against an emulator."""


def _failure(exc: Exception) -> tuple[str, int] | None:
    """The one line and exit code an error ends the command with; None: a bug, let it show."""
    if isinstance(exc, CliError):
        return exc.reason, exc.code
    if isinstance(exc, click.UsageError):
        message = exc.format_message().rstrip(".")
        path = exc.ctx.command_path if exc.ctx is not None else "fanout"
        return f"{message[:1].lower()}{message[1:]} (see '{path} --help')", exc.exit_code
    if isinstance(exc, click.ClickException):  # e.g. a file click cannot open
        return exc.format_message(), exc.exit_code
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415 - only on errors

    if isinstance(exc, BotoCoreError | ClientError):  # e.g. no credentials
        return aws_error(exc), EXIT_FAILED
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fanout`` console script; returns the exit code."""
    # Locally the handler runs with POWERTOOLS_METRICS_DISABLED: its empty flush is not news.
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger(LOGGER).setLevel(logging.INFO)
    try:
        result = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="fanout",
            standalone_mode=False,
        )
    except click.exceptions.NoArgsIsHelpError as exc:  # `fanout` alone: the help, on stderr
        exc.show()
        return EXIT_USAGE
    except click.Abort:  # Ctrl-C where a verb does not handle it
        return EXIT_INTERRUPTED
    except Exception as exc:
        failure = _failure(exc)
        if failure is None:
            raise
        from fanout import console  # noqa: PLC0415 - rich, only when there is an error to print

        console.error(failure[0])
        return failure[1]
    return result if isinstance(result, int) else EXIT_OK
