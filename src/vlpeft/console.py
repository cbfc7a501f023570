"""Command-line manners shared by every entry point (standard library only, so it costs nothing to import).

- :func:`announce`: a line on stderr before the seconds that importing torch or matplotlib takes, so a command never
  sits silent (``announce_main`` does it from a module's top when it runs as ``python -m``).
- :func:`run`: calls a ``main(argv)`` and turns a user error (a missing or unreadable file, a bad value, a table
  without a column: ``OSError`` and ``ValueError``, whose messages here name the file and what to do) into one line
  on stderr and exit status 2, the status argparse uses for a bad command line. ``VLPEFT_TRACEBACK=1`` shows the
  traceback instead, for debugging.

Library functions keep raising; only the command-line wrappers translate.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

#: Exit status of a user error (as argparse's for a bad command line).
EXIT_USAGE = 2
#: Errors a user can fix (a path, a file's content, a value); anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError)


def announce(prog: str, text: str) -> None:
    """Print ``<prog>: <text>`` on stderr at once (unbuffered: it must show before a slow import)."""
    print(f"{prog}: {text}", file=sys.stderr, flush=True)


def announce_main(module_name: str, prog: str, text: str) -> None:
    """:func:`announce` when the calling module runs as ``python -m`` (``module_name == "__main__"``) for real work.

    Called as the first statement of a module whose imports take seconds; quiet for ``--help``, which should print
    the help alone.
    """
    if module_name == "__main__" and not {"-h", "--help"} & set(sys.argv[1:]):
        announce(prog, text)


def error_line(err: BaseException) -> str:
    """The error as one line: ``OSError``'s ``[Errno 2] No such file or directory: 'x'`` reads ``x: no such file
    or directory``; a multi-line message is joined."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = f"{err.filename}: {err.strerror[0].lower()}{err.strerror[1:]}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def run(main: Callable[[Sequence[str] | None], int], prog: str, argv: Sequence[str] | None = None) -> int:
    """``main(argv)``, with user errors as one line ``<prog>: error: <message>`` and exit status 2.

    Returns:
        ``main``'s exit status, 2 after a user error, 130 after Ctrl-C.
    """
    try:
        return main(argv)
    except USER_ERRORS as err:
        if os.environ.get("VLPEFT_TRACEBACK"):
            raise
        print(f"{prog}: error: {error_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
