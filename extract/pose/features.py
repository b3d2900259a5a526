"""One feature vector per frame from its pose: what a clinician can read, in a fixed order (:data:`FEATURE_NAMES`).

- the 33 landmarks centred on the hips' midpoint and divided by the torso's
  length (hips' to shoulders' midpoint): the body's shape, wherever and
  however large it is in the frame (99: x, y, z each);
- each landmark's visibility (33);
- joint angles at the knees, hips, elbows and shoulders, in the image plane,
  as a fraction of a half turn (8);
- the trunk's direction (hips to shoulders) as a unit vector (2);
- the hips' position and the torso's length relative to the frame (3);
- the pose's presence score (1);
- the raw landmarks: x, y over the frame's side (66), for measures of one's own.

A frame without a person is all zeros (score 0).
"""

from __future__ import annotations

import numpy as np

from framecache.extract.pose.tracker import BODY_LANDMARKS, FramePose

# BlazePose's landmark numbers.
L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST = 11, 12, 13, 14, 15, 16
L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE = 23, 24, 25, 26, 27, 28
# Each angle is at the middle landmark of its triple.
ANGLES = {
    "left_knee": (L_HIP, L_KNEE, L_ANKLE), "right_knee": (R_HIP, R_KNEE, R_ANKLE),
    "left_hip": (L_SHOULDER, L_HIP, L_KNEE), "right_hip": (R_SHOULDER, R_HIP, R_KNEE),
    "left_elbow": (L_SHOULDER, L_ELBOW, L_WRIST), "right_elbow": (R_SHOULDER, R_ELBOW, R_WRIST),
    "left_shoulder": (L_ELBOW, L_SHOULDER, L_HIP), "right_shoulder": (R_ELBOW, R_SHOULDER, R_HIP),
}  # fmt: skip
MIN_TORSO = 0.01  # of the frame's side: a smaller torso (a degenerate pose) is taken as this long

FEATURE_NAMES = (
    [f"body_{axis}{index}" for index in range(BODY_LANDMARKS) for axis in "xyz"]
    + [f"visibility{index}" for index in range(BODY_LANDMARKS)]
    + [f"angle_{name}" for name in ANGLES]
    + ["trunk_x", "trunk_y", "hips_x", "hips_y", "torso_length", "score"]
    + [f"frame_{axis}{index}" for index in range(BODY_LANDMARKS) for axis in "xy"]
)
FEATURE_DIM = len(FEATURE_NAMES)  # 212


def pose_features(poses: list[FramePose], frame_side: float) -> np.ndarray:
    """float32 ``(len(poses), FEATURE_DIM)``: one row per frame (see the module docstring); ``frame_side`` in pixels."""
    rows = np.zeros((len(poses), FEATURE_DIM), np.float32)
    for row, pose in zip(rows, poses):
        if pose.score > 0:
            row[:] = _frame_features(pose, float(frame_side))
    return rows


def _frame_features(pose: FramePose, side: float) -> np.ndarray:
    points = pose.landmarks.astype(np.float64)
    hips = (points[L_HIP, :2] + points[R_HIP, :2]) / 2
    shoulders = (points[L_SHOULDER, :2] + points[R_SHOULDER, :2]) / 2
    trunk = shoulders - hips
    torso = max(float(np.hypot(*trunk)), MIN_TORSO * side)
    body = (points - np.array([*hips, 0.0])) / torso
    angles = [_angle(points[a, :2], points[b, :2], points[c, :2]) for a, b, c in ANGLES.values()]
    return np.concatenate([
        body.ravel(), pose.visibility, angles, trunk / torso, hips / side, [torso / side, pose.score],
        (points[:, :2] / side).ravel(),
    ])  # fmt: skip


def _angle(first: np.ndarray, middle: np.ndarray, last: np.ndarray) -> float:
    """The angle at ``middle`` between the two limbs, over pi (0: folded, 1: straight)."""
    one, other = first - middle, last - middle
    norms = np.hypot(*one) * np.hypot(*other)
    if norms == 0:
        return 0.0
    return float(np.arccos(np.clip(np.dot(one, other) / norms, -1.0, 1.0)) / np.pi)
