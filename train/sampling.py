"""Temporal sampling: which cached frames become the GRU's time steps, and the order a training epoch reads the videos.

Stage one decides which decoded frames are embedded (``extract/decode.py``);
this module decides, at train time, which of the *cached* frames the GRU sees.
Every reader of sequences (the batches of training, evaluation and predict,
the input statistics, ``framecache.load_features``) samples through
:func:`time_steps`, so they all see the same frames:

- keep every ``frame_step``-th cached frame (training: a random offset each epoch);
- a video with more than ``max_len`` of those is cut into ``max_len`` equal
  segments and one frame is taken from each: a random one when training, the
  middle one when evaluating or predicting. The GRU always sees the whole video.

It is plain NumPy (no Keras), so the public API can use it without TensorFlow.
"""

from __future__ import annotations

import numpy as np

# Training order: runs of READ_BLOCK videos adjacent in the cache stay together,
# the runs are shuffled, and the videos of each WINDOW (a few batches' worth) are
# shuffled among themselves; a window is read at once, in the cache's order.
READ_BLOCK = 8
WINDOW_VIDEOS = 256


def time_steps(num_frames: int, max_len: int | None, frame_step: int = 1, rng: np.random.Generator | None = None) -> np.ndarray:
    """Which frames of a ``num_frames``-long cached sequence the GRU sees (at most ``max_len``, in order).

    Without ``rng`` (evaluation, predict) the choice is fixed; with it
    (training) the stride offset and the frame within each segment are random.
    ``max_len=None`` keeps every ``frame_step``-th frame.
    """
    offset = int(rng.integers(min(frame_step, num_frames))) if rng is not None else 0
    strided = np.arange(offset, num_frames, frame_step)
    if max_len is None or len(strided) <= max_len:
        return strided
    bounds = np.linspace(0, len(strided), max_len + 1).round().astype(np.int64)  # segments of >= 1 frame
    if rng is not None:
        positions = rng.integers(bounds[:-1], bounds[1:])
    else:
        positions = (bounds[:-1] + bounds[1:]) // 2
    return strided[positions]


def sampled_length(num_frames: np.ndarray, max_len: int | None, frame_step: int = 1) -> int:
    """The time steps a batch of these videos is padded to: the longest as sampled, at most ``max_len``."""
    longest = -(-int(np.max(num_frames)) // frame_step)
    return longest if max_len is None else min(max_len, longest)


def epoch_order(
    indices: np.ndarray, locality: np.ndarray, rng: np.random.Generator, block: int = READ_BLOCK, window: int = WINDOW_VIDEOS
) -> np.ndarray:
    """A training epoch's order of ``indices`` that the cache serves well, and still mixes the videos.

    The videos, in the cache's order (``locality``), are cut into runs of
    ``block``; the runs are shuffled, then the videos within each ``window``
    of that sequence. A window thus holds ``window / block`` runs from random
    places of the cache (so a batch mixes classes and subjects even when
    neighbours in the cache share them), and is read run by run.
    """
    indices = np.asarray(indices, dtype=np.int64)
    ordered = indices[np.argsort(locality[indices], kind="stable")]
    runs = [ordered[start : start + block] for start in range(0, len(ordered), block)]
    if not runs:
        return ordered
    order = np.concatenate([runs[run] for run in rng.permutation(len(runs))])
    for start in range(0, len(order), window):
        order[start : start + window] = rng.permutation(order[start : start + window])
    return order
