"""User errors and how every command-line tool reports them: one line, a known exit status.

A user error is bad input the user can fix (a missing or unreadable file, a bad option value, a
run folder in use, a full disk): :class:`UserError`, the ``OSError`` / ``ValueError`` the
libraries raise for such input, or the ``SourceError`` / ``CacheError`` of ``connectomics`` (a
tampered snapshot, a corrupt graph folder). :func:`run_cli` prints ``<prog>: error: <message>``
(one line, naming the file, row or option) and returns :data:`EXIT_USER_ERROR` (2). Ctrl-C prints
``<prog>: <message>`` (one line: what was kept) and returns :data:`EXIT_INTERRUPTED` (130, the
shell's code for SIGINT). With ``--debug`` the exception propagates with its traceback.
"""

from __future__ import annotations

import sys
from typing import Callable

from connectomics.cache import CacheError
from connectomics.sources.base import SourceError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class UserError(RuntimeError):
    """Bad input or state the user can fix; the message names the file, row or option."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with the one line that says what was kept (``str()`` of it)."""


#: Exceptions reported as one line by :func:`run_cli`.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, OSError, ValueError, SourceError, CacheError)


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (FileNotFoundError from ``open()`` keeps its path)."""
    text = str(exc) or type(exc).__name__
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def run_cli(prog: str, body: Callable[[], int], debug: bool = False) -> int:
    """``body()``'s exit status; a user error becomes one line on stderr and exit status 2,
    Ctrl-C one line and exit status 130."""
    try:
        return body()
    except USER_ERRORS as exc:
        if debug:
            raise
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as exc:
        if debug:
            raise
        said = one_line(exc) if isinstance(exc, Interrupted) else "interrupted"
        print(f"\n{prog}: {said}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
