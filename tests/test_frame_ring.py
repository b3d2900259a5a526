"""Frames from the decoder processes through shared memory, and the embedder kept busy: the same frames and features
as decoding and embedding one batch at a time in this process, and the embedder's idle time counted."""

from __future__ import annotations

import multiprocessing
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from doubles import FakeEmbedder, InProcessSink, SyntheticDecoders
from test_decode import moving_gradient, write_test_video

from framecache.common.cache import CacheWriter
from framecache.common.provenance import BackboneDescription
from framecache.extract import driver as driver_module
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
        time.sleep(self.delay / self.count)  # more "processes" send chunks sooner
        return super().receive(timeout)


class _OnItsThread:
    """Features an embedder computes on a thread of its own (as OpenVINO's requests run), and when they ended."""

    def __init__(self, future: Future):
        self.future, self.finished_at = future, 0.0

    def result(self) -> np.ndarray:
        features, self.finished_at = self.future.result()
        return features


class _SlowEmbedder(FakeEmbedder):
    """Takes ``delay`` seconds a batch on its own thread, while the driver gathers the next batch."""

    def __init__(self, feature_dim: int, delay: float):
        super().__init__(feature_dim)
        self.delay, self.thread = delay, ThreadPoolExecutor(1)

    def start(self, frames: np.ndarray, streams: list | None = None) -> _OnItsThread:
        def embed() -> tuple[np.ndarray, float]:
            time.sleep(self.delay)
            return self.embed(frames, streams), time.monotonic()

        return _OnItsThread(self.thread.submit(embed))


def _run(tmp_path: Path, decode_delay: float, embed_delay: float, videos: int = 2, most: int = 1) -> tuple[ExtractSummary, int]:
    """A run of ``videos`` made-up videos through decoders and an embedder slowed down: its summary, and the decoder
    "processes" at its end (the pool may grow up to ``most``)."""
    from test_streaming import FEATURE_DIM, Quiet, make_provenance

    frames = {f"{index}.mp4": 96 for index in range(videos)}
    rows = pd.DataFrame({"path": list(frames), "abs_path": list(frames), "label": "a", "group": None, "split": None, "fps": None})
    decoders, embedder = _SlowDecoders(frames, views=1, chunk_frames=8, most=most), _SlowEmbedder(FEATURE_DIM, embed_delay)
    decoders.delay = decode_delay
    sink = InProcessSink(CacheWriter(tmp_path / f"{decode_delay}-{embed_delay}-{most}.h5", make_provenance(feature_dim=FEATURE_DIM, views=1)))
    summary = ExtractSummary(videos_total=videos)
    Driver(decoders, lambda: embedder, sink, Quiet(), views=1, batch_size=16).run(rows, summary)
    sink.close()
    assert summary.ok == videos and summary.embed_seconds > 0
    return summary, decoders.count


def test_the_embedders_idle_time_is_counted(tmp_path: Path) -> None:
    """Waiting on slow decoders shows as idle time; a slow embedder fed in time is never idle."""
    assert _run(tmp_path, decode_delay=0.02, embed_delay=0.0)[0].embed_idle_share > 0.5
    assert _run(tmp_path, decode_delay=0.0, embed_delay=0.1)[0].embed_idle_share < 0.2


def test_a_decoder_process_is_added_while_the_backbone_waits_and_only_then(tmp_path: Path, monkeypatch) -> None:
    """Slow decoding adds processes, up to the pool's most, while videos wait for one; a backbone that never waits
    adds none, and neither does a fixed pool."""
    monkeypatch.setattr(driver_module, "ADD_AFTER_S", 0.1)
    summary, count = _run(tmp_path, decode_delay=0.02, embed_delay=0.0, videos=8, most=3)
    assert count == 3  # never more than most
    assert summary.embed_idle_share > 0.1  # each was added because the backbone waited
    assert _run(tmp_path, decode_delay=0.0, embed_delay=0.03, videos=8, most=3)[1] == 1
    assert _run(tmp_path, decode_delay=0.02, embed_delay=0.0, videos=8, most=1)[1] == 1
    # Two videos: both go to the first process's queue at once, so a second process would have nothing to decode.
    assert _run(tmp_path, decode_delay=0.02, embed_delay=0.0, videos=2, most=3)[1] == 1


def test_a_pool_adds_a_process_once_each_has_sent_frames_and_never_past_its_most(tmp_path: Path) -> None:
    """A process still starting is reason enough for the backbone to wait: none is added before every one has sent
    frames. The added process decodes videos of its own, and every frame arrives once."""
    video = str(write_test_video(tmp_path / "a.mp4", moving_gradient(30, 48, 64)))
    with DecoderPool(_settings(1), 1, batch_size=8, most=2) as pool:
        assert pool.count == 1 and not pool.can_add()  # it has not sent frames yet
        todo = deque(DecodeTask(index, video, f"{index}.mp4") for index in range(6))
        pool.assign(todo)
        frames, by_process, deadline = 0, set(), time.monotonic() + 120
        while (todo or pool.busy()) and time.monotonic() < deadline:
            for message in pool.receive(timeout=1):
                if isinstance(message, Chunk):
                    frames += message.frames
                    by_process.update(slot.process.pid for slot in pool.slots if slot.delivered)
                    for view in message.views:
                        view.drop()
            if pool.can_add():
                pool.add()
                assert pool.count == 2 and not pool.can_add()  # the new one has sent nothing yet
            pool.assign(todo)
        assert pool.count == 2 and not pool.can_add()  # at its most
    assert frames == 6 * 30 and len(by_process) == 2


def test_a_run_held_back_by_decoding_says_how_many_decoding_processes_to_try() -> None:
    """Only where the backbone waited long enough, for long enough, and cores were left for more decoders."""
    starved = ExtractSummary(videos_total=9, ok=8, failed=1, embed_seconds=40.0, embed_idle_seconds=20.0)
    notice = starved.decoding_notice(workers=1, cores=16)
    assert notice is not None and notice.startswith("the backbone waited for decoded frames 50 % of its time")
    assert "this machine has 16 cores for 1 decoding process; workers=2 or more may be faster, or leave workers unset" in notice
    assert "workers=7 or more" in starved.decoding_notice(workers=4, cores=7)  # never more than the cores
    assert "workers=2 or more" in starved.decoding_notice(workers=1, cores=2)  # the backbone's waits leave a core idle
    assert starved.decoding_notice(workers=2, cores=2) is None  # a process per core already
    assert starved.decoding_notice(workers=9, cores=16) is None  # a decoding process per video already
    assert starved.decoding_notice(workers=None, cores=16) is None  # unset: the run added processes itself
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
