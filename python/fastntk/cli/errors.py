"""The command's error type and exit statuses."""

from __future__ import annotations

PROG = "fastntk"

EXIT_FAILED = 1  # the job itself failed (a benchmark script, an error inside fastntk)
EXIT_USAGE = 2  # a bad option or bad data: what the user can fix on the command line
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports `yes | head`'s yes


class CliError(Exception):
    """A user-facing error: printed as one line, exit status ``code`` (default 2: a bad
    option, file or data set, like argparse's usage errors)."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def number(s: str):
    """``float(s)``, or None if ``s`` is not a number."""
    try:
        return float(s)
    except ValueError:
        return None
