"""The bench's arithmetic on made-up measurements: medians, spreads, ratios within rounds, the report; its pose section
(measured only where the team's copy of MediaPipe's models is, ../shared/weights/pose; skipped otherwise)."""

import json
import re
import sys
from pathlib import Path

import pytest

from framecache.bench import gpu, machine, pose, run, stats, workers
from framecache.bench.rounds import RATIOS, Plan, parse_precisions, profile
from framecache.bench.run import format_report
from framecache.common.errors import FramecacheError

POSE_MODELS = Path(__file__).resolve().parents[2] / "shared/weights/pose"


def test_summarise_gives_median_range_and_spread():
    summary = stats.summarise([100.0, 90.0, 120.0])
    assert (summary["median"], summary["min"], summary["max"]) == (100.0, 90.0, 120.0)
    assert summary["spread"] == pytest.approx(0.20)  # the largest distance from the median, as a fraction of it
    assert stats.summarise([4.0, 2.0])["median"] == 3.0  # even count: the mean of the middle two
    assert stats.summarise([5.0])["spread"] == 0.0
    assert stats.summarise([]) == {} and stats.summarise([float("nan"), None]) == {}


def test_ratios_are_taken_within_each_round():
    # The machine halves its speed in round 2: both figures drop, the ratio holds.
    rounds = [{"extract_fps": 150.0, "backbone_fps": 200.0}, {"extract_fps": 75.0, "backbone_fps": 100.0},
              {"extract_fps": 160.0, "backbone_fps": 200.0}]
    ratio = stats.ratios(rounds, {"extract_over_backbone": ("extract_fps", "backbone_fps")})["extract_over_backbone"]
    assert ratio["rounds"] == [0.75, 0.75, 0.8]
    assert ratio["median"] == 0.75 and ratio["spread"] == pytest.approx(0.05 / 0.75)
    # The ratio of the medians would mix rounds: 150 / 200 here, but it need not be any round's ratio.
    figures = stats.figures(rounds)
    assert figures["extract_fps"]["median"] == 150.0 and figures["backbone_fps"]["spread"] == pytest.approx(0.5)


def test_a_ratio_skips_rounds_that_lack_a_figure_and_is_dropped_when_none_has_it():
    rounds = [{"a": 2.0, "b": 1.0}, {"a": 3.0}, {"a": 1.0, "b": 0.0}]
    result = stats.ratios(rounds, {"a_over_b": ("a", "b"), "a_over_c": ("a", "c")})
    assert list(result) == ["a_over_b"] and result["a_over_b"]["rounds"] == [2.0]
    assert stats.figures([{"a": 1.0, "name": "x", "flag": True}, {"a": 3.0}]) == {"a": stats.summarise([1.0, 3.0])}


def test_format_summary():
    assert stats.format_summary(stats.summarise([151.2, 148.0, 160.4])) == "151 (148–160, ±6%)"
    assert stats.format_summary(stats.summarise([0.7623])) == "0.762 (0.762–0.762)"
    assert stats.format_summary({}) == "-"


def test_profile_per_embedded_frame():
    measured = {"decode_cpu_ms_pyav": 2.0, "augment_cpu_ms_per_frame": 0.4, "backbone_cpu_ms": 9.0, "extract_cpu_ms_per_frame": 11.0,
                "backbone_cpu_ms_bf16": 6.0, "extract_cpu_ms_per_frame_bf16": 8.0}
    result = profile(measured, ["f32", "bf16"])
    assert result["profile_decode_ms"] == pytest.approx(1.0)  # 2 ms per decode, shared by 2 views
    assert result["profile_augment_ms"] == pytest.approx(0.2)  # only view 1 of 2 is augmented
    assert result["profile_parts_ms"] == pytest.approx(10.2) and result["profile_whole_ms"] == 11.0
    assert result["profile_parts_ms_bf16"] == pytest.approx(7.2)
    ratio = stats.ratios([{**measured, **result}], RATIOS)["profile_whole_over_parts"]
    assert ratio["median"] == pytest.approx(11.0 / 10.2)


def test_options():
    assert parse_precisions("bf16") == ["f32", "bf16"] and parse_precisions("f32,f32") == ["f32"]
    with pytest.raises(FramecacheError, match="precisions='f32,int4': give a comma-separated list of f32, bf16; int4 is not one"):
        parse_precisions("f32,int4")
    quick = Plan.make(quick=True)
    assert quick.rounds == 2 and quick.long_minutes == () and quick.clips < Plan().clips
    assert Plan.make(rounds=5, long_minutes="1,2").rounds == 5 and Plan.make(long_minutes="1,2").long_minutes == (1.0, 2.0)
    with pytest.raises(FramecacheError, match="rounds must be >= 1, got 0"):
        Plan.make(rounds=0)
    with pytest.raises(FramecacheError, match="clips=2: the generated clips are 2 classes, and a class needs 2 videos; give 4"):
        Plan.make(clips=2)


def test_cpu_flags_from_cpuinfo():
    text = "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu avx2 avx512f amx_tile amx_bf16\n\nprocessor\t: 1\nmodel name\t: other\n"
    parsed = machine.parse_cpuinfo(text)
    assert parsed["cpu"] == "Intel Xeon"
    assert parsed["cpu_flags"]["amx_bf16"] and parsed["cpu_flags"]["avx512f"] and not parsed["cpu_flags"]["avx512_bf16"]


def test_report_shows_medians_spreads_and_the_precision_table():
    rounds = [
        {"backbone_fps": 200.0, "backbone_fps_bf16": 300.0, "extract_fps": 150.0, "extract_fps_bf16": 200.0, "baseline_fps": 50.0,
         "end_to_end_epoch_s": 100.0, "train_run_s": 10.0, "profile_whole_ms": 11.0, "profile_parts_ms": 10.0, "load_average": 1.0,
         "extract_idle_share": 0.01},
        {"backbone_fps": 100.0, "backbone_fps_bf16": 160.0, "extract_fps": 80.0, "extract_fps_bf16": 100.0, "baseline_fps": 25.0,
         "end_to_end_epoch_s": 200.0, "train_run_s": 20.0, "profile_whole_ms": 12.0, "profile_parts_ms": 10.0, "load_average": 3.5,
         "extract_idle_share": 0.03},
    ]
    results = {
        "plan": {"rounds": 2, "quick": True, "batch_size": 32, "clips": 4, "views": 2, "study_videos": 40, "engine": "openvino",
                 "precisions": ["f32", "bf16"], "skipped": {}},
        "figures": stats.figures(rounds), "ratios": stats.ratios(rounds, RATIOS),
        "once": {"cache_mb_per_video_minute": 7.3, "cosine_bf16_to_f32_min": 0.9991},
        "accuracy": {"videos": 48, "backbone": "efficientnet_lite0", "weights": "imagenet", "seed": 0,
                     "by_precision": {"f32": {"cosine_to_f32_min": 1.0, "test_accuracy": 0.875, "test_videos": 8},
                                      "bf16": {"cosine_to_f32_min": 0.999, "test_accuracy": 0.875, "test_videos": 8}}},
        "machine": {"cpu": "Test CPU", "cores": 2, "cpu_flags": {"avx512_bf16": True, "amx_bf16": False},
                    "openvino_capabilities": ["BF16", "FP32"], "python": "3.11"},
    }
    report = format_report(results)
    assert "extract_over_backbone           | 0.775 (0.750–0.800, ±3%)" in report
    assert "extract_over_backbone_bf16      | 0.646 (0.625–0.667, ±3%) | target >= 0.85" in report  # 200/300, 100/160
    assert "extract_idle_share        | 0.0200 (0.0100–0.0300, ±50%)" in report
    assert "backbone_fps              | 150 (100–200, ±33%)" in report
    assert "0.99910" in report and "0.875" in report  # cosine and demo accuracy of bf16
    assert "test split of 8 videos" in report
    assert "warning: the machine was busy (1-minute load average up to 3.5 on 2 cores" in report
    assert "Test CPU, 2 cores; flags: avx512_bf16 (not: amx_bf16); OpenVINO CPU capabilities: BF16, FP32" in report


def test_report_shows_the_pose_section_or_why_it_was_skipped():
    def figures(*values):
        return {"model_alone_fps": stats.summarise(values[:2]), "extract_fps": stats.summarise(values[2:4]),
                "extract_over_model": stats.summarise(values[4:])}

    measured = {"models": "/models", "runtimes": ["openvino"], "runtime_note": pose.RUNTIME_NOTE, "videos": 4, "frames": 148,
                "frame_size": 384, "rounds": 2, "csv": None, "not_measured": {"heavy": "neither ..."},
                "by_size": {"lite": {"backbone": "pose_lite", "runtimes": {"openvino": figures(200.0, 220.0, 90.0, 88.0, 0.45, 0.4)}},
                            "full": {"backbone": "pose", "runtimes": {"openvino": figures(120.0, 118.0, 70.0, 72.0, 0.58, 0.61)}}}}
    lines = run.format_pose(measured)
    assert "4 demo videos, 148 frames letterboxed to 384 px, 2 interleaved rounds; runtime openvino (" in lines[1] and "the one runtime" in lines[1]
    rows = {cells[0]: cells[1:] for cells in ([cell.strip() for cell in line.split(" | ")] for line in lines[2:])}
    assert rows["size"][2:] == ["tracker alone fps", "extract --views 1 fps", "extract / alone"]
    assert rows["lite"][:3] == ["pose_lite", "openvino", "210 (200–220, ±5%)"]
    assert rows["full"][3:] == ["71.0 (70.0–72.0, ±1%)", "0.595 (0.580–0.610, ±3%)"]
    assert rows["heavy"][:3] == ["pose_heavy", "-", "not found"]
    assert not any("busy" in line for line in lines)
    busy = run.format_pose({**measured, "load_average": stats.summarise([2.5, 4.2])}, cores=2)
    assert busy[-1].startswith("warning: the machine was busy during the pose rounds (1-minute load average up to 4.2 on 2 cores")
    assert run.format_pose({"skipped": "no pose models in /x"}) == ["", "pose backbone: skipped: no pose models in /x"]
    assert run.format_pose(None) == []  # results written before the bench had a pose section


class _NoCnnBench:
    """Stands in for the CNN rounds (minutes of work), so that only the pose section is run for real."""

    def __init__(self, plan, folder, csv, precisions, engine):
        self.rounds, self.precisions, self.skipped, self.engine = [{"backbone_fps": 100.0, "extract_fps": 90.0}], ["f32"], {}, "openvino"

    def run(self) -> None:
        """Nothing to measure here."""

    def once(self) -> dict:
        return {}


@pytest.mark.parametrize("given", [True, False])
def test_the_pose_section_says_skipped_where_no_models_are_found(tmp_path, monkeypatch, capsys, given):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("FRAMECACHE_CACHE", str(empty))  # the pose backbone's default folder: empty/pose, absent
    monkeypatch.setattr(run, "Bench", _NoCnnBench)
    monkeypatch.setattr(run.phases, "make_clips", lambda folder, clips, seconds: folder / "labels.csv")
    monkeypatch.setattr(run.machine, "cpu_description", lambda: {"cpu": "Test CPU", "cores": 2})
    out = tmp_path / "results.json"
    assert run.run_bench(out=str(out), quick=True, pose_models=str(empty) if given else None) == 0
    results = json.loads(out.read_text())
    folder = empty if given else empty / "pose"
    assert list(results["pose"]) == ["skipped"] and results["pose"]["skipped"].startswith(f"no pose models in {folder} (")
    assert "To measure the pose backbone, pass pose_models='FOLDER' holding" in results["pose"]["skipped"]  # the library's spelling
    assert {"figures", "ratios", "once", "plan", "machine"} <= set(results)  # the CNN's keys, as before
    printed = capsys.readouterr().out
    assert f"bench: pose models in {folder}: none, the pose section is skipped" in printed
    assert sum(line.startswith("pose backbone: skipped: no pose models in") for line in printed.splitlines()) == 1


def test_the_pose_models_are_found_per_size_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setenv("FRAMECACHE_CACHE", str(tmp_path))
    (tmp_path / "pose").mkdir()
    (tmp_path / "pose" / "pose_landmark_lite.tflite").write_bytes(b"not a model")  # no detector beside it
    folder, found, missing = pose.find_pose_models()
    assert folder == tmp_path / "pose" and found == {} and set(missing) == {"lite", "full", "heavy"}
    assert "lacks pose_detection.tflite" in missing["lite"]
    assert "lacks pose_detection.tflite" in pose.skipped_reason(folder, missing, given=False)
    with pytest.raises(FramecacheError, match="2 videos or more"):
        pose.measure_pose(tmp_path, videos=1)


def test_the_pose_section_measures_each_size_found_alone_and_through_stage_one(tmp_path):
    if not (POSE_MODELS / "pose_detection.tflite").is_file():
        pytest.skip(f"MediaPipe's BlazePose models are not in {POSE_MODELS}")
    folder, found, missing = pose.find_pose_models(POSE_MODELS)
    assert set(found) == {size for size in pose.SIZES if (POSE_MODELS / f"pose_landmark_{size}.tflite").is_file()}
    measured = pose.measure_pose(POSE_MODELS, videos=2, rounds=1, sizes=("lite",), log=lambda line: None)
    assert measured["videos"] == 2 and measured["frames"] > 0 and measured["runtimes"] == ["openvino"]
    figures = measured["by_size"]["lite"]["runtimes"]["openvino"]
    assert figures["model_alone_fps"]["median"] > 0 and figures["extract_fps"]["median"] > 0
    ratio = figures["extract_fps"]["median"] / figures["model_alone_fps"]["median"]
    assert figures["extract_over_model"]["median"] == pytest.approx(ratio)
    row = next(line for line in run.format_pose(measured) if line.startswith("lite "))
    assert [cell.strip() for cell in row.split(" | ")][:3] == ["lite", "pose_lite", "openvino"]


def test_make_bench_takes_pose_models_as_a_make_variable(monkeypatch):
    from framecache.cli import build_parser

    monkeypatch.setenv("FRAMECACHE_MAKE", "1")
    monkeypatch.setenv("POSE_MODELS", "/team/pose")
    assert build_parser().parse_args(["bench"]).pose_models == "/team/pose"
    monkeypatch.delenv("FRAMECACHE_MAKE")
    assert build_parser().parse_args(["bench"]).pose_models is None  # outside make, only the flag sets it


@pytest.mark.slow
def test_stage_one_parts_measures_each_pair_and_both_ways_give_the_same_output():
    from framecache.bench.stage_one_parts import WHAT, measure

    results = measure(clips=4, seconds=0.4, repeats=1)
    assert set(results) == set(WHAT)
    assert all(results[name]["same_output"] is True for name in ("scaler", "augmentation", "cast"))
    assert all(figures[way]["median"] > 0 for figures in results.values() for way in ("before", "after"))


def test_the_decoding_process_counts_to_compare():
    assert workers.worker_counts("auto", cores=16, gpu=True) == [1, 2, 4, 8, 16]
    assert workers.worker_counts("auto", cores=6, gpu=True) == [1, 2, 4]
    assert workers.worker_counts("auto", cores=16, gpu=False) == []  # on a CPU one decoder is the design
    assert workers.worker_counts("none", cores=16, gpu=True) == []
    assert workers.worker_counts("4, 1,2,2", cores=2, gpu=False) == [1, 2, 4]
    for bad in ("0,2", "two", ","):
        with pytest.raises(FramecacheError, match=re.escape(f"workers_sweep='{bad}' takes auto, none or a comma-separated list")):
            workers.worker_counts(bad, cores=2, gpu=False)


def test_the_sweep_interleaves_counts_and_finds_the_fewest_that_keep_the_backbone_busy(tmp_path, monkeypatch):
    calls = []

    def extract_fps(csv, out, precision, engine, workers):  # idle while fewer than 4 decoders feed it, bf16 sooner
        calls.append((precision, engine, workers))
        idle = max(0.0, 0.3 - 0.1 * workers) if precision == "f32" else 0.6 / workers
        return 100.0 * workers, {"embed_idle_share": idle, "gpu_peak_mb": 500.0 + workers}

    monkeypatch.setattr(workers.phases, "extract_fps", extract_fps)
    measured = workers.measure_workers(tmp_path / "labels.csv", tmp_path, ["f32", "bf16"], "tensorflow", [1, 2, 4],
                                       rounds=2, log=lambda line: None)
    assert calls == 2 * [(precision, "tensorflow", count) for count in (1, 2, 4) for precision in ("f32", "bf16")]
    assert measured["keeps_backbone_busy"] == {"f32": 4, "bf16": None}  # f32: idle 0.2, 0.1, 0; bf16: 0.6, 0.3, 0.15
    figures = measured["by_precision"]["f32"]["2"]
    assert figures["extract_fps"]["median"] == 200.0 and figures["gpu_peak_mb"]["median"] == 502.0
    lines = run.format_workers(measured)
    assert [cell.strip() for cell in lines[3].split("|")] == ["f32", "1", "100 (100–100, ±0%)", "0.200 (0.200–0.200, ±0%)",
                                                             "501 (501–501, ±0%)"]
    assert lines[-2:] == ["kept busy at f32 by: 4 decoding processes", "kept busy at bf16 by: none of 1, 2, 4 decoding processes"]
    assert run.format_workers(None) == []  # the sweep did not run


def test_gpu_memory_is_read_from_tensorflow_where_it_has_a_gpu(monkeypatch):
    class Experimental:
        def __init__(self):
            self.used = {"current": 300 * 2**20, "peak": 900 * 2**20}

        def reset_memory_stats(self, device):
            assert device == "GPU:0"
            self.used["peak"] = self.used["current"]

        def get_memory_info(self, device):
            return dict(self.used)

    experimental = Experimental()
    fake = type(sys)("tensorflow")
    fake.config = type(sys)("config")
    fake.config.experimental = experimental
    monkeypatch.setitem(sys.modules, "tensorflow", fake)
    monkeypatch.setattr(gpu, "tensorflow_sees_gpu", lambda: True)
    with gpu.PeakMemory() as memory:
        assert memory.before_mb == 300.0
        experimental.used["peak"] = 1200 * 2**20  # the run's activations
    assert memory.peak_mb == 1200.0
    monkeypatch.setattr(gpu, "tensorflow_gpu_details", lambda: {"device_name": "NVIDIA H100 80GB HBM3", "compute_capability": (9, 0)})
    assert gpu.describe() == {"gpu": "NVIDIA H100 80GB HBM3", "gpu_compute_capability": "9.0"}
    monkeypatch.setattr(gpu, "tensorflow_sees_gpu", lambda: False)
    monkeypatch.setattr(gpu, "tensorflow_gpu_details", lambda: {})
    with gpu.PeakMemory() as memory:
        assert memory.before_mb is None  # nothing is read where TensorFlow has no GPU
    assert memory.peak_mb is None and gpu.describe() == {}


def test_the_report_shows_decodings_share_and_the_gpu():
    rounds = [{"profile_decode_ms": 1.0, "profile_whole_ms": 10.0, "profile_whole_ms_bf16": 5.0, "backbone_fps": 1.0,
               "extract_fps": 1.0, "extract_gpu_peak_mb": 640.0}]
    results = {"plan": {"rounds": 1, "quick": True, "batch_size": 32, "clips": 16, "views": 2, "study_videos": 40,
                        "engine": "tensorflow", "precisions": ["f32", "bf16"], "skipped": {}},
               "figures": stats.figures(rounds), "ratios": stats.ratios(rounds, RATIOS), "once": {},
               "machine": {"cpu": "Test CPU", "cores": 16, "gpu": "NVIDIA H100 80GB HBM3", "gpu_compute_capability": "9.0"}}
    report = format_report(results).splitlines()
    assert "decoding / whole extraction, a share (f32)" in next(line for line in report if "(f32)" in line and "| 0.100" in line)
    assert any(line.startswith("decoding / whole extraction, a share (bf16)") and "| 0.200" in line for line in report)
    assert any(line.startswith("extract_gpu_peak_mb ") and "| 640 " in line for line in report)
    assert "GPU: NVIDIA H100 80GB HBM3, compute capability 9.0" in report


def test_make_bench_takes_the_engine_and_the_sweep_as_make_variables(monkeypatch):
    from framecache.cli import build_parser

    assert (build_parser().parse_args(["bench"]).engine, build_parser().parse_args(["bench"]).workers_sweep) == ("auto", "auto")
    monkeypatch.setenv("FRAMECACHE_MAKE", "1")
    monkeypatch.setenv("ENGINE", "tensorflow")
    monkeypatch.setenv("WORKERS_SWEEP", "1,2")
    args = build_parser().parse_args(["bench"])
    assert (args.engine, args.workers_sweep) == ("tensorflow", "1,2")


def test_a_bad_sweep_is_refused_in_the_flags_terms_before_anything_runs(tmp_path, capsys):
    from framecache.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--workers-sweep", "0", "--out", str(tmp_path / "results.json")])
    assert exit_info.value.code == 2
    assert "--workers-sweep 0 takes auto, none or a comma-separated list" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


@pytest.mark.slow
def test_the_gpu_check_runs_end_to_end_on_tensorflow_here(tmp_path, monkeypatch):
    """make bench-gpu's command, shortened, on the CPU: every section it writes on a GPU but the GPU's own fields."""
    monkeypatch.setenv("FRAMECACHE_CACHE", str(tmp_path / "cache"))  # no pose models: that section is skipped
    out = tmp_path / "results.json"
    assert run.run_bench(out=str(out), quick=True, rounds=1, clips=4, seconds=1.0, engine="tensorflow",
                         workers_sweep="1,2") == 0
    results = json.loads(out.read_text())
    assert results["plan"]["engine"] == "tensorflow" and "bf16" in results["plan"]["skipped"]  # bf16 needs the GPU
    assert results["ratios"]["extract_over_backbone"]["median"] > 0 and 0 < results["ratios"]["decode_share"]["median"] < 1
    sweep = results["decoding_processes"]
    assert sweep["counts"] == [1, 2] and set(sweep["by_precision"]["f32"]) == {"1", "2"}
    assert sweep["by_precision"]["f32"]["2"]["extract_fps"]["median"] > 0
    idle = {int(count): figures["idle_share"]["median"] for count, figures in sweep["by_precision"]["f32"].items()}
    busy = [count for count in sorted(idle) if idle[count] <= workers.BUSY_IDLE_SHARE]
    assert sweep["keeps_backbone_busy"]["f32"] == (busy[0] if busy else None)
    assert "gpu" not in results["machine"] and "extract_gpu_peak_mb" not in results["figures"]


def test_phone_clips_decode_at_their_size_and_length_and_cost_their_bitrate(tmp_path):
    """The phone-like clips the bench can run on: the asked size, 30 frames/s for the asked seconds, a CSV of 2 classes;
    a higher bitrate gives a larger file (the decoding cost they stand for)."""
    import av

    from framecache.bench import phone_clips

    csv = phone_clips.write_phone_clips(tmp_path / "low", clips=4, seconds=0.5, width=96, height=64, bitrate_mbit=0.2)
    assert csv.read_text().splitlines() == ["path,label,group", "phone00.mp4,class0,s0", "phone01.mp4,class1,s1",
                                            "phone02.mp4,class0,s2", "phone03.mp4,class1,s3"]
    with av.open(str(tmp_path / "low/phone01.mp4")) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 15 and frames[0].shape == (64, 96, 3)
    assert not (frames[0] == frames[1]).all()  # every frame changes, as a camera's noise does
    high = phone_clips.write_phone_clips(tmp_path / "high", clips=4, seconds=0.5, width=96, height=64, bitrate_mbit=2.0)
    assert (high.parent / "phone01.mp4").stat().st_size > 2 * (tmp_path / "low/phone01.mp4").stat().st_size
    with pytest.raises(SystemExit):
        phone_clips.main(["--out", str(tmp_path / "bad"), "--size", "1919x1080"])
