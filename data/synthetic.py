"""Synthetic exercise videos, and a small helper that writes real video files.

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
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
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
_SUBPIXEL_BITS = 4  # OpenCV drawing with shift=4: coordinates in 1/16 pixel
_SUBPIXEL = 1 << _SUBPIXEL_BITS
_NOISE_SLACK = 16  # noise fields are this much larger than a frame, for random crops


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
    options = _x264_options() if codec in _H264 else {}
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001), options=dict(options))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if codec not in _H264:
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


# ---------------------------------------------------------------------------
# Motion: pose as a function of time


def _pair(value: float = 0.0) -> np.ndarray:
    return np.full(2, value)


@dataclass
class Pose:
    """Joint angles in radians. Per-side arrays: index 0 is the side on the viewer's left."""

    tilt: float = 0.0  # torso lean, positive towards the viewer's right
    torso_scale: float = 1.0  # projected torso length (< 1 when leaning towards the camera)
    jump: float = 0.0  # feet above the ground, fraction of standing height
    arm_abd: np.ndarray = field(default_factory=_pair)  # upper arm from hanging down, outwards
    arm_scale: np.ndarray = field(default_factory=lambda: _pair(1.0))  # < 1: arm points at the camera
    elbow: np.ndarray = field(default_factory=_pair)  # elbow bend (forearm towards the camera)
    hip_abd: np.ndarray = field(default_factory=_pair)  # leg from vertical, outwards
    hip_flex: np.ndarray = field(default_factory=_pair)  # thigh raised towards the camera
    knee_out: np.ndarray = field(default_factory=_pair)  # extra outward thigh angle (knees out)


def motion_profile(phase: float, rest_fraction: float) -> tuple[float, float]:
    """(bump, alternating) at ``phase`` in [0, 1): both 0 during the rest part.

    ``bump`` rises smoothly from 0 to 1 and back once per cycle; ``alternating``
    goes to +1 and back, then to -1 and back (left side, then right side).
    """
    if phase < rest_fraction:
        return 0.0, 0.0
    progress = (phase - rest_fraction) / (1.0 - rest_fraction)
    bump = (1.0 - math.cos(2 * math.pi * progress)) / 2
    alternating = (1.0 - math.cos(4 * math.pi * progress)) / 2 * (1.0 if progress < 0.5 else -1.0)
    return bump, alternating


def pose_at(spec: VideoSpec, t: float) -> Pose:
    """The pose of the figure at time ``t`` seconds."""
    subject, amplitude = spec.subject, spec.amplitude
    phase = (spec.start_phase + t / spec.period_s) % 1.0
    bump, alternating = motion_profile(phase, spec.rest_fraction)
    rest_arm = subject.rest_arm
    idle = math.sin(2 * math.pi * spec.idle_hz * t + spec.idle_phase)
    pose = Pose(
        tilt=math.radians(1.5) * idle,
        arm_abd=_pair(rest_arm) + math.radians(3) * idle,
        elbow=_pair(subject.rest_elbow),
        hip_abd=_pair(subject.stance),
    )
    right, left = max(alternating, 0.0), max(-alternating, 0.0)
    motion = spec.motion
    if motion == "squat":
        pose.hip_flex[:] = math.radians(85) * amplitude * bump
        pose.knee_out[:] = math.radians(30) * bump
        pose.arm_scale[:] = math.cos(math.radians(80) * bump)  # arms stretched forward
        pose.arm_abd += math.radians(8) * bump
        pose.torso_scale = math.cos(math.radians(20) * bump)
    elif motion == "jumping_jack":
        pose.arm_abd += (math.radians(165) - rest_arm) * amplitude * bump
        pose.elbow *= 1.0 - bump
        pose.hip_abd += math.radians(20) * amplitude * bump
        pose.jump = 0.2 * bump * (1.0 - bump)  # airborne between the two stances
    elif motion == "arm_raise":
        pose.arm_abd += (math.radians(170) - rest_arm) * amplitude * bump
        pose.elbow *= 1.0 - bump
    elif motion == "side_bend":
        pose.tilt += math.radians(32) * amplitude * alternating
        pose.arm_abd += math.radians(150) * amplitude * np.array([right, left])  # the far arm goes overhead
    elif motion == "high_knees":
        pose.hip_flex[:] = math.radians(85) * amplitude * np.array([right, left])
        pose.elbow += math.radians(70) * abs(alternating)
        pose.arm_scale[:] = np.cos(math.radians(50) * np.array([left, right]))  # the opposite arm swings forward
    else:
        raise FramecacheError(f"unknown exercise {motion!r}; known: {list(MOTION_CLASSES)}")
    return pose


def _rotate(vector: np.ndarray, angle: float) -> np.ndarray:
    cos, sin = math.cos(angle), math.sin(angle)
    return np.array([cos * vector[0] - sin * vector[1], sin * vector[0] + cos * vector[1]])


def joint_positions(subject: Subject, pose: Pose) -> dict[str, np.ndarray]:
    """Forward kinematics: joint positions in units of standing height.

    Image axes (x right, y down); x = 0 at the pelvis and y = 0 on the ground:
    the figure is shifted so that its lowest foot touches the ground (or hovers
    ``pose.jump`` above it).
    """
    up = np.array([math.sin(pose.tilt), -math.cos(pose.tilt)])
    across = np.array([math.cos(pose.tilt), math.sin(pose.tilt)])
    joints = {"pelvis": np.zeros(2)}
    joints["neck"] = joints["pelvis"] + subject.torso * pose.torso_scale * up
    joints["head"] = joints["neck"] + (subject.neck + subject.head_radius) * up
    for side, sign in ((0, -1.0), (1, 1.0)):
        shoulder = joints["neck"] + sign * subject.shoulder_width / 2 * across - 0.02 * up
        arm_angle = pose.arm_abd[side]
        upper_dir = _rotate(np.array([sign * math.sin(arm_angle), math.cos(arm_angle)]), pose.tilt)
        elbow = shoulder + subject.upper_arm * pose.arm_scale[side] * upper_dir
        fore_angle = arm_angle - 0.3 * pose.elbow[side]  # a bent forearm points slightly inwards
        fore_dir = _rotate(np.array([sign * math.sin(fore_angle), math.cos(fore_angle)]), pose.tilt)
        hand = elbow + subject.forearm * pose.arm_scale[side] * math.cos(pose.elbow[side]) * fore_dir
        hip = np.array([sign * subject.hip_width / 2, 0.0])
        leg_angle = pose.hip_abd[side]
        thigh_angle = leg_angle + pose.knee_out[side]
        thigh_dir = np.array([sign * math.sin(thigh_angle), math.cos(thigh_angle)])
        knee = hip + subject.thigh * math.cos(pose.hip_flex[side]) * thigh_dir
        # The foot stays where the straight leg would put it: knees out in a squat, feet planted.
        ankle_x = hip[0] + sign * (subject.thigh + subject.shin) * math.sin(leg_angle)
        shin_dx = float(np.clip(ankle_x - knee[0], -0.95 * subject.shin, 0.95 * subject.shin))
        ankle = np.array([knee[0] + shin_dx, knee[1] + math.sqrt(subject.shin**2 - shin_dx**2)])
        foot = ankle + np.array([sign * 0.03, 0.015])
        names = ("shoulder", "elbow", "hand", "hip", "knee", "ankle", "foot")
        for name, point in zip(names, (shoulder, elbow, hand, hip, knee, ankle, foot)):
            joints[f"{name}{side}"] = point
    lift = -(max(joints["foot0"][1], joints["foot1"][1]) + 0.015) - pose.jump
    return {name: point + np.array([0.0, lift]) for name, point in joints.items()}


# ---------------------------------------------------------------------------
# Drawing


def _point(xy: np.ndarray) -> tuple[int, int]:
    return round(float(xy[0]) * _SUBPIXEL), round(float(xy[1]) * _SUBPIXEL)


def _line(canvas: np.ndarray, start: np.ndarray, end: np.ndarray, colour: tuple[int, int, int], width: int) -> None:
    cv2.line(canvas, _point(start), _point(end), colour, width, cv2.LINE_AA, _SUBPIXEL_BITS)


def draw_figure(canvas: np.ndarray, joints_px: dict[str, np.ndarray], subject: Subject, scale_px: float) -> None:
    """Draw the figure in place on an RGB canvas; ``scale_px`` is the standing height in pixels."""
    width = max(2, round(subject.limb_width * scale_px))
    foot_axes = _point(np.array([0.035, 0.015]) * scale_px)
    for side in (0, 1):
        _line(canvas, joints_px[f"hip{side}"], joints_px[f"knee{side}"], subject.trousers, width + 1)
        _line(canvas, joints_px[f"knee{side}"], joints_px[f"ankle{side}"], subject.trousers, width)
        cv2.ellipse(
            canvas,
            _point(joints_px[f"foot{side}"]),
            foot_axes,
            0,
            0,
            360,
            subject.shoes,
            -1,
            cv2.LINE_AA,
            _SUBPIXEL_BITS,
        )
    torso = [joints_px["shoulder0"], joints_px["shoulder1"], joints_px["hip1"], joints_px["hip0"]]
    cv2.fillPoly(canvas, [np.array([_point(p) for p in torso], np.int32)], subject.shirt, cv2.LINE_AA, _SUBPIXEL_BITS)
    _line(canvas, joints_px["neck"], joints_px["pelvis"], subject.shirt, 2 * width)
    _line(canvas, joints_px["neck"], joints_px["head"], subject.skin, width)
    forearm_colour = subject.shirt if subject.long_sleeves else subject.skin
    for side in (0, 1):
        _line(canvas, joints_px[f"shoulder{side}"], joints_px[f"elbow{side}"], subject.shirt, width)
        _line(canvas, joints_px[f"elbow{side}"], joints_px[f"hand{side}"], forearm_colour, max(2, width - 1))
        cv2.circle(
            canvas,
            _point(joints_px[f"hand{side}"]),
            round(0.6 * width * _SUBPIXEL),
            subject.skin,
            -1,
            cv2.LINE_AA,
            _SUBPIXEL_BITS,
        )
    head_radius = round(subject.head_radius * scale_px * _SUBPIXEL)
    cv2.circle(canvas, _point(joints_px["head"]), head_radius, subject.skin, -1, cv2.LINE_AA, _SUBPIXEL_BITS)
    tilt_deg = math.degrees(
        math.atan2(joints_px["head"][0] - joints_px["neck"][0], joints_px["neck"][1] - joints_px["head"][1])
    )
    hair_axes = (head_radius, round(head_radius * 0.8))
    cv2.ellipse(
        canvas, _point(joints_px["head"]), hair_axes, tilt_deg, 180, 360, subject.hair, -1, cv2.LINE_AA, _SUBPIXEL_BITS
    )


def _background(rng: np.random.Generator, width: int, height: int, floor_y: float) -> np.ndarray:
    """A wall with a colour gradient, a few posters and blotchy texture, over a floor."""
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    wall_base = rng.uniform(70, 225, 3)
    top, bottom = wall_base + rng.uniform(-30, 30, 3), wall_base + rng.uniform(-30, 30, 3)
    image = np.broadcast_to(top + (bottom - top) * rows, (height, width, 3)).astype(np.float32)
    for _ in range(rng.integers(0, 4)):
        x0, y0 = rng.uniform(0, width), rng.uniform(0, floor_y * 0.7)
        x1, y1 = x0 + rng.uniform(0.05, 0.3) * width, y0 + rng.uniform(0.05, 0.3) * height
        image[int(y0) : int(y1), int(x0) : int(x1)] = 0.5 * image[
            int(y0) : int(y1), int(x0) : int(x1)
        ] + 0.5 * rng.uniform(30, 230, 3)
    horizon = int(floor_y - rng.uniform(0.03, 0.1) * height)
    image[max(horizon, 0) :] = rng.uniform(40, 200, 3)
    coarse = rng.standard_normal((int(rng.integers(4, 12)), int(rng.integers(4, 12)), 3)).astype(np.float32)
    image += cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC) * rng.uniform(0, 12)
    return np.clip(image, 0, 255).astype(np.uint8)


def draw_equipment(canvas: np.ndarray, spec: VideoSpec, origin: np.ndarray, scale_px: float) -> None:
    """Draw an equipment class's equipment in place, on the floor beside (or behind) the figure.

    Its colour and side come from the video's own random stream, so only its
    shape tells the class. Drawn before the figure, which may pass in front of it.
    """
    rng = np.random.default_rng([spec.seed, 4, _label_key(spec.label), spec.index])
    colour = _colour(rng.uniform(), rng.uniform(0.5, 0.9), rng.uniform(0.5, 0.95))
    darker = tuple(int(0.6 * channel) for channel in colour)
    side = 1.0 if rng.integers(2) else -1.0
    floor_x, floor_y = float(origin[0]), float(origin[1])
    beside = floor_x + side * rng.uniform(0.42, 0.5) * scale_px

    def point(x: float, y: float) -> tuple[int, int]:
        return _point(np.array([x, y]))

    if spec.label == "ball":  # an exercise ball with a highlight
        radius = rng.uniform(0.15, 0.18) * scale_px
        centre = point(beside, floor_y - radius)
        cv2.circle(canvas, centre, round(radius * _SUBPIXEL), colour, -1, cv2.LINE_AA, _SUBPIXEL_BITS)
        shine = point(beside - 0.35 * radius, floor_y - 1.4 * radius)
        cv2.circle(canvas, shine, round(0.25 * radius * _SUBPIXEL), (245, 245, 245), -1, cv2.LINE_AA, _SUBPIXEL_BITS)
    elif spec.label == "box":  # a plyo box: front face and a lighter top
        width, height, depth = rng.uniform(0.3, 0.36) * scale_px, rng.uniform(0.3, 0.36) * scale_px, 0.08 * scale_px
        left, right, top = beside - width / 2, beside + width / 2, floor_y - height
        lighter = tuple(min(255, int(channel * 1.25) + 20) for channel in colour)
        cv2.fillPoly(canvas, [np.array([point(left, top), point(right, top), point(right, floor_y), point(left, floor_y)], np.int32)],
                     colour, cv2.LINE_AA, _SUBPIXEL_BITS)
        cv2.fillPoly(canvas, [np.array([point(left, top), point(left + depth, top - depth), point(right + depth, top - depth), point(right, top)], np.int32)],
                     lighter, cv2.LINE_AA, _SUBPIXEL_BITS)
    elif spec.label == "mat":  # a thick mat on the floor under the figure
        length, thickness = rng.uniform(0.9, 1.05) * scale_px, 0.07 * scale_px
        corners = [(floor_x - length / 2, floor_y - thickness), (floor_x + length / 2 + 0.08 * scale_px, floor_y - thickness),
                   (floor_x + length / 2, floor_y + thickness), (floor_x - length / 2 - 0.08 * scale_px, floor_y + thickness)]
        cv2.fillPoly(canvas, [np.array([point(x, y) for x, y in corners], np.int32)], colour, cv2.LINE_AA, _SUBPIXEL_BITS)
        edge = [corners[3], corners[2], (corners[2][0], corners[2][1] + thickness), (corners[3][0], corners[3][1] + thickness)]
        cv2.fillPoly(canvas, [np.array([point(x, y) for x, y in edge], np.int32)], darker, cv2.LINE_AA, _SUBPIXEL_BITS)
    elif spec.label == "barbell":  # a barbell resting on a rack behind the figure
        half, bar_y = rng.uniform(0.42, 0.5) * scale_px, floor_y - rng.uniform(0.5, 0.6) * scale_px
        post = max(2, round(0.03 * scale_px))
        for x in (floor_x - 0.7 * half, floor_x + 0.7 * half):
            _line(canvas, np.array([x, floor_y]), np.array([x, bar_y - 0.03 * scale_px]), (90, 90, 95), post)
        _line(canvas, np.array([floor_x - half, bar_y]), np.array([floor_x + half, bar_y]), (170, 170, 175), max(2, post // 2))
        for x in (floor_x - half, floor_x + half):
            radius = 0.09 * scale_px
            cv2.circle(canvas, point(x, bar_y), round(radius * _SUBPIXEL), darker, -1, cv2.LINE_AA, _SUBPIXEL_BITS)
            cv2.circle(canvas, point(x, bar_y), round(0.35 * radius * _SUBPIXEL), colour, -1, cv2.LINE_AA, _SUBPIXEL_BITS)


def render_frames(spec: VideoSpec, n_frames: int | None = None) -> np.ndarray:
    """The first ``n_frames`` (default: all) RGB uint8 frames ``(T, H, W, 3)`` of ``spec``."""
    n_frames = spec.n_frames if n_frames is None else min(n_frames, spec.n_frames)
    rng = np.random.default_rng([spec.seed, 3, _label_key(spec.label), spec.index])
    margin = math.ceil(3 * spec.jitter_px) + 1
    background = _background(
        rng, spec.width + 2 * margin, spec.height + 2 * margin, margin + spec.ground_y * spec.height
    )
    scale_px = spec.subject.height * spec.distance * spec.height
    origin = np.array([margin + spec.center_x * spec.width, margin + spec.ground_y * spec.height])
    if spec.label in EQUIPMENT_CLASSES:
        background = np.ascontiguousarray(background)  # OpenCV draws in place only on contiguous arrays
        draw_equipment(background, spec, origin, scale_px)
    # Pixel noise: random crops of two pre-drawn noise fields (drawing fresh noise per frame is slow).
    noise_fields = np.round(
        rng.standard_normal((2, spec.height + _NOISE_SLACK, spec.width + _NOISE_SLACK, 3), dtype=np.float32)
        * spec.noise_sigma
    ).astype(np.int16)
    frames = np.empty((n_frames, spec.height, spec.width, 3), np.uint8)
    shake = np.zeros(2)
    for i in range(n_frames):
        joints = joint_positions(spec.subject, pose_at(spec, i / spec.fps))
        canvas = background.copy()
        draw_figure(canvas, {name: origin + point * scale_px for name, point in joints.items()}, spec.subject, scale_px)
        shake = np.clip(0.7 * shake + rng.normal(0.0, spec.jitter_px, 2), -margin, margin)
        left, top = (np.round(shake).astype(int) + margin).tolist()
        frame = cv2.convertScaleAbs(
            canvas[top : top + spec.height, left : left + spec.width], alpha=1.0 + rng.normal(0.0, spec.flicker)
        )
        field_index, noise_top, noise_left = rng.integers(2), *rng.integers(0, _NOISE_SLACK + 1, 2)
        noise = noise_fields[field_index, noise_top : noise_top + spec.height, noise_left : noise_left + spec.width]
        frames[i] = cv2.add(frame, noise, dtype=cv2.CV_8U)
    return frames
