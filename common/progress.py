"""Progress bars: one per stage, with counts, rate and ETA (tqdm), on stderr."""
from __future__ import annotations

import sys
from contextlib import contextmanager


@contextmanager
def progress(total: int, desc: str, unit: str = "utt", disable: bool = False):
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable, dynamic_ncols=True, leave=True)
    try:
        yield bar
    finally:
        bar.close()
