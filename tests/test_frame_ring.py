"""Frames from the decoder processes through shared memory, and the embedder kept busy: the same frames and features
as decoding and embedding one batch at a time in this process, and the embedder's idle time counted."""

from __future__ import annotations

import multiprocessing
import time
from collections import deque
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from doubles import FakeEmbedder, InProcessSink, SyntheticDecoders
from test_decode import moving_gradient, write_test_video

from framecache.common.cache import CacheWriter
from framecache.common.provenance import BackboneDescription
from framecache.extract.backbones import Backbone, _registry
from framecache.extract.decoders import Chunk, DecoderPool, _Inbox
from framecache.extract.driver import Driver, ExtractSummary
from framecache.extract.frame_ring import FrameRing, FrameRows, ring_rows
from framecache.extract.interfaces import Finished
from framecache.extract.messages import DecodeTask, End, Release
from framecache.extract.views import DecodeSettings, ViewDecoder


def _fill(ring: FrameRing, value: int) -> None:
    ring.frames[:] = value


def test_a_ring_is_the_same_memory_in_the_process_it_is_handed_to() -> None:
    ring = FrameRing(3, 4)
    process = multiprocessing.get_context("spawn").Process(target=_fill, args=(ring, 9))
    process.start()
    process.join(60)
    assert process.exitcode == 0
    assert (ring.frames == 9).all() and ring.frames.shape == (3, 4, 4, 3)


def test_frame_rows_copy_into_a_batch_then_give_their_rows_back() -> None:
    source = np.arange(6 * 2 * 2 * 3, dtype=np.uint8).reshape(6, 2, 2, 3)
    given = []
    frames = FrameRows(source, np.array([4, 1, 5]), given.append)
    head, rest = frames.split(2)
    out = np.empty((2, 2, 2, 3), np.uint8)
    head.copy_to(out)
    np.testing.assert_array_equal(out, source[[4, 1]])
    rest.drop()
    assert [rows.tolist() for rows in given] == [[4, 1], [5]]


class _Pipe:
    """The driver's end of a worker's pipe, as the worker's inbox sees it: releases queued in advance."""

    def __init__(self, messages: list):
        self.messages = deque(messages)

    def recv(self):
        return self.messages.popleft()


def test_a_chunk_is_written_straight_into_a_free_run_of_the_ring() -> None:
    ring = FrameRing(ring_rows(batch_size=4, views=2, chunk_frames=3), 2)  # 20 rows
    inbox = _Inbox(_Pipe([]), ring, views=2)
    place = inbox.place(3)
    assert np.shares_memory(place, ring.frames) and place.shape == (2, 3, 2, 2, 3)
    place[:] = 7
    rows = inbox.rows_of(place)
    assert rows.tolist() == [[0, 1, 2], [3, 4, 5]] and (ring.frames[:6] == 7).all()
    assert inbox.rows_of(inbox.place(3)).tolist() == [[6, 7, 8], [9, 10, 11]]  # the next run


def test_a_fragmented_ring_still_takes_a_chunk_and_a_failed_video_frees_its_place() -> None:
    ring = FrameRing(8, 2)
    inbox = _Inbox(_Pipe([Release(np.array([0, 2, 4, 6]))]), ring, views=1)
    for _ in range(2):
        inbox.rows_of(inbox.place(4))  # every row written: the driver holds them
    place = inbox.place(4)  # waits for the release: rows 0, 2, 4, 6 are free, no run of 4
    assert not np.shares_memory(place, ring.frames)
    place[:] = np.arange(4, dtype=np.uint8)[:, None, None, None]
    rows = inbox.rows_of(place)
    assert rows.tolist() == [[0, 2, 4, 6]]
    np.testing.assert_array_equal(ring.frames[[0, 2, 4, 6], 0, 0, 0], [0, 1, 2, 3])
    inbox._give(rows.ravel())
    inbox.place(4)
    inbox.unplace()  # the decoder failed on its video before this chunk was sent
    assert inbox.free.sum() == 4


def _settings(views: int) -> DecodeSettings:
    return DecodeSettings(size=32, frame_step=1, fps=None, chunk_frames=7, decoder="pyav", views=views, augment="default", seed=5)


@pytest.mark.parametrize("views", [1, 3])
def test_frames_through_a_decoder_process_are_those_decoded_here(tmp_path: Path, views: int) -> None:
    """Bit for bit: the clean and augmented views a decoder process writes into its ring are what ViewDecoder makes in
    this process, chunk by chunk."""
    video = str(write_test_video(tmp_path / "a.mp4", moving_gradient(40, 48, 64)))
    settings = _settings(views)
    expected = np.concatenate(list(ViewDecoder(settings).open(video, "a.mp4")), axis=1)
    got = [[] for _ in range(views)]
    with DecoderPool(settings, 1, batch_size=4) as pool:
        pool.assign(deque([DecodeTask(0, video, "a.mp4")]))
        ended = False
        while not ended:
            for message in pool.receive(timeout=30):
                if isinstance(message, Chunk):
                    for view, frames in enumerate(message.views):
                        out = np.empty((len(frames), 32, 32, 3), np.uint8)
                        frames.copy_to(out)
                        got[view].append(out)
                ended = ended or isinstance(message, End)
    assert expected.shape == (views, 40, 32, 32, 3)
    np.testing.assert_array_equal(np.stack([np.concatenate(view) for view in got]), expected)


def test_a_ring_smaller_than_a_chunk_never_stalls_the_run(tmp_path: Path) -> None:
    """Batches larger than the videos and many views: the driver starts a short batch at the end, and a decoder
    whose ring is full always has a batch's worth queued at the driver."""
    video = str(write_test_video(tmp_path / "a.mp4", moving_gradient(30, 48, 64)))
    settings = _settings(4)
    with DecoderPool(settings, 2, batch_size=64) as pool:
        todo = deque(DecodeTask(index, video, f"{index}.mp4") for index in range(5))
        pool.assign(todo)
        frames, deadline = 0, time.monotonic() + 120
        while (todo or pool.busy()) and time.monotonic() < deadline:
            for message in pool.receive(timeout=1):
                if isinstance(message, Chunk):
                    frames += message.frames * len(message.views)
                    for view in message.views:
                        view.drop()
            pool.assign(todo)
    assert frames == 5 * 30 * 4


def _mean_backbone(batch_size: int) -> Backbone:
    spec = _registry()["mobilenet_v2"]

    def start(batch: np.ndarray) -> Finished:
        return Finished(np.repeat(batch.mean(axis=(1, 2, 3))[:, None], spec.feature_dim, axis=1).astype(np.float32))

    description = BackboneDescription(spec.name, "none", None, spec.input_size, spec.feature_dim, "test")
    return Backbone(spec, description, "test", batch_size, start)


def test_two_batches_at_once_give_each_frame_its_own_features() -> None:
    frames = np.random.default_rng(0).integers(0, 255, (75, 224, 224, 3), dtype=np.uint8)
    features = _mean_backbone(batch_size=16).embed(frames)
    assert features.shape == (75, 1280)
    np.testing.assert_allclose(features[:, 0], frames.mean(axis=(1, 2, 3)), rtol=1e-6)


class _SlowDecoders(SyntheticDecoders):
    def receive(self, timeout: float) -> list:
        time.sleep(self.delay)
        return super().receive(timeout)


class _SlowEmbedder(FakeEmbedder):
    def start(self, frames: np.ndarray, streams: list | None = None) -> Finished:
        time.sleep(self.delay)
        return super().start(frames, streams)


def _idle_share(tmp_path: Path, decode_delay: float, embed_delay: float) -> float:
    from test_streaming import FEATURE_DIM, Quiet, make_provenance

    videos = {"a.mp4": 96, "b.mp4": 96}
    rows = pd.DataFrame({"path": list(videos), "abs_path": list(videos), "label": "a", "group": None, "split": None, "fps": None})
    decoders, embedder = _SlowDecoders(videos, views=1, chunk_frames=8), _SlowEmbedder(FEATURE_DIM)
    decoders.delay, embedder.delay = decode_delay, embed_delay
    sink = InProcessSink(CacheWriter(tmp_path / f"{decode_delay}.h5", make_provenance(feature_dim=FEATURE_DIM, views=1)))
    summary = ExtractSummary(videos_total=2)
    Driver(decoders, lambda: embedder, sink, Quiet(), views=1, batch_size=16).run(rows, summary)
    sink.close()
    assert summary.ok == 2 and summary.embed_seconds > 0
    return summary.embed_idle_share


def test_the_embedders_idle_time_is_counted(tmp_path: Path) -> None:
    """Waiting on slow decoders shows as idle time; a slow embedder fed in time is never idle."""
    assert _idle_share(tmp_path, decode_delay=0.02, embed_delay=0.0) > 0.5
    assert _idle_share(tmp_path, decode_delay=0.0, embed_delay=0.1) < 0.2


def test_a_run_held_back_by_decoding_says_how_many_decoding_processes_to_try() -> None:
    """Only where the backbone waited long enough, for long enough, and cores were left for more decoders."""
    starved = ExtractSummary(videos_total=9, ok=8, failed=1, embed_seconds=40.0, embed_idle_seconds=20.0)
    notice = starved.decoding_notice(workers=1, cores=16)
    assert notice is not None and notice.startswith("the backbone waited for decoded frames 50 % of its time")
    assert "this machine has 16 cores for 1 decoding process; workers=2 or more may be faster" in notice
    assert "workers=6 or more" in starved.decoding_notice(workers=4, cores=7)  # never more than the cores less one
    assert starved.decoding_notice(workers=1, cores=2) is None  # the backbone needs the other core
    assert starved.decoding_notice(workers=9, cores=16) is None  # a decoding process per video already
    assert ExtractSummary(videos_total=9, ok=9, embed_seconds=40.0, embed_idle_seconds=4.0).decoding_notice(1, 16) is None
    assert ExtractSummary(videos_total=9, ok=9, embed_seconds=4.0, embed_idle_seconds=3.0).decoding_notice(1, 16) is None  # short


def test_openvino_runs_two_batches_at_once_and_says_when_each_ended() -> None:
    import openvino as ov
    import openvino.opset13 as ops

    from framecache.extract import engines

    frames = ops.parameter([2, 8, 8, 3], np.uint8)  # half a batch of 4 per infer request
    means = ops.reduce_mean(ops.convert(frames, "f32"), [1, 2], keep_dims=False)
    start = engines.openvino_runner(ov.Core().compile_model(ov.Model([means], [frames]), "CPU"), streams=2)
    before = time.monotonic()
    first = start(np.broadcast_to(np.arange(4, dtype=np.uint8)[:, None, None, None], (4, 8, 8, 3)).copy())
    second = start(np.full((4, 8, 8, 3), 5, np.uint8))
    with pytest.raises(RuntimeError, match="more than 2 batches"):
        start(np.zeros((4, 8, 8, 3), np.uint8))  # the first one's inputs are still OpenVINO's
    np.testing.assert_array_equal(first.result()[:, 0], [0, 1, 2, 3])
    np.testing.assert_array_equal(second.result()[:, 0], [5, 5, 5, 5])
    assert before < first.finished_at <= time.monotonic() and before < second.finished_at <= time.monotonic()
    start(np.zeros((4, 8, 8, 3), np.uint8)).result()  # its group is free again
