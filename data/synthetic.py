"""The synthetic exercise dataset: its classes, subjects and per-video specs, and a video writer.

This module decides what each video shows (a :class:`VideoSpec`) and writes frames
to files (:func:`write_video`); :mod:`framecache.data.figure` draws the frames.

Every video shows one articulated figure (head, torso, arms, legs drawn with
OpenCV; joints placed by forward kinematics from joint angles) doing one
exercise. Two kinds of class, so that a model is tried where motion decides and
where appearance does:

- *motion* classes (``MOTION_CLASSES``: squat, jumping jack, ...) differ only in
  how the figure moves over time. Each motion is a periodic function of a phase
  whose cycle starts with a rest part, the neutral standing pose that every
  class shares; every video starts at a random point of that rest part, so
  frame 0 alone does not tell the class;
- *equipment* classes (``EQUIPMENT_CLASSES``: ball, box, mat, barbell) differ
  only in the equipment standing in the scene (its colour and side drawn per
  video), while the figure does one of the four motion exercises drawn per
  video whatever the class: any single frame tells the class, the motion does
  not.

In both:

- appearance (build, size, skin, hair, clothes) belongs to a subject, the CSV
  ``group``, and is drawn independently of the class;
- per video, independently of the class: cycle period (speed), start phase,
  rest length, amplitude, length, resolution, fps, distance to the camera,
  position, background, camera jitter, brightness flicker and pixel noise.

``PRESETS`` names the class sets: ``motion`` (four motion classes),
``appearance`` (the four equipment classes) and ``both`` (all eight: the demo).

Everything is a pure function of the seed: ``np.random.default_rng`` keyed by
(seed, purpose, ...), never global random state.
"""

from __future__ import annotations

import colorsys
import functools
import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from framecache.common.errors import FramecacheError

MOTION_CLASSES = ("squat", "jumping_jack", "arm_raise", "side_bend", "high_knees")
EQUIPMENT_CLASSES = ("ball", "box", "mat", "barbell")
CLASSES = MOTION_CLASSES + EQUIPMENT_CLASSES
DEFAULT_CLASSES = MOTION_CLASSES[:4]
# Class sets by what decides the class: the motion, a static cue (the equipment), or either.
PRESETS = {"motion": DEFAULT_CLASSES, "appearance": EQUIPMENT_CLASSES, "both": DEFAULT_CLASSES + EQUIPMENT_CLASSES}
# (width, height). Odd sizes lose a row/column when written as H.264 (393x295 -> 392x294).
DEFAULT_SIZES = ((320, 240), (426, 240), (480, 360), (352, 288), (393, 295))
DEFAULT_FPS = (10.0, 15.0, 20.0)
GENERATOR_VERSION = 1  # bump when the rendering changes, so old demo data is regenerated

_CODEC_BY_SUFFIX = {".mp4": "libx264", ".mkv": "libx264", ".mov": "libx264", ".avi": "mpeg4"}
_H264 = ("libx264", "h264")
_SKIN = ((255, 224, 189), (234, 192, 134), (224, 172, 105), (198, 134, 66), (141, 85, 36), (110, 70, 45))


# ---------------------------------------------------------------------------
# Writing videos


def write_video(path: str | Path, frames: np.ndarray, fps: float, codec: str | None = None) -> None:
    """Write RGB uint8 frames ``(T, H, W, 3)`` to ``path`` with PyAV.

    The codec follows the suffix unless given: ``.mp4``/``.mkv``/``.mov`` ->
    H.264 (libx264, yuv420p, crf 18), ``.avi`` -> MPEG-4 part 2 (``codec="mjpeg"``
    works too). libx264 refuses yuv420p with an odd width or height, so for
    H.264 an odd dimension loses its last row or column: a 33x47 clip decodes
    as 32x46. (Cropping, not padding: decord 0.6 cannot read videos 8, 12, 16,
    24, 48 or 72 pixels wide, and padding would turn 47 into 48.) MPEG-4 and
    MJPEG keep odd sizes.
    """
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be a non-empty uint8 array (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    codec = codec or _CODEC_BY_SUFFIX.get(path.suffix.lower())
    if codec is None:
        raise ValueError(f"no default codec for {path.suffix!r}: use {sorted(_CODEC_BY_SUFFIX)} or pass codec=")
    if codec in _H264:
        frames = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]
        if min(frames.shape[1:3]) == 0:
            raise ValueError("H.264 needs frames at least 2x2 pixels")
    height, width = frames.shape[1:3]
    path.parent.mkdir(parents=True, exist_ok=True)
    encode_frames(path, frames, width, height, fps, codec)


def encode_frames(path: Path, frames: Iterable[np.ndarray], width: int, height: int, fps: float, codec: str,
                  bitrate: float | None = None) -> None:  # fmt: skip
    """Encode RGB uint8 frames ``(height, width, 3)``, taken one at a time (memory stays flat), to ``path``; the
    arguments are :func:`write_video`'s, checked. H.264 is crf 18 unless ``bitrate`` (bits/s) is given: then that
    average, without B-frames, as phones record it."""
    options = _x264_options() if codec in _H264 else {}
    if codec in _H264 and bitrate is not None:
        options = {**{name: value for name, value in options.items() if name != "crf"}, "bf": "0"}
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001), options=dict(options))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if bitrate is not None:
            stream.bit_rate = int(bitrate)
        elif codec not in _H264:
            stream.bit_rate = int(width * height * fps * 1.5)  # about 1.5 bits per pixel: clean enough
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@functools.cache
def _x264_options() -> dict[str, str]:
    """libx264 settings. On CPUs with AVX-512 its assembly is capped at AVX2: with the
    AVX-512 code paths, libx264 reads uninitialised memory and the same frames encode
    to different bytes (and slightly different pixels) from run to run."""
    options = {"crf": "18", "preset": "veryfast"}
    try:
        has_avx512 = "avx512" in Path("/proc/cpuinfo").read_text()
    except OSError:
        has_avx512 = False
    if has_avx512:
        options["x264-params"] = "asm=avx2"
    return options


# ---------------------------------------------------------------------------
# Subjects, video specs and settings


@dataclass(frozen=True)
class Subject:
    """One person's build and clothes: the same in all their videos, whatever the class.

    Lengths are fractions of the standing height (ankle to top of head).
    """

    group: int
    height: float  # standing height as a fraction of the frame height
    head_radius: float
    neck: float
    torso: float
    shoulder_width: float
    hip_width: float
    upper_arm: float
    forearm: float
    thigh: float
    shin: float
    limb_width: float
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    shirt: tuple[int, int, int]
    trousers: tuple[int, int, int]
    shoes: tuple[int, int, int]
    long_sleeves: bool
    rest_arm: float  # radians: how far the hanging arms are held away from the body
    rest_elbow: float  # radians: relaxed elbow bend
    stance: float  # radians: legs apart when standing


def _colour(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    red, green, blue = colorsys.hsv_to_rgb(hue % 1.0, saturation, value)
    return round(red * 255), round(green * 255), round(blue * 255)


def make_subject(seed: int, group: int) -> Subject:
    """The subject ``group`` of the dataset made with ``seed`` (never depends on a class)."""
    rng = np.random.default_rng([seed, 1, group])

    def vary(value: float) -> float:
        return value * rng.uniform(0.9, 1.1)

    head_radius, neck, torso, thigh, shin = vary(0.065), vary(0.035), vary(0.31), vary(0.24), vary(0.25)
    standing = 2 * head_radius + neck + torso + thigh + shin
    skin = np.clip(np.array(_SKIN[rng.integers(len(_SKIN))]) + rng.integers(-12, 13, 3), 0, 255)
    return Subject(
        group=group,
        height=rng.uniform(0.55, 0.68),
        head_radius=head_radius / standing,
        neck=neck / standing,
        torso=torso / standing,
        shoulder_width=vary(0.23) / standing,
        hip_width=vary(0.13) / standing,
        upper_arm=vary(0.17) / standing,
        forearm=vary(0.17) / standing,
        thigh=thigh / standing,
        shin=shin / standing,
        limb_width=rng.uniform(0.045, 0.06),
        skin=(int(skin[0]), int(skin[1]), int(skin[2])),
        hair=_colour(rng.uniform(0.02, 0.12), rng.uniform(0.3, 0.8), rng.uniform(0.08, 0.5)),
        shirt=_colour(rng.uniform(), rng.uniform(0.35, 0.9), rng.uniform(0.45, 0.95)),
        trousers=_colour(rng.uniform(), rng.uniform(0.1, 0.7), rng.uniform(0.15, 0.6)),
        shoes=_colour(rng.uniform(), rng.uniform(0.0, 0.4), rng.uniform(0.1, 0.9)),
        long_sleeves=bool(rng.integers(2)),
        rest_arm=math.radians(rng.uniform(5, 14)),
        rest_elbow=math.radians(rng.uniform(5, 20)),
        stance=math.radians(rng.uniform(2, 7)),
    )


@dataclass(frozen=True)
class VideoSpec:
    """Everything that decides one video's frames."""

    label: str
    index: int
    seed: int
    subject: Subject
    width: int
    height: int
    fps: float
    n_frames: int
    period_s: float  # one motion cycle: the rest part, then the movement
    rest_fraction: float  # part of the cycle spent in the shared neutral pose
    start_phase: float  # inside the rest part, so frame 0 shows the neutral pose
    amplitude: float  # how far the movement goes (squat depth, arm height)
    distance: float  # camera distance factor on the subject's apparent size
    center_x: float  # figure position, fraction of the width
    ground_y: float  # feet line, fraction of the height
    jitter_px: float  # camera shake, pixels
    noise_sigma: float  # pixel noise std on the 0-255 scale
    flicker: float  # std of the per-frame brightness gain
    idle_hz: float  # slow sway present in every class
    idle_phase: float
    exercise: str | None = None  # what the figure does, for an equipment class (drawn per video); else the label

    @property
    def motion(self) -> str:
        return self.exercise or self.label

    @property
    def seconds(self) -> float:
        return self.n_frames / self.fps


@dataclass(frozen=True)
class SyntheticSettings:
    """What a generated dataset contains; the demo stores these to decide whether to regenerate."""

    classes: tuple[str, ...] = DEFAULT_CLASSES
    per_class: int = 12
    subjects: int = 6
    seed: int = 0
    min_seconds: float = 2.0
    max_seconds: float = 3.0
    fps_choices: tuple[float, ...] = DEFAULT_FPS
    sizes: tuple[tuple[int, int], ...] = DEFAULT_SIZES

    def validate(self) -> None:
        """Raise FramecacheError naming the offending value."""
        unknown = [name for name in self.classes if name not in CLASSES]
        if unknown or not self.classes or len(set(self.classes)) != len(self.classes):
            raise FramecacheError(f"classes must be distinct names from {list(CLASSES)}, got {list(self.classes)}")
        if self.subjects < 1 or self.per_class < self.subjects:
            raise FramecacheError(
                f"every subject must appear in every class: need per_class ({self.per_class}) "
                f">= subjects ({self.subjects}) >= 1"
            )
        if not 0 < self.min_seconds <= self.max_seconds:
            raise FramecacheError(f"need 0 < min_seconds <= max_seconds, got {self.min_seconds}, {self.max_seconds}")
        if not self.fps_choices or min(self.fps_choices) <= 0:
            raise FramecacheError(f"fps choices must be positive, got {list(self.fps_choices)}")
        if not self.sizes or min(min(size) for size in self.sizes) < 16:
            raise FramecacheError(f"sizes must be (width, height) pairs of at least 16 pixels, got {self.sizes}")


def _label_key(label: str) -> int:
    return zlib.crc32(label.encode())


def sample_video_spec(label: str, index: int, settings: SyntheticSettings) -> VideoSpec:
    """The spec of video ``index`` of class ``label``; its subject is ``index % settings.subjects``."""
    if label not in CLASSES:
        raise FramecacheError(f"unknown class {label!r}; known: {list(CLASSES)}")
    rng = np.random.default_rng([settings.seed, 2, _label_key(label), index])
    width, height = settings.sizes[rng.integers(len(settings.sizes))]
    fps = float(settings.fps_choices[rng.integers(len(settings.fps_choices))])
    seconds = rng.uniform(settings.min_seconds, settings.max_seconds)
    period_s = min(rng.uniform(0.9, 1.7), seconds)  # at least one whole repetition fits
    rest_fraction = rng.uniform(0.15, 0.35)
    return VideoSpec(
        label=label,
        index=index,
        seed=settings.seed,
        subject=make_subject(settings.seed, index % settings.subjects),
        width=int(width),
        height=int(height),
        fps=fps,
        n_frames=max(2, round(seconds * fps)),
        period_s=period_s,
        rest_fraction=rest_fraction,
        start_phase=rng.uniform(0.0, rest_fraction),
        amplitude=rng.uniform(0.75, 1.05),
        distance=rng.uniform(0.88, 1.05),
        center_x=0.5 + rng.uniform(-0.1, 0.1),
        ground_y=rng.uniform(0.88, 0.95),
        jitter_px=rng.uniform(0.0, 1.5),
        noise_sigma=rng.uniform(0.0, 4.0),
        flicker=rng.uniform(0.0, 0.015),
        idle_hz=rng.uniform(0.2, 0.6),
        idle_phase=rng.uniform(0.0, 2 * math.pi),
        # drawn last: the motion classes' draws above stay as they were before equipment classes existed
        exercise=str(DEFAULT_CLASSES[rng.integers(len(DEFAULT_CLASSES))]) if label in EQUIPMENT_CLASSES else None,
    )


def dataset_specs(settings: SyntheticSettings) -> list[VideoSpec]:
    """All videos of a dataset, class by class; every subject appears in every class."""
    settings.validate()
    return [
        sample_video_spec(label, index, settings) for label in settings.classes for index in range(settings.per_class)
    ]
