"""Kill the cache writer with SIGKILL at random moments: no kill may cost more than the open shard.

    python -m framecache.bench.kill_writer --kills 50        # prints one JSON report; exit 1 if anything failed

Each round starts a *feeder* in its own process: it runs the pipeline's real
writer process (:class:`~framecache.extract.writer_process.WriterProcess`, that is
:func:`~framecache.extract.writer_process.writer_main` and
:class:`~framecache.common.cache.CacheWriter`) and sends it, as fast as it
takes them, videos whose float16 features (2 views, 20-49 frames, 1280-d: the
real shape) depend only on their path, streamed as the driver streams them
(pieces of a few frames of a view, then the video's end), plus a failure every
ninth video. At a
random moment of the run the round sends SIGKILL to the writer itself (three
rounds in four) or to the feeder (the pipeline's place; the writer must then
close its shard and exit on its own). After every kill:

- the cache opens and every closed shard reads (else: ``unreadable``);
- every cached video's features are bit-identical to what was sent (else: ``wrong_features``);
- no video is cached twice, every video cached before is still there, and the
  videos sent but not cached are at most the open shard's plus the one in the
  pipe (else: ``lost_more_than_open_shard``);
- a writer kill makes the feeder stop with "the cache writer died ...; run the
  same command again to resume" (counted in ``dead_writer_errors``; a kill
  after the writer closed its last shard, ``writer_kills_after_its_close``, costs nothing).

An *episode* is a fresh cache, killed rounds until its share of the kills is
done, then a run to completion, which must send exactly the videos missing and
leave a cache bit-identical (features, failures) to an uninterrupted run's
(``reruns_identical``). The feeder is fast, so a round takes about a second:
50 kills take a minute or two.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

FEATURE_DIM, VIEWS = 1280, 2
PIECE_FRAMES = 8  # frames of one view per piece sent


def video_path(index: int) -> str:
    return f"videos/v{index:05d}.mp4"


def is_bad(index: int) -> bool:
    return index % 9 == 4


def expected_features(index: int) -> np.ndarray:
    """What the feeder sends for video ``index``: float16 ``(2, 20..49, 1280)``, a function of the index alone."""
    rng = np.random.default_rng(index)
    return rng.standard_normal((VIEWS, 20 + index % 30, FEATURE_DIM)).astype(np.float16)


def provenance():
    from framecache.common.provenance import Provenance

    return Provenance(backbone="kill-test", weights="random", feature_dim=FEATURE_DIM, views=VIEWS, schema_version=2)


# ---------------------------------------------------------------------------
# The feeder (a process of its own, in the pipeline's place)


def feed(out: str, videos: int, shard_videos: int) -> int:
    """Send every video not cached yet to a writer process; print what it does, one line per step."""
    from framecache.common.errors import FramecacheError
    from framecache.extract.messages import FailureRecord, FeaturePiece, VideoRecord
    from framecache.extract.writer_process import WriterProcess

    writer = WriterProcess(out, provenance(), overwrite=False, shard_videos=shard_videos)
    print(f"writer {writer.process.pid}", flush=True)
    todo = [index for index in range(videos) if video_path(index) not in writer.done_paths]
    print(f"todo {len(todo)}", flush=True)
    try:
        for index in todo:
            if is_bad(index):
                writer.send(FailureRecord(video_path(index), "bad", None, None, "not a video file"))
            else:
                features, path = expected_features(index), video_path(index)
                for start in range(0, features.shape[1], PIECE_FRAMES):
                    for view in range(VIEWS):
                        writer.send(FeaturePiece(path, view, start, features[view, start : start + PIECE_FRAMES]))
                frames = features.shape[1]
                writer.send(VideoRecord(path, "ab"[index % 2], f"s{index % 4}", None, frames, frames, 25.0, frames))
            print(f"sent {index}", flush=True)
        writer.close()
    except FramecacheError as error:
        print(f"error {error}", flush=True)
        writer.close()
        return 2
    print("done", flush=True)
    return 0


# ---------------------------------------------------------------------------
# The rounds


class Feeder:
    """A running feeder and what it printed so far (read by a thread, so nothing blocks)."""

    def __init__(self, out: Path, videos: int, shard_videos: int):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "framecache.bench.kill_writer", "--feed", str(out), "--videos", str(videos),
             "--shard-videos", str(shard_videos)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def writer_pid(self) -> int | None:
        return next((int(line.split()[1]) for line in list(self.lines) if line.startswith("writer ")), None)

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        self.process.wait(timeout)
        self.reader.join(timeout)
        return self.process.returncode, self.process.stderr.read()

    def sent(self) -> set[int]:
        return {int(line.split()[1]) for line in self.lines if line.startswith("sent ")}

    def todo(self) -> int | None:
        return next((int(line.split()[1]) for line in self.lines if line.startswith("todo ")), None)


def _alive(pid: int) -> bool:
    from framecache.common.cache.layout import process_alive as _process_alive

    return _process_alive(pid)


def read_cache(out: Path) -> tuple[dict[str, np.ndarray], dict[str, str], int]:
    """Features per path, failures per path and the number of closed shards; raises if anything does not read."""
    from framecache.common.cache import FeatureCache

    with FeatureCache(out) as cache:
        paths = [video.path for video in cache.videos]
        if len(paths) != len(set(paths)) or cache.duplicates:
            raise AssertionError(f"a video is cached twice: {cache.duplicates} duplicate(s)")
        features = {video.path: cache.features(video.key) for video in cache.videos}
        return features, {failure.path: failure.reason for failure in cache.failures}, len(cache.shards)


def kill_rounds(folder: str | Path, kills: int = 50, videos: int = 40, shard_videos: int = 3, seed: int = 0,
                kills_per_episode: int = 5, log=None) -> dict:  # fmt: skip
    """Kill the writer (or its feeder) ``kills`` times, checking the cache after each; a JSON-able report."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    started = time.monotonic()
    report = {"kills": 0, "writer_kills": 0, "pipeline_kills": 0, "rounds_finished_before_kill": 0, "episodes": 0,
              "unreadable": 0, "wrong_features": 0, "lost_more_than_open_shard": 0, "max_lost": 0,
              "dead_writer_errors": 0, "writer_kills_after_its_close": 0, "reruns_identical": 0, "problems": []}  # fmt: skip

    def problem(kind: str, detail: str) -> None:
        report[kind] += 1
        report["problems"].append(f"{kind}: {detail}"[:400])

    # An uninterrupted run: the reference, and how long a run takes.
    reference_out = folder / "reference.h5"
    begun = time.monotonic()
    feeder = Feeder(reference_out, videos, shard_videos)
    while feeder.writer_pid() is None and feeder.process.poll() is None:
        time.sleep(0.002)
    start_up = time.monotonic() - begun  # until the writer is up
    code, stderr = feeder.finish()
    duration = time.monotonic() - begun
    writing = max(0.05, duration - start_up)
    if code != 0:
        raise RuntimeError(f"the uninterrupted run failed (exit {code}): {stderr[-2000:]}")
    reference = read_cache(reference_out)
    for index in range(videos):
        if not is_bad(index) and not np.array_equal(reference[0][video_path(index)], expected_features(index)):
            raise RuntimeError(f"the uninterrupted run stored other features for {video_path(index)}")

    episode = 0
    while report["kills"] < kills:
        out = folder / f"episode-{episode}.h5"
        report["episodes"] += 1
        cached: set[str] = set()
        episode_kills, episode_target = 0, min(kills_per_episode, kills - report["kills"])
        while episode_kills < episode_target:
            feeder = Feeder(out, videos, shard_videos)
            target = "writer" if rng.random() < 0.75 else "pipeline"
            if target == "writer":  # a moment while it writes: from its start to the end of a whole run's writing
                while feeder.writer_pid() is None and feeder.process.poll() is None:
                    time.sleep(0.002)
                delay = rng.uniform(0, writing)
            else:  # a moment from the pipeline's start-up (writer not up yet) to the end of a whole run
                delay = rng.uniform(0.05, duration)
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and feeder.process.poll() is None:
                time.sleep(0.002)
            writer = feeder.writer_pid()
            if feeder.process.poll() is not None:
                feeder.finish()
                report["rounds_finished_before_kill"] += 1
                cached = _check_after(report, problem, out, cached, set(), None, shard_videos)
                if len(cached) == videos:
                    break  # nothing left to kill it in: on to the rerun
                continue
            if target == "writer" and writer is None:
                target = "pipeline"  # the writer is not up yet: kill the pipeline during its start-up
            try:
                os.kill(writer if target == "writer" else feeder.process.pid, signal.SIGKILL)
            except ProcessLookupError:  # it ended just now
                feeder.finish()
                report["rounds_finished_before_kill"] += 1
                cached = _check_after(report, problem, out, cached, set(), None, shard_videos)
                continue
            report["kills"] += 1
            episode_kills += 1
            report[f"{target}_kills"] += 1
            code, _ = feeder.finish()
            if target == "writer" and code != -signal.SIGKILL:
                message = next((line for line in feeder.lines if line.startswith("error ")), "")
                if "the cache writer died" in message and "run the same command again to resume" in message:
                    report["dead_writer_errors"] += 1
                elif code == 0:
                    report["writer_kills_after_its_close"] += 1  # it had closed its last shard: nothing to lose
                elif code != 0:
                    problem("unreadable", f"the feeder ended with {code} after the writer's kill: {message!r}")
            # Every writer ends on its own (a killed pipeline's closes its shard first).
            end = time.monotonic() + 60
            while writer is not None and _alive(writer) and time.monotonic() < end:
                time.sleep(0.01)
            if writer is not None and _alive(writer):
                problem("unreadable", f"the writer {writer} was still alive 60 s after its pipeline was killed")
            if writer is None:
                time.sleep(0.5)  # a writer that was starting: let it see the closed pipe and exit
            bound = (shard_videos if target == "writer" else 0) + 2  # + the video being received, + the one in the pipe
            cached = _check_after(report, problem, out, cached, feeder.sent(), bound, shard_videos)
            if log:
                log(f"kill {report['kills']}: {target} after {delay:.2f} s, {len(cached)} video(s) cached")
        # The run to completion: exactly the missing videos, then the same cache as the uninterrupted run's.
        try:
            missing = videos - (len(read_cache(out)[0]) if out.exists() else 0)  # failed videos are tried again
        except Exception as error:  # noqa: BLE001 - counted after the kill already
            problem("unreadable", f"{out} before the rerun: {error}")
            episode += 1
            continue
        feeder = Feeder(out, videos, shard_videos)
        code, stderr = feeder.finish()
        if code != 0 or feeder.todo() != missing:
            problem("unreadable", f"the rerun exited {code} with todo {feeder.todo()} (missing {missing}): {stderr[-500:]}")
            episode += 1
            continue
        try:
            final = read_cache(out)
        except Exception as error:  # noqa: BLE001 - any failure to read is what this counts
            problem("unreadable", f"{out} after the rerun: {error}")
            episode += 1
            continue
        same = final[0].keys() == reference[0].keys() and final[1] == reference[1] and all(
            np.array_equal(final[0][path], reference[0][path]) for path in reference[0]
        )
        if same:
            report["reruns_identical"] += 1
        else:
            problem("wrong_features", f"{out}: the rerun's cache differs from the uninterrupted run's")
        episode += 1
    report["seconds"] = round(time.monotonic() - started, 1)
    report["reference_run_s"], report["reference_writing_s"] = round(duration, 2), round(writing, 2)
    return report


def _check_after(report, problem, out: Path, before: set[str], sent: set[int], bound: int | None, shard_videos: int) -> set[str]:
    """The checks after a round; returns the paths now cached (videos and failures)."""
    if not out.exists():
        return before  # killed before the cache was created
    try:
        features, failures, _ = read_cache(out)
    except Exception as error:  # noqa: BLE001 - any failure to open or read is what this counts
        problem("unreadable", f"{out}: {error}")
        return before
    for path, value in features.items():
        if not np.array_equal(value, expected_features(int(path[8:13]))):
            problem("wrong_features", f"{out}: {path}")
    now = set(features) | set(failures)
    if not before <= now:
        problem("lost_more_than_open_shard", f"{out}: {sorted(before - now)[:5]} were cached and are gone")
    lost = {video_path(index) for index in sent} - now
    report["max_lost"] = max(report["max_lost"], len(lost))
    if bound is not None and len(lost) > bound:
        problem("lost_more_than_open_shard", f"{out}: {len(lost)} sent videos not cached (shard of {shard_videos})")
    return now


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m framecache.bench.kill_writer", description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50, help="SIGKILLs in all (default %(default)s)")
    parser.add_argument("--videos", type=int, default=40, help="videos per cache (default %(default)s)")
    parser.add_argument("--shard-videos", type=int, default=3, help="videos per shard (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folder", help="where the caches go (default: a temporary folder, removed after)")
    parser.add_argument("--feed", help=argparse.SUPPRESS)  # internal: run as the feeder into this cache
    args = parser.parse_args(argv)
    if args.feed:
        return feed(args.feed, args.videos, args.shard_videos)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kill-writer-") as temporary:
        report = kill_rounds(args.folder or temporary, args.kills, args.videos, args.shard_videos, args.seed,
                             log=lambda line: print(line, file=sys.stderr, flush=True))  # fmt: skip
    print(json.dumps(report))
    bad = report["unreadable"] + report["wrong_features"] + report["lost_more_than_open_shard"]
    return 1 if bad or report["reruns_identical"] != report["episodes"] else 0


if __name__ == "__main__":
    sys.exit(main())
