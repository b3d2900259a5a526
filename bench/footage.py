"""What stage one does with each kind of file real footage brings: frames kept, or the failure; and how close the
features of a turned or stretched copy are to those of the upright, square-pixel one.

    python -m framecache.bench.footage --out footage-kinds [--decoder pyav|decord]

Builds one file of each kind (:mod:`framecache.data.footage`) from a 150-frame
352x288 demo clip at 25 fps, extracts them with EfficientNet-Lite0 (ImageNet,
offline) and prints one line per file: frames kept (and the header's count),
or the recorded failure; for the rotated, anamorphic and frame-folder copies
the median frame cosine of their features to the reference copy's (the frame
folder holds the frames ``landscape.mp4`` decodes to, as JPEG).
docs/reliability.md has the table it made.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from framecache.bench.phases import cosine
from framecache.common.cache import FeatureCache
from framecache.common.config import ExtractConfig
from framecache.data import footage
from framecache.data.figure import render_frames
from framecache.data.synthetic import SyntheticSettings, sample_video_spec, write_video
from framecache.extract.pipeline import run_extraction

CLIP_FRAMES = 150


def build_kinds(folder: Path) -> dict[str, str | None]:
    """Write every kind into ``folder`` with a ``labels.csv``; each name -> the reference copy it should match."""
    clip = render_frames(replace(sample_video_spec("squat", 0, SyntheticSettings()), n_frames=CLIP_FRAMES))
    upright = np.ascontiguousarray(clip[:, :, 86:266])  # a portrait person, 180x288
    kinds = {
        "upright.mp4": (lambda path: write_video(path, upright, 25), None),
        "landscape.mp4": (lambda path: write_video(path, clip, 25), None),
        "avi-index-1-over.avi": (lambda path: footage.cut_avi_frames(clip, path, missing=1), None),
        "avi-index-6-over.avi": (lambda path: footage.cut_avi_frames(clip, path, missing=6), None),
        "mp4-count-one-high.mp4": (lambda path: footage.mp4_count_one_high(clip, path), None),
        "mp4-last-packet-corrupt.mp4": (lambda path: footage.corrupt_last_packet(clip, path), None),
        "avi-last-packet-corrupt.avi": (lambda path: footage.corrupt_last_packet(clip, path), None),
        "variable-frame-rate.mp4": (lambda path: footage.variable_frame_rate_mp4(clip, path), None),
        "avi-cut-in-half.avi": (lambda path: footage.cut_avi_frames(clip, path, missing=CLIP_FRAMES // 2), None),
        **{f"rotated-{degrees}.mp4": (lambda path, degrees=degrees: footage.rotated_mp4(upright, path, degrees), "upright.mp4")
           for degrees in (90, 180, 270)},  # fmt: skip
        "anamorphic-4-3.mp4": (lambda path: footage.anamorphic_video(clip, path, Fraction(4, 3)), "landscape.mp4"),
        # The frames landscape.mp4 decodes to, as JPEGs: the folder reader alone, without the codec's changes.
        "frames-jpeg": (lambda path: footage.frame_folder(_decoded(folder / "landscape.mp4"), path, ".jpg"), "landscape.mp4"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, (make, _) in kinds.items():
        make(folder / name)
    rows = [f"{name},{'ab'[index % 2]},{'25' if name.startswith('frames') else ''}" for index, name in enumerate(kinds)]
    (folder / "labels.csv").write_text("path,label,fps\n" + "\n".join(rows) + "\n")
    return {name: reference for name, (_, reference) in kinds.items()}


def _decoded(path: Path) -> np.ndarray:
    """Every frame of a video at full size, uint8 RGB."""
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def median_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Median over frames of the cosine between two ``(T, D)`` feature sequences (the shorter length)."""
    n = min(len(a), len(b))
    return float(np.median(cosine(a[:n], b[:n])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the files and their cache")
    parser.add_argument("--decoder", default="pyav", choices=("pyav", "decord"))
    args = parser.parse_args()
    references = build_kinds(args.out)
    cache = args.out / f"features-{args.decoder}.h5"
    run_extraction(ExtractConfig(csv=str(args.out / "labels.csv"), out=str(cache), backbone="efficientnet_lite0",
                                 weights="imagenet", views=1, decoder=args.decoder, quiet=True, overwrite=True))  # fmt: skip
    with FeatureCache(cache) as features:
        videos = {video.path: video for video in features.videos}
        clean = {path: features.features(video.key, view=0) for path, video in videos.items()}
        failures = {failure.path: failure.reason for failure in features.failures}
    for name, reference in references.items():
        if name in failures:
            print(f"{name:28s} failed: {failures[name].replace(str(args.out.resolve() / name), 'PATH')}")
            continue
        video = videos[name]
        line = f"{name:28s} {video.num_frames} frames kept (header {video.header_frames or 'none'})"
        if reference:
            line += f", frame cosine to {reference} {median_cosine(clean[name], clean[reference]):.3f}"
        print(line)


if __name__ == "__main__":
    main()
