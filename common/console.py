"""The one way library code talks to the user.

* ``info``: status lines (what is being done, what was reused) on stderr, so stdout stays
  clean for results that may be piped;
* ``warn``: something the user should act on or know (drops, fallbacks), on stderr, prefixed
  ``warning:``;
* ``result``: what a command was asked to produce (a table, a metrics line), on stdout.

``quiet()`` silences ``info`` (library callers and tests that want no chatter); warnings and
results are never silenced. Progress bars live in ``mer.common.progress``.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager

_quiet = 0


def info(msg: str) -> None:
    if not _quiet:
        print(msg, file=sys.stderr, flush=True)


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def result(msg: str) -> None:
    print(msg, flush=True)


@contextmanager
def quiet(on: bool = True):
    """Within this block ``info`` prints nothing (when ``on``)."""
    global _quiet
    _quiet += bool(on)
    try:
        yield
    finally:
        _quiet -= bool(on)
