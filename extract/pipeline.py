"""Stage one end to end: CSV → decoders → batched backbone → one cache writer.

::

    decode worker(s) ──frames──►  pipeline (this process)  ──features──► writer process
    (one process each,            fixed-size batches that       (owns the HDF5 file,
     restarted if one dies)       mix frames of many videos      commits one video at a time)

The backbone is built lazily, when the first frames arrive, so a resumed run
with nothing left to do (or only unreadable files) never pays for it.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing import resource_tracker
from multiprocessing.connection import wait

import numpy as np

from framecache.common.cache import SCHEMA_VERSION
from framecache.common.cli import interrupted, raise_interrupt
from framecache.common.config import ExtractConfig
from framecache.common.dataset import load_dataset
from framecache.common.errors import FramecacheError
from framecache.extract.workers import DecodeSettings, DecodeTask, decode_worker, writer_process

log = logging.getLogger(__name__)

TASKS_PER_WORKER = 2  # queued per decoder, so it never waits for the next path
DECODE_TIMEOUT_S = 600.0  # a worker silent this long on one video is stuck: restart it


def build_provenance(config: ExtractConfig, backbone_description: dict, augment_description: dict) -> dict:
    """Everything that decides the features, as stored in the cache."""
    from framecache.extract.decode import RESIZE_POLICY

    return {
        "schema_version": SCHEMA_VERSION,
        **backbone_description,
        "resize": RESIZE_POLICY,
        "decoder": config.decoder,
        "frame_step": config.frame_step,
        "fps": config.fps,
        "views": config.views,
        "augment": config.augment,
        "augment_params": augment_description,
        "seed": config.seed,
    }


@dataclass
class ExtractSummary:
    """What one run did; printed as the last line of ``make features``."""

    videos_total: int
    skipped: int = 0  # already in the cache
    ok: int = 0
    failed: int = 0
    frames: int = 0  # frames embedded this run, all views
    seconds: float = 0.0
    interrupted: bool = False
    failures: list[tuple[str, str]] = field(default_factory=list)

    def line(self) -> str:
        rate = self.frames / self.seconds if self.seconds > 0 else 0.0
        state = "interrupted: " if self.interrupted else ""
        return (
            f"{state}{self.ok} ok, {self.failed} failed, {self.skipped} already cached "
            f"({self.frames} frames embedded in {self.seconds:.1f} s, {rate:.1f} frames/s)"
        )


@dataclass
class _Video:
    """A video in flight: its view frames arrive in chunks, features come back per batch."""

    index: int
    num_frames: int | None = None  # known once the decoder says "end"
    source_frames: int = 0
    source_fps: float = 0.0
    pending: int = 0  # frames (all views) handed to the backbone queue, not yet embedded
    features: dict = field(default_factory=dict)  # (view, offset) -> float32 (n, D)


def _start_ignoring_sigint(process: multiprocessing.process.BaseProcess) -> None:
    """Start a child process that Ctrl-C cannot hurt, without losing a Ctrl-C meant for us.

    A terminal sends SIGINT to the whole process group: a child still starting
    up would die with a traceback, and a decoder would be taken for crashed.
    So this thread blocks SIGINT while the child is created: the child inherits
    the blocked signal across fork and exec and keeps it pending until its
    first line ignores it. This process keeps its handler all along, so a
    Ctrl-C meanwhile is taken by another of its threads, or by this one once
    unblocked, and still interrupts the run. (Ignoring SIGINT here instead
    would let another thread swallow it.)
    """
    # Started first, on its own: its start unblocks SIGINT in this thread.
    resource_tracker.ensure_running()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        process.start()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _exit_detail(code: int | None) -> str:
    if code is None or code == 0:
        return ""
    if code < 0 and -code in signal.valid_signals():
        return f" (killed by {signal.Signals(-code).name})"
    return f" (exit code {code})"


class _Decoders:
    """A pool of decoder processes, each on its own pipe, restarted when one dies."""

    def __init__(self, settings: DecodeSettings, count: int):
        self.context = multiprocessing.get_context("spawn")
        self.settings = settings
        self.slots: list[dict] = [self._start() for _ in range(count)]

    def _start(self) -> dict:
        ours, theirs = self.context.Pipe(duplex=True)
        process = self.context.Process(target=decode_worker, args=(theirs, self.settings), daemon=True)
        _start_ignoring_sigint(process)
        theirs.close()
        return {"process": process, "connection": ours, "tasks": deque(), "last_seen": time.monotonic()}

    def assign(self, todo: deque) -> None:
        """Give each worker tasks until it has TASKS_PER_WORKER queued."""
        for slot in self.slots:
            while todo and len(slot["tasks"]) < TASKS_PER_WORKER:
                task = todo.popleft()
                slot["tasks"].append(task)
                if len(slot["tasks"]) == 1:
                    slot["last_seen"] = time.monotonic()  # the stall clock starts with its first task
                try:
                    slot["connection"].send(task)
                except OSError:  # it died: receive() restarts it and hands its unbegun tasks on
                    break

    def busy(self) -> bool:
        return any(slot["tasks"] for slot in self.slots)

    def receive(self, timeout: float) -> list[tuple]:
        """Messages ready now (or within ``timeout``); crashed or stuck workers become failures."""
        messages = []
        by_connection = {id(slot["connection"]): slot for slot in self.slots}
        for connection in wait([slot["connection"] for slot in self.slots], timeout):
            messages.extend(self._read(by_connection[id(connection)]))
        for slot in self.slots:
            if slot["tasks"] and not slot["process"].is_alive():
                # It may have finished a video and begun the next before dying: take
                # everything it sent (up to the end of the pipe) before blaming a video.
                connection = slot["connection"]
                while slot["connection"] is connection and connection.poll():
                    messages.extend(self._read(slot))
                if slot["connection"] is connection and slot["tasks"]:
                    messages.extend(self._restart(slot, "the decoder crashed on this video"))
            elif slot["tasks"] and time.monotonic() - slot["last_seen"] > DECODE_TIMEOUT_S:
                messages.extend(self._restart(slot, f"decoding stalled for {DECODE_TIMEOUT_S:.0f} s"))
        return messages

    def _read(self, slot: dict) -> list[tuple]:
        """One message from a worker; if its pipe ended, the failure of the video it was on."""
        try:
            message = slot["connection"].recv()
        except (EOFError, OSError):
            return self._restart(slot, "the decoder crashed on this video")
        slot["last_seen"] = time.monotonic()
        if message[0] == "retire":
            self._replace(slot)
            return []
        if message[0] in ("end", "failed"):
            slot["tasks"].popleft()
        return [message]

    def _restart(self, slot: dict, reason: str) -> list[tuple]:
        """Replace a dead worker; its current video fails, its queued ones go to the new worker."""
        process = slot["process"]
        if process.is_alive():
            process.kill()
        process.join(5)
        crashed = slot["tasks"].popleft() if slot["tasks"] else None
        self._replace(slot)
        return [("failed", crashed.index, reason + _exit_detail(process.exitcode))] if crashed else []

    def _replace(self, slot: dict) -> None:
        """Start a fresh worker in ``slot`` and hand it the tasks the old one had not begun."""
        slot["process"].join(5)
        if slot["process"].is_alive():
            slot["process"].kill()
        requeue = deque(slot["tasks"])
        slot["connection"].close()
        slot.update(self._start())
        self.assign(requeue)

    def close(self) -> None:
        for slot in self.slots:
            with contextlib.suppress(OSError):  # a worker that already exited
                slot["connection"].send(None)
        for slot in self.slots:
            slot["process"].join(2)
            if slot["process"].is_alive():
                slot["process"].kill()
                slot["process"].join(2)
            slot["connection"].close()


class _Writer:
    """The pipeline's handle on the writer process.

    The writer speaks only to answer ``close`` or to report a failed write,
    after which it closes the file and exits: every call here first checks
    for such a report and raises it as a FramecacheError.
    """

    def __init__(self, path: str, provenance: dict, overwrite: bool):
        context = multiprocessing.get_context("spawn")
        self.connection, theirs = context.Pipe(duplex=True)
        self.process = context.Process(target=writer_process, args=(theirs, path, provenance, overwrite))
        self.failed = False
        try:
            _start_ignoring_sigint(self.process)
            theirs.close()
            kind, payload = self.connection.recv()
        except EOFError:
            self.process.join(5)
            raise FramecacheError(
                f"the cache writer stopped unexpectedly{_exit_detail(self.process.exitcode)}"
            ) from None
        except BaseException:  # Ctrl-C while it starts: it sees the pipe close, closes the file, exits
            theirs.close()
            self.connection.close()
            raise
        if kind != "ready":
            self.process.join(5)
            raise FramecacheError(payload)
        self.done_paths: set[str] = payload

    def _error(self) -> FramecacheError:
        """The writer's report of what went wrong, or the fact that it died."""
        self.failed = True
        message = None
        with contextlib.suppress(EOFError, OSError):
            if self.connection.poll(5):
                kind, payload = self.connection.recv()
                message = payload if kind == "error" else None
        if message is None:
            self.process.join(5)
            message = f"the writer process died{_exit_detail(self.process.exitcode)}"
        return FramecacheError(f"writing the cache failed: {message}")

    def send(self, kind: str, record: dict) -> None:
        if self.failed:
            raise FramecacheError("writing the cache failed earlier")
        try:
            if self.connection.poll():
                raise self._error()
            self.connection.send((kind, record))
        except OSError:  # BrokenPipeError, ConnectionResetError: the writer is gone
            raise self._error() from None

    def close(self) -> None:
        """Ask the writer to close the file; raise what it reports, if anything."""
        try:
            if self.failed:
                return  # already raised
            try:
                self.connection.send(("close",))
            except OSError:
                pass  # it exited: its report, if any, is still in the pipe
            try:
                kind, payload = self.connection.recv()
            except (EOFError, OSError):
                raise self._error() from None
            if kind == "error":
                self.failed = True
                raise FramecacheError(f"writing the cache failed: {payload}")
        finally:
            self.process.join(30)
            self.connection.close()


def run_extraction(config: ExtractConfig) -> ExtractSummary:
    """Extract features for every video of ``config.csv`` into ``config.out``; resume if it exists."""
    from framecache.extract.augment import ViewAugmenter
    from framecache.extract.backbones import describe_backbone

    config.validate()
    started = time.monotonic()
    dataset = load_dataset(config.csv)
    augmenter = ViewAugmenter(config.augment, config.seed)
    description = describe_backbone(config.backbone, config.weights)
    provenance = build_provenance(config, description, augmenter.describe())

    writer = _Writer(config.out, provenance, config.overwrite)
    try:
        return _extract(config, dataset, description, writer, started)
    finally:
        writer.close()


def _extract(config: ExtractConfig, dataset, description: dict, writer: _Writer, started: float) -> ExtractSummary:
    """Decode, embed and hand every video not cached yet to ``writer``; the caller closes it."""
    from framecache.extract.backbones import build_backbone

    summary = ExtractSummary(videos_total=len(dataset))
    todo = deque(
        DecodeTask(index, row.abs_path, row.path)
        for index, row in enumerate(dataset.itertuples())
        if row.path not in writer.done_paths
    )
    summary.skipped = len(dataset) - len(todo)
    if not todo:
        summary.seconds = time.monotonic() - started
        return summary

    settings = DecodeSettings(
        size=int(description["input_size"]),
        frame_step=config.frame_step,
        fps=config.fps,
        chunk_frames=config.chunk_frames,
        decoder=config.decoder,
        views=config.views,
        augment=config.augment,
        seed=config.seed,
    )
    progress = _progress(len(dataset), summary.skipped, config.quiet)
    decoders = _Decoders(settings, min(config.workers, len(todo)))
    previous_sigterm = signal.signal(signal.SIGTERM, raise_interrupt)
    backbone = None
    in_flight: dict[int, _Video] = {}
    ready: deque = deque()  # (index, view, offset, frames) waiting for the backbone
    ready_frames = 0

    def finish(index: int, reason: str | None) -> None:
        row = dataset.iloc[index]
        video = in_flight.pop(index, None)
        base = {"path": row.path, "label": row.label, "group": row.group, "split": row.split}
        if reason is not None:
            writer.send("failure", {**base, "reason": reason})
            summary.failed += 1
            summary.failures.append((row.path, reason))
            log.debug("failed: %s: %s", row.path, reason)
        else:
            views = [
                np.concatenate([video.features[key] for key in sorted(video.features) if key[0] == view])
                for view in range(config.views)
            ]
            record = {**base, "features": np.stack(views).astype(np.float16)}
            record.update(source_frames=video.source_frames, source_fps=video.source_fps)
            writer.send("video", record)
            summary.ok += 1
        progress.update(1)

    def embed(batch_size: int) -> None:
        nonlocal backbone, ready_frames
        if backbone is None:
            backbone = build_backbone(config.backbone, config.weights, engine=config.engine, batch_size=config.batch_size)
        pieces, taken = [], 0
        while ready and taken < batch_size:
            index, view, offset, frames = ready.popleft()
            room = batch_size - taken
            if len(frames) > room:
                ready.appendleft((index, view, offset + room, frames[room:]))
                frames = frames[:room]
            pieces.append((index, view, offset, frames))
            taken += len(frames)
        ready_frames -= taken
        features = backbone.embed(np.concatenate([frames for *_, frames in pieces]))
        start = 0
        for index, view, offset, frames in pieces:
            video = in_flight.get(index)
            if video is not None:  # None: the video failed after these frames were queued
                video.features[(view, offset)] = features[start : start + len(frames)]
                video.pending -= len(frames)
            start += len(frames)
        summary.frames += taken
        progress.set_postfix_str(f"{summary.frames / (time.monotonic() - started):.1f} frames/s", refresh=False)
        for index in [i for i, v in in_flight.items() if v.num_frames is not None and v.pending == 0]:
            finish(index, None)

    def handle(message: tuple) -> None:
        nonlocal ready_frames
        kind, index = message[0], message[1]
        video = in_flight.setdefault(index, _Video(index))
        if kind == "frames":
            _, _, offset, views = message
            for view in range(len(views)):
                ready.append((index, view, offset, views[view]))
            video.pending += views.shape[0] * views.shape[1]
            ready_frames += views.shape[0] * views.shape[1]
        elif kind == "end":
            _, _, video.num_frames, video.source_frames, video.source_fps = message
            if video.pending == 0:
                finish(index, None)
        elif kind == "failed":
            queued = [item for item in ready if item[0] == index]
            ready_frames -= sum(len(item[3]) for item in queued)
            for item in queued:
                ready.remove(item)
            finish(index, message[2])

    try:
        decoders.assign(todo)
        while todo or decoders.busy() or ready:
            if interrupted():  # raised before, but swallowed by a library
                raise KeyboardInterrupt
            if ready_frames >= config.batch_size or (ready and not decoders.busy()):
                embed(config.batch_size)  # a short batch only at the very end
                continue
            for message in decoders.receive(timeout=0.5):
                handle(message)
            decoders.assign(todo)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        progress.close()
        decoders.close()
    summary.seconds = time.monotonic() - started
    return summary


def _progress(total: int, initial: int, quiet: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="video",
        desc="extract",
        disable=quiet or not sys.stderr.isatty(),
        file=sys.stderr,
    )


@dataclass
class EmbedResult:
    """One video's clean-view features for ``predict``, or why it failed."""

    path: str
    features: np.ndarray | None  # float32 (T, D)
    error: str | None = None


def embed_videos(paths: list[str], provenance: dict, engine: str = "auto") -> list[EmbedResult]:
    """Decode and embed videos exactly as the cache with ``provenance`` was made (clean view only).

    Used by ``predict``; raises :class:`FramecacheError` if the backbone or
    weights recorded in ``provenance`` cannot be rebuilt here.
    """
    from framecache.extract.backbones import backbone_from_provenance
    from framecache.extract.decode import iter_frames

    backbone = backbone_from_provenance(provenance, engine=engine)
    results = []
    for path in paths:
        try:
            chunks = [
                backbone.embed(chunk)
                for chunk in iter_frames(
                    path,
                    size=int(provenance["input_size"]),
                    frame_step=int(provenance["frame_step"]),
                    fps=provenance["fps"],
                    backend=provenance.get("decoder", "pyav"),
                )
            ]
            if not chunks:
                raise FramecacheError("no frames could be decoded")
            results.append(EmbedResult(path, np.concatenate(chunks).astype(np.float32)))
        except FramecacheError as error:
            results.append(EmbedResult(path, None, str(error)))
        except Exception as error:
            results.append(EmbedResult(path, None, f"cannot decode: {type(error).__name__}: {error}"))
    return results
