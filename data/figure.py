"""Drawing one synthetic exercise video: the articulated figure, its pose over time, and the scene.

``render_frames`` turns a :class:`~framecache.data.synthetic.VideoSpec` into RGB
frames: the figure's joint angles at each time (``pose_at``: one periodic
motion per exercise, with a rest part in the shared neutral pose), its joints
by forward kinematics (``joint_positions``), drawn with OpenCV over a textured
background, with the equipment of an equipment class, camera jitter,
brightness flicker and pixel noise. Randomness comes only from
``np.random.default_rng`` keyed by the spec (seed, purpose, class, index).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from framecache.common.errors import FramecacheError
from framecache.data.synthetic import EQUIPMENT_CLASSES, MOTION_CLASSES, Subject, VideoSpec, _colour, _label_key

_SUBPIXEL_BITS = 4  # OpenCV drawing with shift=4: coordinates in 1/16 pixel
_SUBPIXEL = 1 << _SUBPIXEL_BITS
_NOISE_SLACK = 16  # noise fields are this much larger than a frame, for random crops


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
