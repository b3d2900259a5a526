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
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from framecache.extract.pipeline import ExtractSummary

PROGRESS_INTERVAL_S = 10.0  # without a terminal: a line at least this often...
PROGRESS_STEP = 0.1  # ...and each time another tenth of the videos is done


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def progress_line(summary: ExtractSummary, elapsed: float) -> str:
    """``"412/1000 videos (41 %), 3 failed, 152 frames/s, ~2 min left"`` for a run ``elapsed`` seconds in."""
    total = summary.videos_total
    done = summary.skipped + summary.ok + summary.failed
    rate = summary.frames / elapsed if elapsed > 0 else 0.0
    line = (
        f"{done}/{total} videos ({100 * done // max(total, 1)} %), {summary.failed} failed, "
        f"{rate:.{0 if rate >= 10 else 1}f} frames/s"
    )
    processed = summary.ok + summary.failed  # this run
    if processed and done < total and elapsed > 0:
        line += f", ~{_duration((total - done) * elapsed / processed)} left"
    return line


class Progress:
    """Reports one run's progress; call :meth:`video_done`, :meth:`frames_embedded`, :meth:`tick`, then :meth:`close`."""

    def __init__(
        self,
        summary: ExtractSummary,
        quiet: bool,
        started: float,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.stream = stream if stream is not None else sys.stderr
        self.started = started
        self.clock = clock
        self.bar = None
        self.plain = False
        if quiet:
            return
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=summary.videos_total, initial=summary.skipped, unit="video", desc="extract", file=self.stream)
        else:
            self.plain = True
            self.last_line = started
            self.last_step = self._step(summary)

    def _step(self, summary: ExtractSummary) -> int:
        """How many PROGRESS_STEPs of the videos are done."""
        done = summary.skipped + summary.ok + summary.failed
        return math.floor(done / (PROGRESS_STEP * max(summary.videos_total, 1)) + 1e-9)

    def _maybe_line(self, summary: ExtractSummary) -> None:
        now = self.clock()
        step = self._step(summary)
        if step > self.last_step or now - self.last_line >= PROGRESS_INTERVAL_S:
            print(progress_line(summary, now - self.started), file=self.stream, flush=True)
            self.last_line, self.last_step = now, step

    def video_done(self, summary: ExtractSummary) -> None:
        if self.bar is not None:
            self.bar.update(1)
        elif self.plain:
            self._maybe_line(summary)

    def frames_embedded(self, summary: ExtractSummary) -> None:
        if self.bar is not None:
            rate = summary.frames / max(self.clock() - self.started, 1e-9)
            self.bar.set_postfix_str(f"{rate:.1f} frames/s", refresh=False)
        elif self.plain:
            self._maybe_line(summary)

    def tick(self, summary: ExtractSummary) -> None:
        """Called as the run waits: keeps the lines coming while a long video is decoded."""
        if self.plain:
            self._maybe_line(summary)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
