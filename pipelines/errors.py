"""User errors and how every command-line tool reports them: one line, non-zero exit.

A user error is bad input the user can fix (a missing or unreadable file, a bad option value, a
run folder in use): :class:`UserError`, or the ``OSError`` / ``ValueError`` the libraries raise for
such input. :func:`run_cli` prints ``<prog>: error: <message>`` (one line, naming the file, row or
option) and returns 2; with ``--debug`` the exception propagates with its traceback.
"""

from __future__ import annotations

import sys
from typing import Callable

EXIT_USER_ERROR = 2


class UserError(RuntimeError):
    """Bad input or state the user can fix; the message names the file, row or option."""


#: Exceptions reported as one line by :func:`run_cli`.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, OSError, ValueError)


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (FileNotFoundError from ``open()`` keeps its path)."""
    text = str(exc) or type(exc).__name__
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def run_cli(prog: str, body: Callable[[], int], debug: bool = False) -> int:
    """``body()``'s exit status; a user error becomes one line on stderr and exit status 2."""
    try:
        return body()
    except USER_ERRORS as exc:
        if debug:
            raise
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
