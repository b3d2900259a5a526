"""The pose backbone's speed: the models alone per size, and stage one around them, in interleaved rounds.

    python -m framecache.bench.pose --models FOLDER [--csv data/demo/labels.csv --videos 12 --rounds 3]

Per round and model size found in ``FOLDER`` (lite, full, heavy): frames/s of
the pose tracker alone (detector where needed, landmark model every frame, on
frames already decoded and letterboxed to 384 px, as stage one hands them
over), then frames/s of ``framecache extract --backbone pose --views 1`` over
the same videos (decoding, the pipe, the writer included). Prints one JSON
object: medians and ranges over the rounds, and extract / model-alone.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from framecache.common.config import ExtractConfig
from framecache.common.errors import FramecacheError
from framecache.extract.decode import iter_frames
from framecache.extract.pipeline import run_extraction
from framecache.extract.pose.backbone import POSE_BACKBONES, POSE_FRAME_SIZE
from framecache.extract.pose.models import read_model_files
from framecache.extract.pose.tracker import PoseEstimator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", required=True, help="folder of MediaPipe's pose .tflite files")
    parser.add_argument("--csv", default="data/demo/labels.csv")
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    table = pd.read_csv(args.csv)
    rows = table.iloc[:: max(1, len(table) // args.videos)][: args.videos]
    folder = Path(args.csv).resolve().parent
    videos = [np.concatenate(list(iter_frames(str(folder / path), size=POSE_FRAME_SIZE, fit="letterbox"))) for path in rows["path"]]
    frames = sum(len(video) for video in videos)
    sizes = {}
    for name, size in POSE_BACKBONES.items():
        try:
            sizes[name] = PoseEstimator(read_model_files(args.models, size))
        except FramecacheError:
            continue  # that size's landmark model is not in the folder
    with tempfile.TemporaryDirectory() as work:
        csv = Path(work) / "labels.csv"
        labels = ["ab"[index % 2] for index in range(len(rows))]  # stage one wants two videos per class
        rows.assign(path=[str(folder / path) for path in rows["path"]], label=labels).to_csv(csv, index=False)
        model_fps: dict[str, list[float]] = {name: [] for name in sizes}
        extract_fps: dict[str, list[float]] = {name: [] for name in sizes}
        for round_ in range(args.rounds):
            for name, estimator in sizes.items():
                started = time.perf_counter()
                for video in videos:
                    estimator.track(video)
                model_fps[name].append(frames / (time.perf_counter() - started))
                config = ExtractConfig(csv=str(csv), out=f"{work}/{name}-{round_}.h5", backbone=name, weights=args.models,
                                       views=1, quiet=True)  # fmt: skip
                started = time.perf_counter()
                run_extraction(config)
                extract_fps[name].append(frames / (time.perf_counter() - started))
    report = {"videos": len(videos), "frames": frames, "rounds": args.rounds}
    for name in sizes:
        ratios = np.array(extract_fps[name]) / np.array(model_fps[name])
        report[name] = {
            "model_alone_fps": _summary(model_fps[name]),
            "extract_fps": _summary(extract_fps[name]),
            "extract_over_model": _summary(ratios),
        }
    print(json.dumps(report, indent=1))


def _summary(values) -> dict:
    values = np.asarray(values, dtype=float)
    return {"median": round(float(np.median(values)), 3), "min": round(float(values.min()), 3), "max": round(float(values.max()), 3)}


if __name__ == "__main__":
    main()
