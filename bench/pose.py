"""The pose backbone's speed: the models alone per size and runtime, and stage one around them, in interleaved rounds.

    python -m framecache.bench.pose [--models FOLDER --csv labels.csv --videos 12 --rounds 3]

``framecache bench`` (``make bench [POSE_MODELS=FOLDER]``) runs :func:`measure_pose`
after its CNN rounds and puts the result under the key ``"pose"`` of its JSON;
run as a module, this prints the bench's table rows, then that object. Per round, per runtime (OpenVINO,
reading MediaPipe's ``.tflite`` files, is the one the pose backbone has) and per
model size found (lite, full, heavy): frames/s of the pose tracker alone
(detector where needed, landmark model every frame, on frames already decoded
and letterboxed to 384 px, as stage one hands them over), then frames/s of
``framecache extract --backbone pose --views 1`` over the same videos (decoding,
the pipe, the writer included), and their ratio within the round. The models
come from ``--models``, else from where ``--backbone pose`` looks by default
(``$FRAMECACHE_CACHE/pose``); nothing is downloaded: without models the result
is ``{"skipped": "<why>"}``. The videos: the CSV's, else the first of
``make demo``'s videos spread over its classes, generated here.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from framecache.bench import stats

SIZES = {"lite": "pose_lite", "full": "pose", "heavy": "pose_heavy"}  # landmark model size -> backbone name
RUNTIMES = ("openvino",)  # the pose models run on OpenVINO only, today
RUNTIME_NOTE = "OpenVINO (reading MediaPipe's .tflite files) is the one runtime the pose backbone has today"
VIDEOS, QUICK_VIDEOS = 12, 4  # videos measured by make bench, and with QUICK=1
FIGURES = ("model_alone_fps", "extract_fps", "extract_over_model")  # per size and runtime
ENABLE = ("pass {option} holding pose_detection.tflite and pose_landmark_<size>.tflite (or pose_landmarker_<size>.task), "
          "or put them into {folder}; `python -m framecache.extract.pose.fetch` puts the full model there")  # fmt: skip


def find_pose_models(models: str | Path | None = None) -> tuple[Path, dict[str, Path], dict[str, str]]:
    """The folder looked in (``models``, else the pose backbone's default), each size's models found there, why others are not."""
    from framecache.common.errors import FramecacheError
    from framecache.extract.pose.backbone import installed_pose_models, pose_models_dir
    from framecache.extract.pose.models import read_model_files

    folder = pose_models_dir() if models is None else Path(models).expanduser()
    found, missing = {}, {}
    for size in SIZES:
        path = installed_pose_models(size, folder)
        if path is None:
            missing[size] = f"neither pose_landmark_{size}.tflite nor pose_landmarker_{size}.task in {folder}"
            continue
        try:
            read_model_files(path, size)  # the detector is there too, a bundle holds both
        except FramecacheError as error:
            missing[size] = str(error)
            continue
        found[size] = path
    return folder, found, missing


def skipped_reason(folder: Path, missing: dict[str, str], given: bool) -> str:
    """Why the pose section measured nothing, and how to have it measured."""
    where = "the folder given" if given else "the pose backbone's default folder; nothing is downloaded"
    odd = [reason for reason in missing.values() if not reason.startswith("neither ")]  # there, but not whole
    from framecache.common.options import option_name
    from framecache.extract.pose.backbone import pose_models_dir

    return (f"no pose models in {folder} ({where}){': ' + '; '.join(odd) if odd else ''}. To measure the pose backbone, "
            + ENABLE.format(option=option_name("pose_models", "FOLDER"), folder=pose_models_dir()))


def runtimes_here() -> tuple[list[str], dict[str, str]]:
    """The runtimes of :data:`RUNTIMES` this machine has (OpenVINO, the one today), and why each other one is not here."""
    from framecache.extract.engines import import_openvino

    try:
        import_openvino()  # with its usage telemetry declined, as stage one imports it
    except ImportError as error:
        return [], {"openvino": f"cannot import openvino ({error})"}
    return ["openvino"], {}


def measure_pose(models: str | Path | None = None, csv: str | Path | None = None, videos: int = VIDEOS, rounds: int = 3,
                 sizes: tuple[str, ...] | None = None, log=print) -> dict:
    """Per round, runtime and model size: tracker alone and ``extract --backbone pose --views 1`` frames/s, and their ratio.

    ``sizes`` limits the sizes measured (default: every one found). Returns
    medians, min–max and spread over the rounds (:func:`framecache.bench.stats.summarise`),
    or ``{"skipped": why}`` where no models or no runtime are found.
    """
    from framecache.common.errors import FramecacheError

    if videos < 2 or rounds < 1:
        raise FramecacheError(f"the pose bench needs 2 videos or more and a round or more, got {videos} and {rounds}")
    folder, found, missing = find_pose_models(models)
    found = {size: path for size, path in found.items() if sizes is None or size in sizes}
    if not found:
        return {"skipped": skipped_reason(folder, missing, given=models is not None)}
    runtimes, absent = runtimes_here()
    if not runtimes:
        return {"skipped": f"no runtime for the pose models here: {'; '.join(absent.values())}"}

    import numpy as np
    import pandas as pd

    from framecache.common.config import ExtractConfig
    from framecache.extract.decode import iter_frames
    from framecache.extract.pipeline import run_extraction
    from framecache.extract.pose.backbone import POSE_FRAME_SIZE
    from framecache.extract.pose.models import read_model_files
    from framecache.extract.pose.tracker import PoseEstimator

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="framecache-bench-pose-") as work:
        paths = _video_paths(Path(csv) if csv else None, videos, Path(work))
        frames_of = [np.concatenate(list(iter_frames(str(path), size=POSE_FRAME_SIZE, fit="letterbox"))) for path in paths]
        frames = sum(len(video) for video in frames_of)
        labels = ["ab"[index % 2] if len(paths) >= 4 else "a" for index in range(len(paths))]  # 2 videos per class or more
        work_csv = Path(work) / "pose-labels.csv"
        pd.DataFrame({"path": [str(path) for path in paths], "label": labels}).to_csv(work_csv, index=False)
        estimators = {size: PoseEstimator(read_model_files(path, size)) for size, path in found.items()}
        measured: list[dict[str, float]] = []
        for number in range(rounds):
            this_round = {"load_average": os.getloadavg()[0]}
            for runtime in runtimes:  # one today: PoseEstimator and stage one's pose backbone run on OpenVINO
                for size, estimator in estimators.items():
                    key = f"{size}_{runtime}"
                    clock = time.perf_counter()
                    for video in frames_of:
                        estimator.track(video)
                    this_round[f"{key}_model_alone_fps"] = frames / (time.perf_counter() - clock)
                    config = ExtractConfig(csv=str(work_csv), out=f"{work}/{key}-{number}.h5", backbone=SIZES[size],
                                           weights=str(found[size]), views=1, quiet=True)  # fmt: skip
                    clock = time.perf_counter()
                    run_extraction(config)
                    this_round[f"{key}_extract_fps"] = frames / (time.perf_counter() - clock)
            measured.append(this_round)
            log(f"bench: pose round {number + 1}/{rounds}: " + ", ".join(
                f"{name} {value:.3g}" for name, value in this_round.items() if name != "load_average"))
    summaries = stats.figures(measured)
    by_size = {}
    for size, path in found.items():
        by_runtime = {}
        for runtime in runtimes:
            key = f"{size}_{runtime}"
            ratio = stats.ratios(measured, {"extract_over_model": (f"{key}_extract_fps", f"{key}_model_alone_fps")})
            by_runtime[runtime] = {"model_alone_fps": summaries.get(f"{key}_model_alone_fps", {}),
                                   "extract_fps": summaries.get(f"{key}_extract_fps", {}),
                                   "extract_over_model": ratio.get("extract_over_model", {})}  # fmt: skip
        by_size[size] = {"backbone": SIZES[size], "models": str(path), "runtimes": by_runtime}
    return {
        "models": str(folder), "runtimes": runtimes, "runtime_note": RUNTIME_NOTE, "runtimes_absent": absent,
        "videos": len(paths), "frames": frames, "frame_size": POSE_FRAME_SIZE, "views": 1, "rounds": rounds,
        "csv": str(csv) if csv else None, "by_size": by_size,
        "not_measured": {size: reason for size, reason in missing.items() if sizes is None or size in sizes},
        "load_average": summaries.get("load_average", {}), "per_round": measured, "seconds": time.perf_counter() - started,
    }  # fmt: skip


def _video_paths(csv: Path | None, count: int, work: Path) -> list[Path]:
    """``count`` videos spread over the CSV's rows; without a CSV, over ``make demo``'s (its defaults), written into ``work``."""
    if csv is not None:
        import pandas as pd

        table = pd.read_csv(csv)
        rows = table.iloc[:: max(1, len(table) // count)][:count]
        return [csv.resolve().parent / path for path in rows["path"]]
    from framecache.data.figure import render_frames
    from framecache.data.make_demo import PRESETS
    from framecache.data.synthetic import SyntheticSettings, dataset_specs, write_video

    specs = dataset_specs(SyntheticSettings(classes=tuple(PRESETS["both"])))  # make demo's 96 videos, by default
    paths = []
    for index, spec in enumerate(specs[:: max(1, len(specs) // count)][:count]):
        paths.append(work / f"pose-{index:02d}-{spec.label}.mp4")
        write_video(paths[-1], render_frames(spec), spec.fps)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help="folder of MediaPipe's pose models (default: where --backbone pose looks, "
                        "$FRAMECACHE_CACHE/pose; nothing is downloaded)")
    parser.add_argument("--csv", help="measure on these videos (default: make demo's, generated)")
    parser.add_argument("--videos", type=int, default=VIDEOS)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from framecache.bench.run import format_pose
    from framecache.extract.engines import available_cores

    result = measure_pose(args.models, args.csv, args.videos, args.rounds)
    print("\n".join(format_pose(result, available_cores())).lstrip("\n"))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
