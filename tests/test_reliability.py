"""Reliability of stage one: a bad file, a crash or a kill must never cost finished work.

Every test drives the real command line (``framecache extract``, ``framecache
info``) in a subprocess, with the real backbone (MobileNetV2, random
weights: offline, 1280-d, 224 px), on small videos made at run time:

- bad videos in the CSV are recorded as failed with a reason, good ones extracted;
- a decoder that crashes (a test double, :class:`doubles.CrashingDecoder`) costs one video;
- ``kill -9`` of the pipeline, and of the cache writer itself, at random
  moments, several times in a row, then a full run: every video exactly once,
  features equal to an uninterrupted run's; a killed writer costs at most its
  open shard and stops the run with an error saying to run it again;
- Ctrl-C stops cleanly (exit 130, summary line, no traceback) and resumes;
- two extractions into one cache at once: every video once;
- bad CSVs and bad caches give one ``error:`` line (exit 2) and write nothing;
- a missing or read-only output folder and a full disk give a clear error, and
  the cache keeps every shard closed before.

``make test`` runs a few kill rounds; ``make test-slow`` many (and
``python -m framecache.bench.kill_writer --kills 50``, in tests/test_cache.py).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import cv2
import h5py
import numpy as np
import pytest
from conftest import make_provenance
from doubles import CRASH_MARKER, CrashingDecoder

from framecache.common.cache import OPEN_PREFIX, SCHEMA_VERSION, CacheWriter, FeatureCache, shards_folder
from framecache.data.synthetic import write_video

ROOT = Path(__file__).resolve().parents[1]
MODEL = ["--backbone", "mobilenet_v2", "--weights", "none"]
GOOD = [f"good{index}.mp4" for index in range(8)]


# ---------------------------------------------------------------------------
# Helpers


def frames(num_frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """A bright square moving over a noisy background (uint8 RGB)."""
    rng = np.random.default_rng(seed)
    video = np.repeat(rng.integers(0, 90, size=(1, height, width, 3), dtype=np.uint8), num_frames, axis=0)
    side = min(height, width) // 3
    for index in range(num_frames):
        top, left = (index * 3) % (height - side), (index * 5) % (width - side)
        video[index, top : top + side, left : left + side] = rng.integers(130, 255, size=3, dtype=np.uint8)
    return video


def write_mp4(path: Path, video: np.ndarray, faststart: bool = False, preset: str = "veryfast") -> None:
    """H.264 mp4 with PyAV; its moov atom (the index) goes at the end unless ``faststart``."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=Fraction(10), options={"crf": "23", "preset": preset})
        stream.width, stream.height, stream.pix_fmt = video.shape[2], video.shape[1], "yuv420p"
        for frame in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def write_audio_only(path: Path) -> None:
    """One second of a 440 Hz tone, AAC in an mp4 container: no video stream."""
    samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        for start in range(0, len(samples), 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, start : start + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def cli_env(**extra: str) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def extract_command(csv: Path, out: Path, *extra: str, views: int = 2, workers: int = 1, chunk: int = 2,
                    shard: int = 2) -> list[str]:  # fmt: skip
    """``framecache extract`` with small batches, chunks and shards, so shards close often."""
    return [
        sys.executable, "-m", "framecache", "extract", "--csv", str(csv), "--out", str(out), *MODEL,
        "--views", str(views), "--augment", "light" if views > 1 else "none", "--shard-videos", str(shard),
        "--batch-size", "4", "--chunk-frames", str(chunk), "--workers", str(workers), "--quiet", *extra,
    ]  # fmt: skip


def run(command: list[str], env: dict | None = None, timeout: float = 240, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=ROOT, env=env or cli_env(), capture_output=True, text=True, timeout=timeout, **kwargs
    )


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr


def run_in_process(command: list[str], capsys) -> subprocess.CompletedProcess:
    """``command`` (``python -m framecache ...``) through framecache's ``main`` in this process, as a CompletedProcess.

    Each error family keeps one or two cases through a real process (``run``); the rest run here, in milliseconds.
    """
    from framecache.cli import main

    assert command[:3] == [sys.executable, "-m", "framecache"], command
    previous = signal.getsignal(signal.SIGINT)
    try:
        main(command[3:])
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code if isinstance(exit_info.code, int) else int(exit_info.code is not None)
    finally:
        signal.signal(signal.SIGINT, previous)  # the command takes Ctrl-C over; pytest gets it back
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(command, code, captured.out, captured.err)


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit code 2, exactly one ``error:`` line on stderr containing ``fragments``, no traceback."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("path,label\n" + "".join(f"{video},{label}\n" for video, label in rows))
    return path


def read_cache(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Features per path (float32) and failure reasons per path; checks each video is there once."""
    with FeatureCache(path) as cache:
        paths = [video.path for video in cache.videos]
        assert len(paths) == len(set(paths)), f"a video is cached twice: {sorted(paths)}"
        features = {video.path: cache.features(video.key).astype(np.float32) for video in cache.videos}
        for video in cache.videos:
            assert features[video.path].shape[1] == video.num_frames
        return features, {failure.path: failure.reason for failure in cache.failures}


def open_shards(path: Path) -> list[str]:
    """Shards not closed: being written, or left by a killed writer (the next writer deletes those)."""
    return sorted(shard.name for shard in shards_folder(path).glob(OPEN_PREFIX + "*"))


def closed_shards(path: Path) -> list[str]:
    """Closed shards of the cache: each holds finished videos only (features reach the open shards as they are made)."""
    folder = shards_folder(path)
    return sorted(shard.name for shard in folder.glob("*.h5") if not shard.name.startswith(".")) if folder.is_dir() else []


def tagged_processes(tag: str) -> list[int]:
    """Live processes started with FRAMECACHE_TEST_TAG=tag in their environment (children inherit it)."""
    marker = f"FRAMECACHE_TEST_TAG={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):  # a process that exited meanwhile
                if marker in (entry / "environ").read_bytes().split(b"\0"):  # empty for zombies
                    found.append(int(entry.name))
    return found


def is_session_leader(pid: int) -> bool:
    """True for the cache writer, which calls os.setsid()."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return int(fields[3]) == pid  # state, ppid, pgrp, session


def wait_until_gone(tag: str, timeout: float = 30) -> float:
    """Wait for every tagged process to exit on its own; return how long that took."""
    started = time.monotonic()
    while tagged_processes(tag):
        if time.monotonic() - started > timeout:
            pytest.fail(f"processes {tagged_processes(tag)} still alive {timeout} s after their pipeline ended")
        time.sleep(0.05)
    return time.monotonic() - started


needs_proc = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc")


def without_root_file_access() -> list[str]:
    """Command prefix under which file permissions apply, so that ``chmod`` stops reads and writes.

    Root bypasses permissions through the capabilities CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH: as root, util-linux ``setpriv`` drops them (staying root,
    so the virtual environment, wherever it lives, still works). Skips the test
    when that is impossible.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without util-linux setpriv: cannot make file permissions apply to root")
    drop = "-dac_override,-dac_read_search"
    prefix = [setpriv, f"--inh-caps={drop}", f"--bounding-set={drop}"]
    with tempfile.TemporaryDirectory() as folder:
        secret = Path(folder) / "secret"
        secret.write_text("x")
        secret.chmod(0)
        probe = subprocess.run([*prefix, sys.executable, "-c", f"import h5py, av; open({str(secret)!r})"],
                               capture_output=True, text=True)  # fmt: skip
    if "PermissionError" not in probe.stderr:
        pytest.skip(f"setpriv could not drop root's file-access capabilities here: {probe.stderr[-300:]!r}")
    return prefix


# ---------------------------------------------------------------------------
# The videos (made once for this module)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Good videos good0..7.mp4 (10 frames, 64x48) and every kind of bad one."""
    folder = tmp_path_factory.mktemp("videos")
    for index, name in enumerate(GOOD):
        write_video(folder / name, frames(10, 48, 64, seed=index), fps=10)
    for index in range(2):
        shutil.copy(folder / GOOD[index], folder / f"{CRASH_MARKER}-{index}.mp4")

    moov_at_end, faststart = folder / "full.mp4", folder / "full-faststart.mp4"
    write_mp4(moov_at_end, frames(20, 48, 64, seed=10))
    write_mp4(faststart, frames(20, 48, 64, seed=10), faststart=True)
    write_video(folder / "full.avi", frames(20, 48, 64, seed=11), fps=10)
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "random-bytes.mp4").write_bytes(np.random.default_rng(0).bytes(20_000))
    for source, target in [(moov_at_end, "truncated-index-lost.mp4"), (faststart, "truncated-index-kept.mp4"),
                           (folder / "full.avi", "truncated.avi")]:  # fmt: skip
        data = source.read_bytes()
        (folder / target).write_bytes(data[: len(data) // 2])
    write_audio_only(folder / "audio-only.mp4")
    (folder / "image.mp4").write_bytes(cv2.imencode(".png", frames(1, 48, 64, seed=12)[0])[1].tobytes())
    (folder / "folder.mp4").mkdir()
    # Frames that cannot be decoded: random bytes over the middle of the H.264 data (header intact).
    write_mp4(folder / "intact.mp4", frames(40, 96, 128, seed=13))
    data = bytearray((folder / "intact.mp4").read_bytes())
    middle = len(data) // 2
    data[middle - 1000 : middle + 1000] = np.random.default_rng(1).bytes(2000)
    (folder / "damaged-frames.mp4").write_bytes(bytes(data))
    write_video(folder / "one-frame.mp4", frames(1, 48, 64, seed=14), fps=10)
    # 4096x4096: decoding scales it down in the decoder; measured ~135 MB peak per worker.
    huge = np.zeros((2, 4096, 4096, 3), np.uint8)
    huge[:, ::7, :, 0], huge[:, :, ::5, 1] = 200, 100
    write_mp4(folder / "huge-4096x4096.mp4", huge, preset="ultrafast")
    return folder


# What a person reads for each bad file (substrings of the recorded reason).
BAD_VIDEOS = {
    "empty.mp4": ["file is empty (0 bytes)"],
    "random-bytes.mp4": ["not a readable video file"],
    "truncated-index-lost.mp4": ["an MP4 without its index (moov atom), probably truncated"],
    "truncated-index-kept.mp4": ["cannot decode frame", "truncated or damaged"],
    "truncated.avi": ["video is truncated or damaged"],
    "audio-only.mp4": ["not a video file (no video stream)"],
    "image.mp4": ["not a video file (a still image"],
    "folder.mp4": ["folder holds no frames"],
    "damaged-frames.mp4": ["cannot decode frame", "truncated or damaged"],
    "missing.mp4": ["file not found"],
}


# ---------------------------------------------------------------------------
# Bad videos and crashing decoders


def test_bad_videos_are_recorded_as_failed_and_good_ones_extracted(videos, tmp_path):
    good = ["full.mp4", "full-faststart.mp4", "full.avi", "one-frame.mp4", "huge-4096x4096.mp4"]
    rows = [(name, "a" if index % 2 else "b") for index, name in enumerate(good + sorted(BAD_VIDEOS))]
    out = tmp_path / "features.h5"
    result = run(extract_command(write_csv(videos / "bad-videos.csv", rows), out, views=1, workers=2, chunk=4))

    assert_ok(result)  # the process never dies for a bad video
    assert f"{len(good)} ok, {len(BAD_VIDEOS)} failed" in result.stdout
    features, failures = read_cache(out)
    assert sorted(features) == sorted(good)
    assert {path: value.shape[1] for path, value in features.items()} == {
        "full.mp4": 20, "full-faststart.mp4": 20, "full.avi": 20, "one-frame.mp4": 1, "huge-4096x4096.mp4": 2
    }  # fmt: skip
    assert sorted(failures) == sorted(BAD_VIDEOS)
    for path, expected in BAD_VIDEOS.items():
        assert any(fragment in failures[path] for fragment in expected), f"{path}: {failures[path]!r}"
        assert f"failed: {path}: " in result.stderr  # also told on the terminal
    info = run([sys.executable, "-m", "framecache", "info", str(out)])
    assert_ok(info)
    assert "failed      empty.mp4: file is empty (0 bytes)" in info.stdout


@pytest.mark.parametrize("workers", [1, 2])
def test_a_crashing_decoder_costs_only_its_video(videos, tmp_path, workers):
    """Decoder workers are separate processes: one killed by SIGSEGV is replaced, its video fails."""
    names = [GOOD[0], f"{CRASH_MARKER}-0.mp4", GOOD[1], GOOD[2], f"{CRASH_MARKER}-1.mp4", GOOD[3]]
    csv = write_csv(videos / f"crash-{workers}.csv", [(name, "ab"[index % 2]) for index, name in enumerate(names)])
    out = tmp_path / "features.h5"
    # Each crash comes right after a good video on the same worker, which can send all
    # of it and crash on the next before the pipeline has read what it sent: the good
    # video must not be blamed for the crash.
    command = extract_command(csv, out, views=1, workers=workers, chunk=1)
    result = run([sys.executable, str(Path(__file__).parent / "doubles.py"), *command[3:]], env=cli_env())  # framecache, crashing

    assert_ok(result)
    assert "4 ok, 2 failed" in result.stdout
    features, failures = read_cache(out)
    assert sorted(features) == sorted(GOOD[:4])
    assert all(value.shape == (1, 10, 1280) for value in features.values())
    assert sorted(failures) == [f"{CRASH_MARKER}-0.mp4", f"{CRASH_MARKER}-1.mp4"]
    for reason in failures.values():
        assert reason == "the decoder crashed on this video (killed by SIGSEGV)"


def test_a_crash_is_blamed_on_the_video_that_caused_it(videos):
    """A worker can send all of one video and crash on the next before the pipeline reads a byte.

    Deterministic version of a race: the pipeline must first take what the dead
    worker sent (the whole first video) and only then record the crash.
    """
    from framecache.extract.decoders import Chunk, DecoderPool
    from framecache.extract.messages import DecodeTask, End, Failed
    from framecache.extract.views import DecodeSettings

    settings = DecodeSettings(
        size=224, frame_step=1, fps=None, chunk_frames=1, decoder="pyav", views=1, augment="none", seed=0
    )
    decoders = DecoderPool(settings, 1, CrashingDecoder)
    try:
        tasks = [
            DecodeTask(0, str(videos / "one-frame.mp4"), "one-frame.mp4"),  # its frame in the ring, a few bytes in the pipe
            DecodeTask(1, str(videos / f"{CRASH_MARKER}-0.mp4"), f"{CRASH_MARKER}-0.mp4"),
        ]
        decoders.assign(deque(tasks))
        worker = decoders.slots[0].process
        worker.join(30)  # nothing read yet: it decodes video 0 into the pipe, then crashes on video 1
        assert not worker.is_alive(), "the worker waits for the pipeline: its messages should fit the pipe"
        assert worker.exitcode == -signal.SIGSEGV
        messages = []
        while decoders.busy():
            messages += decoders.receive(timeout=1)
    finally:
        decoders.close()
    assert [(type(message), message.index) for message in messages] == [(Chunk, 0), (End, 0), (Failed, 1)]
    assert messages[-1].reason == "the decoder crashed on this video (killed by SIGSEGV)"


def test_a_video_handed_to_a_dead_worker_goes_to_its_replacement(videos):
    """The pipeline can queue a video on a worker that has just died: that must not stop the run."""
    from framecache.extract.decoders import Chunk, DecoderPool
    from framecache.extract.messages import DecodeTask, End, Failed
    from framecache.extract.views import DecodeSettings

    settings = DecodeSettings(
        size=224, frame_step=1, fps=None, chunk_frames=4, decoder="pyav", views=1, augment="none", seed=0
    )
    decoders = DecoderPool(settings, 1, CrashingDecoder)
    try:
        decoders.assign(deque([DecodeTask(0, str(videos / f"{CRASH_MARKER}-0.mp4"), "crash")]))
        decoders.slots[0].process.join(30)  # dead, not yet noticed by the pipeline
        decoders.assign(deque([DecodeTask(1, str(videos / GOOD[2]), GOOD[2])]))  # its pipe is broken
        messages = []
        while decoders.busy():
            messages += decoders.receive(timeout=1)
    finally:
        decoders.close()
    assert messages[0] == Failed(0, "the decoder crashed on this video (killed by SIGSEGV)")
    assert [(type(message), message.index) for message in messages[1:]] == [(Chunk, 1)] * 3 + [(End, 1)]


def test_unreadable_video_fails_and_the_rest_is_extracted(videos, tmp_path):
    """A file without read permission (as root: run without root's file-access capabilities)."""
    prefix = without_root_file_access()
    shutil.copy(videos / GOOD[0], tmp_path / "readable.mp4")
    shutil.copy(videos / GOOD[1], tmp_path / "secret.mp4")
    (tmp_path / "secret.mp4").chmod(0o000)
    csv = write_csv(tmp_path / "labels.csv", [("readable.mp4", "a"), ("secret.mp4", "a")])
    result = run(prefix + extract_command(csv, tmp_path / "features.h5", views=1))

    assert_ok(result)
    features, failures = read_cache(tmp_path / "features.h5")
    assert list(features) == ["readable.mp4"]
    assert "no permission to read the file" in failures["secret.mp4"]


# ---------------------------------------------------------------------------
# Killed and interrupted runs


@pytest.fixture(scope="module")
def eight_videos(videos) -> Path:
    return write_csv(videos / "eight.csv", [(name, "ab"[index % 2]) for index, name in enumerate(GOOD)])


@pytest.fixture(scope="module")
def reference(eight_videos, tmp_path_factory) -> tuple[dict[str, np.ndarray], float]:
    """An uninterrupted run's features, and how long the run took."""
    folder = tmp_path_factory.mktemp("reference")
    # Warm-up: the session's first run converts the backbone for OpenVINO (~10 s), once.
    assert_ok(run(extract_command(write_csv(eight_videos.parent / "warm-up.csv", [(GOOD[0], "a"), (GOOD[1], "a")]),
                                  folder / "warm-up.h5", views=1)))  # fmt: skip
    out = folder / "features.h5"
    started = time.monotonic()
    assert_ok(run(extract_command(eight_videos, out)))
    return read_cache(out)[0], time.monotonic() - started


def find_writer(tag: str, pipeline: int) -> int | None:
    """The cache writer of a run: the one tagged process in a session of its own."""
    return next((pid for pid in tagged_processes(tag) if pid != pipeline and is_session_leader(pid)), None)


def kill_rounds(csv: Path, out: Path, rounds: int, duration: float, seed: int, total: int, writer_share: float = 0.0,
                logs: Path | None = None) -> list[dict]:  # fmt: skip
    """``kill -9`` the pipeline or (a share ``writer_share`` of the rounds) the writer itself, up to ``rounds`` times.

    After a pipeline kill the writer (its own session, so it survives) must close
    its shard and exit on its own, with the decoders. After a writer kill (as the
    OOM killer would do) the pipeline must stop with one error line saying to run
    the command again. Then the cache must open, hold each video at most once,
    have lost none cached before, and read back. The last round's successor is
    started at once, while that writer may still be closing its shard: the two
    write into the cache side by side, and a video both wrote is kept once.
    Once all ``total`` videos of the CSV are cached the rounds stop: a run with nothing
    left to do ends before any kill could land.
    """
    rng = random.Random(seed)
    log, before = [], set()
    for round_ in range(rounds):
        tag = f"{os.getpid()}-{seed}-{round_}"
        stderr = (logs or out.parent) / f"{out.name}-{round_}.stderr"
        with stderr.open("w") as errors:
            process = subprocess.Popen(
                extract_command(csv, out), cwd=ROOT, env=cli_env(FRAMECACHE_TEST_TAG=tag),
                stdout=subprocess.DEVNULL, stderr=errors,
            )  # fmt: skip
        target = "writer" if rng.random() < writer_share else "pipeline"
        delay = rng.uniform(0.3, 0.8 * duration)  # from the start-up (writer not yet up) to mid-work
        entry = {"target": target, "delay": round(delay, 2), "killed": False, "writer_seen": False}
        try:
            process.wait(delay)
        except subprocess.TimeoutExpired:
            writer = find_writer(tag, process.pid)
            if target == "writer":
                while writer is None and process.poll() is None:  # not up yet: kill it as it starts
                    writer = find_writer(tag, process.pid)
            entry["writer_seen"] = writer is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(writer if target == "writer" and writer else process.pid, signal.SIGKILL)
                entry["killed"] = True
            process.wait()
        entry["exit"] = process.returncode
        if target == "writer" and entry["killed"] and process.returncode != 0:
            lines = [line for line in stderr.read_text().splitlines() if line.startswith("error:")]
            assert process.returncode == 2 and len(lines) == 1, (process.returncode, stderr.read_text())
            assert "cache writer" in lines[0] and "run the same command again" in lines[0], lines[0]
            entry["error"] = lines[0][:60]
        assert "Traceback" not in stderr.read_text(), stderr.read_text()
        if round_ == rounds - 1:
            log.append(entry)
            break  # the final run below starts right away
        entry["cleanup_s"] = round(wait_until_gone(tag), 2)
        if out.exists():
            features, failures = read_cache(out)  # opens, each video at most once, features readable
            assert not failures, failures
            assert before <= set(features), f"videos cached before are gone: {sorted(before - set(features))}"
            before = set(features)
            entry["videos"] = len(features)
        log.append(entry)
        if len(before) == total:
            break
    return log


def check_against_reference(out: Path, reference: dict[str, np.ndarray]) -> tuple[float, bool]:
    """The largest difference from the uninterrupted run's features (relative), and whether they are bit-identical."""
    features, failures = read_cache(out)
    assert not failures
    assert sorted(features) == sorted(GOOD)
    assert not open_shards(out)  # the last writer removed those of killed writers, and closed its own
    worst, identical = 0.0, True
    for path, expected in reference.items():
        assert features[path].shape == expected.shape
        difference = np.abs(features[path] - expected).max() / max(np.abs(expected).max(), 1e-6)
        worst = max(worst, float(difference))
        identical = identical and np.array_equal(features[path], expected)
    assert worst <= 1e-2, f"features differ from an uninterrupted run's by {worst:.2%} of their magnitude"
    return worst, identical


def kill_then_finish(csv: Path, tmp_path: Path, reference, episodes: int, rounds: int, seed: int,
                     writer_share: float = 0.0, enough: Callable[[list[dict]], bool] | None = None) -> list[dict]:  # fmt: skip
    """Per episode: a fresh cache, up to ``rounds`` killed runs, then one run to completion.

    With ``enough`` (a test on the log), episodes stop once it holds, after ``episodes`` at most.
    """
    features, duration = reference
    log = []
    for episode in range(episodes):
        if enough is not None and enough(log):
            break
        out = tmp_path / f"features-{episode}.h5"
        log += kill_rounds(csv, out, rounds, duration, seed=seed * 1000 + episode, total=len(features),
                           writer_share=writer_share)  # fmt: skip
        final = run(extract_command(csv, out))
        assert_ok(final)
        assert re.search(r"\d+ ok, 0 failed, \d+ already cached", final.stdout), final.stdout
        log[-1]["difference"], log[-1]["identical"] = check_against_reference(out, features)
    print(f"kill rounds (uninterrupted run: {duration:.1f} s): {log}")
    return log


@pytest.mark.slow  # test_kill_9_many_rounds does it 30 times; the fast suite: test_ctrl_c_or_sigterm
@needs_proc
def test_kill_9_at_random_moments_then_resume(eight_videos, reference, tmp_path):
    log = kill_then_finish(eight_videos, tmp_path, reference, episodes=1, rounds=3, seed=1)
    assert any(entry["killed"] for entry in log)


@pytest.mark.slow  # the fast suite kills the writer in tests/test_cache.py
@needs_proc
def test_kill_9_of_the_writer_itself_costs_its_open_shard_only(eight_videos, reference, tmp_path):
    log = kill_then_finish(eight_videos, tmp_path, reference, episodes=1, rounds=3, seed=3, writer_share=1.0)
    assert any(entry["killed"] and entry["target"] == "writer" for entry in log)
    assert all(entry["identical"] for entry in log if "identical" in entry)  # features bit for bit


@pytest.mark.slow
@needs_proc
def test_kill_9_many_rounds(eight_videos, reference, tmp_path):
    """Pipeline and writer kills mixed (with ``python -m framecache.bench.kill_writer``'s 50, in test_cache.py)."""

    def landed(log: list[dict]) -> tuple[int, int, int]:
        """Kills that landed; of them on the writer; pipeline kills whose writer was up (and must outlive them)."""
        return (sum(entry["killed"] for entry in log),
                sum(entry["killed"] and entry["target"] == "writer" for entry in log),
                sum(entry["killed"] and entry["writer_seen"] for entry in log if entry["target"] == "pipeline"))  # fmt: skip

    # A kill timed after its run ended kills nothing, so episodes go on until enough kills of each kind landed.
    wanted = (20, 10, 5)

    def enough(log: list[dict]) -> bool:
        return all(got >= want for got, want in zip(landed(log), wanted))

    log = kill_then_finish(eight_videos, tmp_path, reference, episodes=20, rounds=5, seed=2, writer_share=0.5,
                           enough=enough)  # fmt: skip
    assert enough(log), f"landed (all, writer, pipeline with its writer up): {landed(log)}, wanted {wanted}"
    assert all(entry["identical"] for entry in log if "identical" in entry)


@needs_proc
@pytest.mark.parametrize("signum", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_stops_cleanly_and_resumes(eight_videos, reference, tmp_path, signum):
    """Ctrl-C in a terminal, or SIGTERM from a batch scheduler, to every process of the run."""
    out, tag = tmp_path / "features.h5", f"{os.getpid()}-{signum}"
    process = subprocess.Popen(
        extract_command(eight_videos, out), cwd=ROOT, env=cli_env(FRAMECACHE_TEST_TAG=tag),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not closed_shards(out):  # the first videos are committed, others are being written
        assert process.poll() is None, f"the run ended before Ctrl-C: {process.communicate()}"
        assert time.monotonic() < deadline, "no video was committed within 120 s"
        time.sleep(0.02)
    os.killpg(process.pid, signum)  # to the process group, as a terminal does on Ctrl-C
    stdout, stderr = process.communicate(timeout=60)

    assert process.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr, stderr
    summary = re.search(r"interrupted: (\d+) ok, 0 failed, 0 already cached", stdout)
    assert summary, stdout
    assert "stopped early; run the same command again to resume" in stderr
    wait_until_gone(tag)
    done = len(read_cache(out)[0])
    assert 1 <= done < len(GOOD) and done == int(summary.group(1))  # every video it finished is kept, in the open shard too

    resumed = run(extract_command(eight_videos, out))
    assert_ok(resumed)
    assert f"{len(GOOD) - done} ok, 0 failed, {done} already cached" in resumed.stdout
    check_against_reference(out, reference[0])


@pytest.mark.slow
@needs_proc
def test_ctrl_c_at_any_moment(eight_videos, reference, tmp_path):
    """Ctrl-C while the pipeline starts its writer and decoders, builds the backbone or embeds."""
    rng = random.Random(3)
    interrupted_rounds = 0
    for round_ in range(12):
        out, tag = tmp_path / f"features-{round_}.h5", f"{os.getpid()}-any-{round_}"
        process = subprocess.Popen(
            extract_command(eight_videos, out, workers=2), cwd=ROOT, env=cli_env(FRAMECACHE_TEST_TAG=tag),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        started, delay = time.monotonic(), rng.uniform(0.3, 0.8 * reference[1])  # before the run can end
        time.sleep(delay)
        os.killpg(process.pid, signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
        timing = f"Ctrl-C after {delay:.2f} s, exit after {time.monotonic() - started:.2f} s, reference {reference[1]:.2f} s"
        finished_first = process.returncode == 0 and f"{len(GOOD)} ok, 0 failed" in stdout  # faster than the reference
        assert process.returncode == 130 or finished_first, (round_, timing, stdout, stderr)
        interrupted_rounds += process.returncode == 130
        assert "Traceback" not in stderr, (round_, stdout, stderr)
        assert "failed:" not in stderr  # no decoder taken for crashed
        wait_until_gone(tag)
        if out.exists():
            assert not read_cache(out)[1]
    assert interrupted_rounds >= 6, f"only {interrupted_rounds} of 12 Ctrl-Cs landed before the run ended"


# ---------------------------------------------------------------------------
# Two writers


def test_two_extractions_into_one_cache_at_once(videos, tmp_path):
    """No lock: both write shards of their own; every video is in the cache once."""
    out = tmp_path / "features.h5"
    first = write_csv(videos / "first-six.csv", [(GOOD[index], "ab"[index % 2]) for index in range(6)])
    last = write_csv(videos / "last-six.csv", [(GOOD[index], "ab"[index % 2]) for index in range(2, 8)])
    runs = [subprocess.Popen(extract_command(csv, out, views=1), cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for csv in (first, last)]  # fmt: skip
    for process in runs:
        stdout, stderr = process.communicate(timeout=240)
        assert process.returncode == 0 and "Traceback" not in stderr, (stdout, stderr)
    features, failures = read_cache(out)  # each video once
    assert sorted(features) == GOOD and not failures
    with FeatureCache(out) as cache:
        duplicates = cache.duplicates  # videos 2-5 when both started before either finished one
    assert 0 <= duplicates <= 4
    info = run([sys.executable, "-m", "framecache", "info", str(out)])
    assert_ok(info)
    assert "8 ok, 0 failed" in info.stdout
    assert ("counted once" in info.stdout) == (duplicates > 0)
    again = run(extract_command(write_csv(videos / "all-eight.csv", [(name, "ab"[i % 2]) for i, name in enumerate(GOOD)]),
                                out, views=1))  # fmt: skip
    assert_ok(again)
    assert "0 ok, 0 failed, 8 already cached" in again.stdout


# ---------------------------------------------------------------------------
# Bad CSVs

BAD_CSVS = {
    "empty": (b"", "dataset CSV is empty"),
    "only-blank-lines": (b"\n\n", "dataset CSV is empty"),
    "header-only": (b"path,label\n", "has a header but no rows"),
    "missing-columns": (b"file,class\ngood0.mp4,a\ngood1.mp4,a\n", "lacks the column(s) path, label"),
    "missing-label-column": (b"path\ngood0.mp4\ngood1.mp4\n", "lacks the column(s) label"),
    "latin-1": ("path,label\ngood0.mp4,caf\xe9\ngood1.mp4,caf\xe9\n".encode("latin-1"), "not UTF-8"),
    "blank-label": (b"path,label\ngood0.mp4,a\ngood1.mp4,\ngood2.mp4,a\n", "blank label on line(s) 3"),
    "nan-label": (b"path,label\ngood0.mp4,a\ngood1.mp4,NaN\ngood2.mp4,a\n", "blank label on line(s) 3"),
    "blank-path": (b"path,label\ngood0.mp4,a\n,a\n", "blank path on line(s) 3"),
    "conflicting-duplicates": (
        b"path,label\ngood0.mp4,a\ngood0.mp4,b\ngood1.mp4,a\ngood2.mp4,b\n",
        "lists 'good0.mp4' with different labels ['a', 'b']",
    ),  # fmt: skip
    "nul-byte": (b"path,label\ngood0.mp4,a\ngood\x001.mp4,a\ngood2.mp4,b\n", "control character in its path column on line 3"),
    "unknown-split": (
        b"path,label,split\ngood0.mp4,a,train\ngood1.mp4,a,validation\n",
        "unknown split value(s) 'validation'",
    ),  # fmt: skip
}


BAD_CSVS_IN_A_PROCESS = ("empty", "nul-byte")  # through a real `framecache extract`; the others in process


@pytest.mark.parametrize("case", sorted(BAD_CSVS))
def test_bad_csv_gives_one_error_line_and_writes_nothing(videos, tmp_path, case, capsys):
    content, expected = BAD_CSVS[case]
    csv = videos / f"bad-{case}.csv"
    csv.write_bytes(content)
    out = tmp_path / "features.h5"
    command = extract_command(csv, out)
    assert_one_error_line(run(command) if case in BAD_CSVS_IN_A_PROCESS else run_in_process(command, capsys), expected)
    assert not out.exists()


def test_non_utf8_csv_error_says_where(videos, tmp_path):
    content = BAD_CSVS["latin-1"][0]
    csv = videos / "latin.csv"
    csv.write_bytes(content)
    where = f"line 2, byte {content.index(bytes([0xE9]))}"
    assert_one_error_line(run(extract_command(csv, tmp_path / "features.h5")), where)


# ---------------------------------------------------------------------------
# Bad caches for framecache info

PROVENANCE = make_provenance(backbone="mobilenet_v2", weights="random", feature_dim=1280, views=1)


def small_cache(path: Path, videos: int = 3) -> Path:
    with CacheWriter(path, PROVENANCE) as writer:
        for index in range(videos):
            writer.add_video(f"v{index}.mp4", "ab"[index % 2], np.ones((1, 5, 1280), np.float32) * index)
    return path


def make_truncated(path: Path) -> None:
    data = small_cache(path.with_name("whole.h5")).read_bytes()
    path.write_bytes(data[: len(data) // 2])


def make_damaged_index(path: Path) -> None:
    """A cache with a closed shard whose group index (B-tree and name heap) was overwritten, as a failing disk can do."""
    (shard,) = shards_folder(small_cache(path)).glob("*.h5")
    data = bytearray(shard.read_bytes())
    for signature in (b"TREE", b"HEAP", b"SNOD"):
        start = 0
        while (start := data.find(signature, start + 1)) > 1000:  # past the root group
            data[start + 4 : start + 40] = b"\xff" * 36
    shard.write_bytes(bytes(data))


def make_other_schema(path: Path) -> None:
    small_cache(path)
    with h5py.File(path, "a") as handle:
        handle.attrs["schema_version"] = SCHEMA_VERSION + 1


BAD_CACHES = {
    "text-file": (lambda path: path.write_text("path,label\na.mp4,x\n"), "is not a readable framecache feature cache"),
    "empty-file": (lambda path: path.write_bytes(b""), "is not a readable framecache feature cache"),
    "truncated": (make_truncated, "is not a readable framecache feature cache"),
    "damaged-index": (make_damaged_index, "is damaged"),
    "other-hdf5": (lambda path: h5py.File(path, "w").close(), "not a framecache feature cache"),
    "other-schema": (make_other_schema, f"uses cache schema version {SCHEMA_VERSION + 1}"),
    "missing": (lambda path: None, "feature cache not found"),
    "folder": (lambda path: path.mkdir(), "is a folder"),
}


BAD_CACHES_IN_A_PROCESS = ("truncated", "missing")  # through a real `framecache info`; the others in process


@pytest.mark.parametrize("case", sorted(BAD_CACHES))
def test_info_on_a_bad_cache_gives_one_error_line(tmp_path, case, capsys):
    make, expected = BAD_CACHES[case]
    path = tmp_path / "features.h5"
    make(path)
    command = [sys.executable, "-m", "framecache", "info", str(path)]
    assert_one_error_line(run(command) if case in BAD_CACHES_IN_A_PROCESS else run_in_process(command, capsys), expected)


def test_info_on_a_good_cache(tmp_path):
    result = run([sys.executable, "-m", "framecache", "info", str(small_cache(tmp_path / "features.h5"))])
    assert_ok(result)
    assert "3 ok, 0 failed" in result.stdout


# ---------------------------------------------------------------------------
# Output trouble


def test_missing_output_folder(videos, tmp_path, eight_videos):
    out = tmp_path / "no" / "such" / "features.h5"
    assert_one_error_line(run(extract_command(eight_videos, out)), "output folder does not exist")
    assert not (tmp_path / "no").exists()


def test_read_only_output_folder(videos, tmp_path, eight_videos):
    """A folder without write permission (as root: run without root's file-access capabilities)."""
    prefix = without_root_file_access()
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    result = run(prefix + extract_command(eight_videos, read_only / "features.h5"))
    assert_one_error_line(result, f"cannot write {read_only / 'features.h5'}: permission denied")
    assert not (read_only / "features.h5").exists()


def _limit_file_size(limit: int):
    def apply() -> None:  # in the child, before exec; the writer process (spawned) inherits it
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # Python ignores it anyway: writes fail with EFBIG

    return apply


@pytest.mark.parametrize("case", ["no-room", pytest.param("room-for-one-video-per-shard", marks=pytest.mark.slow)])
def test_disk_full_while_writing_keeps_every_closed_shard(videos, tmp_path, case):
    """A file-size limit (RLIMIT_FSIZE, per file) stands in for a full disk: writes past it fail.

    A video of 2 views x 10 frames x 1280 float16 is 51 kB; ``full.mp4`` has 20
    frames (102 kB). The limit is 80 kB: ``no-room`` writes shards of two videos,
    and the first shard of the run cannot take its second; ``room-for-one-video-per-shard``
    closes a shard after every video, so two shards close before ``full.mp4``
    does not fit. The failing shard is discarded, the closed ones stay.
    """
    out = tmp_path / "features.h5"
    first_two = write_csv(videos / "disk-two.csv", [(GOOD[0], "a"), (GOOD[1], "a")])
    six = write_csv(videos / "disk-six.csv", [(name, "a") for name in [*GOOD[:4], "full.mp4", GOOD[4]]])
    assert_ok(run(extract_command(first_two, out)))
    shard = 2 if case == "no-room" else 1

    result = run(extract_command(six, out, shard=shard), preexec_fn=_limit_file_size(80_000))
    line = assert_one_error_line(result, "writing the cache failed", "the disk may be full")
    assert "discarded" in line and "videos cached so far are kept: free some space and run the same command again" in line
    features, _ = read_cache(out)  # still opens, with every shard closed before
    # Features stream into their shards as they are made, so a video still in flight when full.mp4 fails (GOOD[2],
    # GOOD[3] with one video per shard, depending on when their last frames came) goes with the open shards.
    if case == "no-room":
        assert sorted(features) == GOOD[:2]
    else:
        assert set(GOOD[:2]) <= set(features) <= set(GOOD[:4]), sorted(features)
    expected = sorted(features)
    assert not open_shards(out)  # the failing shard was removed

    resumed = run(extract_command(six, out))
    assert_ok(resumed)
    assert f"{6 - len(expected)} ok, 0 failed, {len(expected)} already cached" in resumed.stdout
    assert sorted(read_cache(out)[0]) == sorted([*GOOD[:5], "full.mp4"])


@pytest.mark.slow
def test_disk_full_on_a_real_file_system(tmp_path):
    """A real ENOSPC on an 8 MiB tmpfs (needs root and permission to mount; skipped otherwise)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:  # fmt: skip
        pytest.skip("cannot mount a small tmpfs here (needs root and CAP_SYS_ADMIN)")
    try:
        path = mount / "features.h5"
        committed = 0
        with pytest.raises(Exception) as raised:
            with CacheWriter(path, PROVENANCE, shard_videos=4) as writer:
                for index in range(200):
                    if index == 5:
                        (mount / "filler").write_bytes(b"\0" * (2 << 20))  # another program fills the disk
                    writer.add_video(f"v{index}.mp4", "a", np.random.default_rng(index).random((1, 40, 1280)))
                    committed += 1
        assert "the disk may be full" in str(raised.value) and "No space left" in str(raised.value)
        assert raised.type.__name__ == "FramecacheError"
        assert committed >= 5
        with FeatureCache(path) as cache:  # every closed shard; the open one was discarded
            assert len(cache.videos) == 4 * (committed // 4)
            for video in cache.videos:
                cache.features(video.key)
        assert not open_shards(path)
    finally:
        subprocess.run(["umount", str(mount)], check=False)


SWALLOWED_CTRL_C = """
import os, signal, time
from framecache.common.cli import run_cli

def main():  # a library that catches everything swallows the KeyboardInterrupt
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    except BaseException:
        pass
    return 0

run_cli(main)
"""


def test_a_swallowed_ctrl_c_still_exits_130():
    result = run([sys.executable, "-c", SWALLOWED_CTRL_C], timeout=60)
    assert result.returncode == 130, (result.returncode, result.stderr)
    assert result.stderr.strip() == "interrupted"


def test_ctrl_c_while_the_command_starts_exits_130_without_a_traceback():
    """The command imports for a while before it runs: a Ctrl-C then must not print a traceback from an import."""
    script = (
        "import signal, sys\n"
        "import framecache.__main__ as entry\n"
        "import builtins\n"
        "real_import = builtins.__import__\n"
        "def interrupted_import(name, *args, **kwargs):\n"
        "    if name == 'framecache.cli':\n"
        "        signal.raise_signal(signal.SIGINT)  # Ctrl-C arrives while the command's modules load\n"
        "    return real_import(name, *args, **kwargs)\n"
        "builtins.__import__ = interrupted_import\n"
        "sys.argv = ['framecache', 'info', 'missing.h5']\n"
        "entry.run()\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 130 and "Traceback" not in result.stderr, result.stderr
