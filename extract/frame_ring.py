"""Decoded frames from a decoder process to the driver through shared memory: written once, read once, never pickled.

::

    decoder process                               driver
    writes a chunk's frames into free rows   ──Frames(rows)──►   copies those rows straight into a batch
    of its ring, sends their numbers                             (np.take), then hands them back
                                             ◄──Release(rows)──

Each decoder process has a :class:`FrameRing`: ``rows`` frames of the
backbone's input size in an anonymous shared file (a memfd on Linux), made by
the driver and handed to the process when it starts. A frame crosses as a
row number; the only copies are the decoder's write and the driver's copy
into the batch. The ring holds at least a batch and a chunk more
(:func:`ring_rows`), so a decoder waiting for rows always means the driver
has a batch's worth to embed: the two can never wait for each other.

The ring lives as long as anything maps it: a decoder that crashes or
retires leaves the driver's frames readable, and nothing is left behind by
any kill (the kernel frees the file with its last mapping).
"""

from __future__ import annotations

import mmap
import os
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.reduction import DupFd

import numpy as np


def ring_rows(batch_size: int, views: int, chunk_frames: int) -> int:
    """Frames a decoder's ring holds: twice a batch and a chunk (all views), so that it decodes ahead while a batch
    is taken, and is never stuck while the driver waits for a full batch."""
    return 2 * (batch_size + views * chunk_frames)


class FrameRing:
    """``rows`` uint8 frames ``(size, size, 3)`` in memory shared with one decoder process.

    Made in the driver; passed to the process as an argument of its start
    (pickling it sends the file, not the frames), where it maps the same memory.
    """

    def __init__(self, rows: int, size: int, fd: int | None = None):
        self.frame_shape = (size, size, 3)
        nbytes = rows * size * size * 3
        self.fd = _anonymous_file(nbytes) if fd is None else fd
        weakref.finalize(self, os.close, self.fd)
        self.buffer = mmap.mmap(self.fd, nbytes)
        self.frames = np.frombuffer(self.buffer, np.uint8).reshape(rows, *self.frame_shape)

    def __reduce__(self):  # only while a process starts: the child gets a copy of the file descriptor
        return _attach, (DupFd(self.fd), len(self.frames), self.frame_shape[0])


def _attach(fd, rows: int, size: int) -> FrameRing:
    return FrameRing(rows, size, fd.detach())


def _anonymous_file(nbytes: int) -> int:
    """A file descriptor of ``nbytes`` of memory that only this process and those it hands it to can reach."""
    if hasattr(os, "memfd_create"):  # Linux: memory, never a path, and not counted against /dev/shm's size
        fd = os.memfd_create("framecache-frames", os.MFD_CLOEXEC)
    else:  # elsewhere: an unnamed temporary file, kept in the page cache while mapped
        with tempfile.TemporaryFile(prefix="framecache-frames-") as file:
            fd = os.dup(file.fileno())
    os.ftruncate(fd, nbytes)
    return fd


@dataclass(frozen=True, eq=False)
class FrameRows:
    """Frames of one view, in order, as rows of ``source`` (a decoder's ring, or any array of frames).

    ``give_back(rows)`` is called with the rows once copied or dropped, so the decoder may write them again.
    """

    source: np.ndarray  # uint8 (N, size, size, 3)
    rows: np.ndarray  # int64 row numbers in source
    give_back: Callable[[np.ndarray], None] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def split(self, count: int) -> tuple[FrameRows, FrameRows]:
        """The first ``count`` frames and the rest."""
        return FrameRows(self.source, self.rows[:count], self.give_back), FrameRows(self.source, self.rows[count:], self.give_back)

    def copy_to(self, out: np.ndarray) -> None:
        """Copy the frames into ``out`` (``len(self)`` frames), then give their rows back."""
        np.take(self.source, self.rows, axis=0, out=out)
        self.drop()

    def drop(self) -> None:
        """Give the rows back without reading them."""
        if self.give_back is not None and len(self.rows):
            self.give_back(self.rows)

    @classmethod
    def of(cls, frames: np.ndarray) -> FrameRows:
        """Frames held in an array of their own (a decoder in this process)."""
        return cls(frames, np.arange(len(frames)))
