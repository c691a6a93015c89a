"""The CLI's exit codes and its one error type.

Every verb exits 0 when everything is done; 1 when some targets failed or are still pending, or
AWS refused part of the work; 2 on a usage or validation error or an unknown request (nothing
was done); ``fanout status --watch`` exits 3 when its ``--timeout`` ran out with targets still
pending (1 then means: it ended, and some failed). A verb stops with :class:`CliError`;
``fanout.cli.main`` prints it as one ``fanout: error: ...`` line on stderr, as it does click's
own usage errors.
"""

from __future__ import annotations

from typing import Final

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_STILL_PENDING", "EXIT_USAGE", "CliError", "aws_error"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_STILL_PENDING: Final = 3  # status --watch: the timeout ran out before the request ended


class CliError(Exception):
    """Stops a verb with ``reason`` (one line) and exit code ``code`` (2 unless said)."""

    def __init__(self, reason: str, code: int = EXIT_USAGE) -> None:
        self.reason = " ".join(reason.split())
        super().__init__(self.reason)
        self.code = code


def aws_error(exc: BaseException) -> str:
    """``Code: Message`` of a botocore ``ClientError``; the text of any other error."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        return f"{error.get('Code', '?')}: {error.get('Message', '')}".strip()
    return str(exc)
