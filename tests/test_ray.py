"""Stage one on Ray: blocks without Ray (fast), then on a real local cluster, started once for these tests (slow).

The Ray tests need the [ray] extra (``make test-slow`` installs it); without it they are skipped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import read_features, write_broken_videos
from doubles import KILL_MARKER, ParentKillingDecoder

from framecache.common.config import ExtractConfig
from framecache.common.errors import FramecacheError
from framecache.extract.blocks import BlockExtractor, cut_blocks
from framecache.extract.pipeline import plan_run, run_extraction

ROOT = Path(__file__).resolve().parents[1]
GOOD = [f"videos/v{index}.mp4" for index in range(8)]
BROKEN = ["videos/corrupt.mp4", "videos/empty.mp4", "videos/missing.mp4"]


@pytest.fixture
def videos(make_video, tmp_path):
    """Eight good videos (two subjects) and three broken files, as the issue's check: demo-like plus 3 broken."""
    for index, path in enumerate(GOOD):
        make_video(path, num_frames=10 + 3 * index, height=40, width=56, seed=index)
    write_broken_videos(tmp_path / "videos")
    rows = [f"{path},{'ab'[index % 2]},s{index % 2}" for index, path in enumerate(GOOD + BROKEN)]
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label,group\n" + "\n".join(rows) + "\n")
    return csv


def config_for(csv: Path, out: str, **overrides) -> ExtractConfig:
    values = dict(csv=str(csv), out=str(csv.parent / out), backbone="efficientnetb0", weights="none", views=2, augment="light",
                  batch_size=8, chunk_frames=8, quiet=True)
    values.update(overrides)
    return ExtractConfig(**values)


def assert_same_cache(path: str, reference: str) -> None:
    """Same provenance hash, the same videos and failures, features bit for bit, nothing twice."""
    features, summary = read_features(path)
    expected, expected_summary = read_features(reference)
    assert summary["provenance_hash"] == expected_summary["provenance_hash"]
    assert sorted(features) == sorted(expected) == sorted(GOOD)
    for video in expected:
        assert np.array_equal(features[video], expected[video]), video
    assert sorted(failure["path"] for failure in summary["failures"]) == sorted(BROKEN)
    assert summary["duplicates"] == 0


@pytest.fixture
def reference(videos):
    """The same videos extracted without Ray."""
    config = config_for(videos, "reference.h5")
    run_extraction(config)
    return config.out


# -- blocks, without Ray


def test_blocks_cover_the_videos_in_order_and_give_each_actor_two():
    import pandas as pd

    rows = pd.DataFrame({"path": [f"v{index}" for index in range(11)]})
    blocks = cut_blocks(rows, actors=2)
    assert [len(block.rows) for block in blocks] == [3, 3, 3, 2]
    assert [path for block in blocks for path in block.rows["path"]] == list(rows["path"])
    assert [len(block.rows) for block in cut_blocks(rows, actors=2, block_videos=5)] == [5, 5, 1]
    assert len(cut_blocks(pd.DataFrame({"path": [f"v{index}" for index in range(1000)]}), actors=2)[0].rows) == 64


def test_block_extractor_writes_the_cache_the_pipeline_writes(videos, reference):
    """The actor's code, run here: one backbone for every block, a shard per block, features bit for bit."""
    config = config_for(videos, "blocks.h5")
    plan = plan_run(config.validate())
    from framecache.common.cache import CacheWriter

    CacheWriter(config.out, plan.provenance).close()  # the Ray driver's part: the root
    extractor = BlockExtractor(config, plan, threads=1)
    try:
        results = [extractor(block) for block in cut_blocks(plan.dataset, actors=2)]
        again = extractor(cut_blocks(plan.dataset, actors=1, block_videos=len(plan.dataset))[0])  # a retried block: nothing twice
    finally:
        extractor.close()
    assert sum(result.ok for result in results) == len(GOOD) and sum(result.failed for result in results) == len(BROKEN)
    assert (again.ok, again.skipped) == (0, len(GOOD))
    assert len(list(Path(config.out + ".shards").glob("*.h5"))) >= len(results)
    assert_same_cache(config.out, reference)


def test_a_ray_address_that_is_not_one_is_refused_naming_the_flag():
    from framecache.cli import FlagSpelling
    from framecache.common.options import spelled

    with spelled(FlagSpelling()), pytest.raises(FramecacheError, match=r"--ray nowhere is not a Ray cluster.*local"):
        ExtractConfig(ray="nowhere").validate()


# -- on a local Ray cluster

@pytest.fixture(scope="module")
def cluster():
    """One local cluster of 2 CPUs for every Ray test of this module."""
    ray = pytest.importorskip("ray")
    # The actors import this folder's test doubles (tests/doubles.py) as the driver does.
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING",
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parent)}})
    yield
    ray.shutdown()


def actor_pids() -> list[int]:
    """The processes of framecache's Ray actors now extracting a block (Ray names them ``ray::<class>.<method>``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if title.startswith(b"ray::_ReportingExtractor.extract"):
                pids.append(int(entry.name))
    return pids


@pytest.mark.slow
def test_ray_makes_the_cache_the_pipeline_makes(cluster, videos, reference):
    config = config_for(videos, "ray.h5", ray="local", workers=2)
    summary = run_extraction(config)
    assert (summary.ok, summary.failed, summary.skipped) == (len(GOOD), len(BROKEN), 0)
    assert_same_cache(config.out, reference)
    again = run_extraction(config)  # resumed: nothing left but the broken files
    assert (again.ok, again.skipped) == (0, len(GOOD))
    assert_same_cache(config.out, reference)


@pytest.mark.slow
def test_a_killed_ray_worker_is_retried_and_nothing_is_written_twice(cluster, videos, reference):
    config = config_for(videos, "killed.h5", ray="local", workers=2, block_videos=2)
    killed = []

    def kill_one_actor() -> None:
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            pids = actor_pids()
            if pids:
                time.sleep(0.3)  # into its block
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_actor, daemon=True)
    killer.start()
    summary = run_extraction(config)
    killer.join()
    assert killed, "no actor was seen extracting"
    assert summary.ok + summary.skipped == len(GOOD) and summary.failed == len(BROKEN)
    assert_same_cache(config.out, reference)


@pytest.mark.slow
def test_a_block_that_keeps_failing_ends_the_run_keeping_every_other_shard(cluster, videos, reference):
    # Each attempt at the block that starts with v3 kills its actor (a test double decoder, before v3 is decoded).
    assert KILL_MARKER == "v3.mp4"
    config = config_for(videos, "failing.h5", ray="local", workers=2, block_videos=3)
    with pytest.raises(FramecacheError, match=r"1 block\(s\) of videos failed .* block 1 \(3 videos from videos/v3.mp4\)"):
        run_extraction(config, decoder_class=ParentKillingDecoder)
    features, _ = read_features(config.out)
    assert sorted(features) == sorted(set(GOOD) - {"videos/v3.mp4", "videos/v4.mp4", "videos/v5.mp4"})
    summary = run_extraction(config)  # the same command resumes
    assert (summary.ok, summary.skipped) == (3, len(GOOD) - 3)
    assert_same_cache(config.out, reference)


@pytest.mark.slow
def test_a_failure_of_the_cluster_itself_is_one_error_keeping_the_shards(cluster, videos, reference):
    """A stand-in for a node or one of Ray's own processes dying: the run's progress actor is killed mid-run."""
    import ray

    config = config_for(videos, "cluster-failed.h5", ray="local", workers=2, block_videos=1)
    killed = []

    def kill_the_tally() -> None:
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            names = [name for name in ray.util.list_named_actors() if name.startswith("framecache-tally-")]
            if names and actor_pids():
                time.sleep(0.5)  # into the run
                ray.kill(ray.get_actor(names[0]))
                killed.append(names[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_tally, daemon=True)
    killer.start()
    with pytest.raises(FramecacheError, match=r"the Ray cluster failed during the run \(.*\)\. Every shard closed so far is kept"):
        run_extraction(config)
    killer.join()
    assert killed, "the run's progress actor was never seen"
    summary = run_extraction(config)  # the same command resumes and completes the cache
    assert summary.ok + summary.skipped == len(GOOD)
    assert_same_cache(config.out, reference)


@pytest.mark.slow
def test_a_killed_driver_resumes_with_the_same_command(videos, reference, tmp_path):
    """``framecache extract --ray local`` killed with SIGKILL once a block is kept; the same command finishes the cache."""
    pytest.importorskip("ray")
    out = tmp_path / "driver.h5"
    command = [sys.executable, "-m", "framecache", "extract", "--csv", str(videos), "--out", str(out), "--backbone", "efficientnetb0",
               "--weights", "none", "--views", "2", "--augment", "light", "--batch-size", "8", "--chunk-frames", "8", "--quiet",
               "--ray", "local", "--workers", "2", "--block-videos", "1"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    shards = out.parent / (out.name + ".shards")
    deadline = time.monotonic() + 180
    while process.poll() is None and time.monotonic() < deadline and not list(shards.glob("*.h5")):
        time.sleep(0.1)
    process.kill()
    process.wait()
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert "Traceback" not in finished.stderr
    assert_same_cache(str(out), reference)
