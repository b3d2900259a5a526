"""Clips as costly to decode as phone footage: full HD (or any size) H.264 at a phone's bitrate, for ``make bench CSV=``.

    python -m framecache.bench.phone_clips --out phone [--size 1920x1080 --bitrate 16 --clips 4 --seconds 10]
    make bench QUICK=1 CSV=phone/labels.csv

The bench's own clips are 320x240: decoding one costs about a tenth of the
backbone. A phone records 1920x1080 at 30 frames/s and 12-17 Mbit/s, which
costs about as much CPU to decode as the backbone costs at bf16. These clips
reproduce that cost without real footage: a textured background that slides,
sensor-like noise in every frame, and a block that moves, encoded by libx264
at ``--bitrate`` Mbit/s without B-frames (as phones record H.264). Their
pixels mean nothing; only their decoding cost is like a phone's. Written one
frame at a time: memory stays flat whatever the length.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import numpy as np

FPS = 30


def camera_like_frames(width: int, height: int, count: int, seed: int) -> Iterator[np.ndarray]:
    """``count`` RGB frames ``(height, width, 3)``: a sliding texture, noise that changes every frame, a moving block."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    background = (np.sin(columns / (30.0 + 7 * seed)) + np.cos(rows / (20.0 + 5 * seed))) * 40 + 120
    texture = rng.normal(0, 25, (height, width)).astype(np.float32)
    block = slice(height // 4, 3 * height // 4)
    for index in range(count):
        gray = background + np.roll(texture, index * (2 + seed), axis=1) + rng.normal(0, 6, (height, width)).astype(np.float32)
        centre = int(width / 2 + width / 4 * np.sin(index / 10))
        gray[block, max(0, centre - width // 10) : centre + width // 10] = 60 + 30 * np.sin(index / 5)
        yield np.clip(np.stack([gray, gray * 0.9 + 10, gray * 0.8 + 20], axis=-1), 0, 255).astype(np.uint8)


def write_phone_clip(path: Path, width: int, height: int, seconds: float, bitrate_mbit: float, seed: int) -> None:
    """One clip of ``seconds`` at :data:`FPS` frames/s, H.264 at ``bitrate_mbit`` Mbit/s on average, no B-frames."""
    from framecache.data.synthetic import encode_frames

    frames = camera_like_frames(width, height, round(seconds * FPS), seed)
    encode_frames(path, frames, width, height, FPS, "libx264", bitrate=bitrate_mbit * 1e6)


def write_phone_clips(folder: Path, clips: int = 4, seconds: float = 10.0, width: int = 1920, height: int = 1080,
                      bitrate_mbit: float = 16.0) -> Path:  # fmt: skip
    """``clips`` clips and their ``labels.csv`` (2 classes in turn, a subject each) in ``folder``; the CSV's path."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["path,label,group"]
    for index in range(clips):
        name = f"phone{index:02d}.mp4"
        write_phone_clip(folder / name, width, height, seconds, bitrate_mbit, seed=index)
        rows.append(f"{name},class{index % 2},s{index}")
    csv = folder / "labels.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(value) for value in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size takes WIDTHxHEIGHT, e.g. 1920x1080, got {text!r}") from None
    if width < 2 or height < 2 or width % 2 or height % 2:
        raise argparse.ArgumentTypeError(f"--size {text}: H.264 needs an even width and height of 2 or more")
    return width, height


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for the clips and their labels.csv")
    parser.add_argument("--size", type=_size, default=(1920, 1080), help="WIDTHxHEIGHT (default 1920x1080)")
    parser.add_argument("--bitrate", type=float, default=16.0, help="Mbit/s (default %(default)s, a phone's full HD)")
    parser.add_argument("--clips", type=int, default=4, help="clips (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds each (default %(default)s)")
    args = parser.parse_args(argv)
    if args.clips < 4 or args.seconds <= 0 or args.bitrate <= 0:
        parser.error("give --clips 4 or more (the bench needs 2 videos per class), and a positive --seconds and --bitrate")
    print(write_phone_clips(Path(args.out), args.clips, args.seconds, *args.size, args.bitrate))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
