"""Progress bars: one per stage, with counts, rate and ETA, on stderr.

On a terminal this is a tqdm bar. When stderr is not a terminal (a log file, CI, a pipe),
a bar's carriage returns and cursor codes would fill the log with redrawn lines, so
``progress`` prints plain lines instead: one every ``PLAIN_EVERY`` seconds (and the last one),
e.g. ``train masked [bert.tokens+mfcc.frames]: 3/5 fold (60%) 1.2 fold/s, eta 2s``.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager

# Seconds between two plain lines when output is not a terminal ($MER_PROGRESS_EVERY overrides).
PLAIN_EVERY = float(os.environ.get("MER_PROGRESS_EVERY", 30))


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or file-like objects without isatty
        return False


class PlainProgress:
    """The subset of tqdm's interface mer uses (update, set_postfix[_str], close), printing
    plain periodic lines: no carriage returns, no escape codes."""

    def __init__(self, total: int, desc: str, unit: str = "utt", stream=None, every: float | None = None,
                 clock=time.monotonic):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.stream = stream if stream is not None else sys.stderr
        self.every = PLAIN_EVERY if every is None else float(every)
        self.clock = clock
        self.n = 0
        self.postfix = ""
        self.t0 = self._last = clock()
        self._closed = False

    def line(self) -> str:
        dt = max(self.clock() - self.t0, 1e-9)
        rate = self.n / dt
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        eta = f", eta {max(self.total - self.n, 0) / rate:.0f}s" if rate > 0 and self.total and self.n < self.total else ""
        post = f" [{self.postfix}]" if self.postfix else ""
        return f"{self.desc}: {self.n}/{self.total} {self.unit}{pct} {rate:.2f} {self.unit}/s{eta}{post}"

    def _emit(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        self._last = self.clock()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.clock() - self._last >= self.every and self.n < self.total:
            self._emit()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def set_postfix(self, refresh: bool = True, **kw) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._emit()


@contextmanager
def progress(total: int, desc: str, unit: str = "utt", disable: bool = False, stream=None):
    stream = stream if stream is not None else sys.stderr
    if not disable and not _is_terminal(stream):
        bar = PlainProgress(total, desc, unit, stream)
    else:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, unit=unit, file=stream, disable=disable, dynamic_ncols=True, leave=True)
    try:
        yield bar
    finally:
        bar.close()
