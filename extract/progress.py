"""Progress of an extraction on stderr: a tqdm bar on a terminal, plain lines otherwise.

Without a terminal (``make features > log 2>&1``, a notebook, a batch job) a
bar would print nothing readable, so one line is written every
:data:`PROGRESS_INTERVAL_S` seconds and whenever another
:data:`PROGRESS_STEP` of the videos is done::

    412/1000 videos (41 %), 3 failed, 152 frames/s, ~2 min left

``quiet`` prints nothing.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import TextIO

PROGRESS_INTERVAL_S = 10.0  # without a terminal: a line at least this often...
PROGRESS_STEP = 0.1  # ...and each time another tenth of the videos is done


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """Reports one run's progress: call :meth:`update` as videos finish and frames are embedded (and while
    waiting: it writes only when a line is due), then :meth:`close`. Stage one's :class:`~framecache.extract.interfaces.ProgressReport`.

    ``total``: the run's videos; ``skipped``: those cached already (counted as done from the start).
    """

    def __init__(
        self,
        total: int,
        skipped: int,
        quiet: bool,
        started: float,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total, self.skipped = total, skipped
        self.stream = stream if stream is not None else sys.stderr
        self.started = started
        self.clock = clock
        self.bar = None
        self.plain = False
        if quiet:
            return
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=skipped, unit="video", desc="extract", file=self.stream)
        else:
            self.plain = True
            self.last_line = started
            self.last_step = self._step(skipped)

    def line(self, done: int, failed: int, frames: int, elapsed: float) -> str:
        """``"412/1000 videos (41 %), 3 failed, 152 frames/s, ~2 min left"`` for a run ``elapsed`` seconds in."""
        total = self.total
        rate = frames / elapsed if elapsed > 0 else 0.0
        line = (
            f"{done}/{total} videos ({100 * done // max(total, 1)} %), {failed} failed, "
            f"{rate:.{0 if rate >= 10 else 1}f} frames/s"
        )
        processed = done - self.skipped  # this run
        if processed and done < total and elapsed > 0:
            line += f", ~{_duration((total - done) * elapsed / processed)} left"
        return line

    def _step(self, done: int) -> int:
        """How many PROGRESS_STEPs of the videos are done."""
        return math.floor(done / (PROGRESS_STEP * max(self.total, 1)) + 1e-9)

    def update(self, done: int, failed: int, frames: int) -> None:
        """``done``: videos done, the skipped ones included; ``failed``: of those, failed; ``frames``: embedded this run."""
        now = self.clock()
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            self.bar.set_postfix_str(f"{frames / max(now - self.started, 1e-9):.1f} frames/s", refresh=False)
        elif self.plain:
            step = self._step(done)
            if step > self.last_step or now - self.last_line >= PROGRESS_INTERVAL_S:
                print(self.line(done, failed, frames, now - self.started), file=self.stream, flush=True)
                self.last_line, self.last_step = now, step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
