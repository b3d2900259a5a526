"""One video's poses, frame by frame, as MediaPipe tracks them.

Each frame: the landmark model reads a 256x256 crop around the person (RGB in
[0, 1]) and gives 39 points (x, y, z in crop pixels, visibility and presence
as logits) and a pose presence. The first 33 points are the body's landmarks;
points 33 and 34 (the hips' midpoint and the body's scale point) give the next
frame's crop. Where there is no crop yet, or the crop's presence falls below
:data:`MIN_PRESENCE`, the detector looks at the whole frame. So a person
turned upside down (a handstand, a fall, a video stored turned) is read
upright in the crop: the landmark model alone on the whole frame is not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from framecache.extract.pose.detector import Crop, Detection, best_detection, detector_input
from framecache.extract.pose.models import CompiledModel, PoseModelFiles

LANDMARK_SIZE = 256
BODY_LANDMARKS = 33
MIN_PRESENCE = 0.5  # below this the person is lost: the detector runs (and the frame has no pose if it finds none)


@dataclass(frozen=True)
class FramePose:
    """One frame's pose in frame pixels: ``landmarks`` (33, 3) x, y, z (z on x's scale, the hips at 0), and
    ``visibility``, ``presence`` (33,) probabilities; ``score`` the pose's presence (0: no person found)."""

    landmarks: np.ndarray
    visibility: np.ndarray
    presence: np.ndarray
    score: float

    @classmethod
    def absent(cls) -> FramePose:
        """A frame without a person: NaN landmarks, score 0."""
        nothing = np.full(BODY_LANDMARKS, np.nan, np.float32)
        return cls(np.full((BODY_LANDMARKS, 3), np.nan, np.float32), nothing, nothing, 0.0)


class PoseEstimator:
    """The two BlazePose models, compiled once; :meth:`track` follows the person through one video's frames."""

    def __init__(self, files: PoseModelFiles, threads: int | None = None):
        self.detector = CompiledModel(files.detector, threads)
        self.landmark_model = CompiledModel(files.landmarks, threads)

    def detect(self, frame: np.ndarray) -> Detection | None:
        """The best person in an RGB uint8 frame (H, W, 3), or None."""
        pixels, scale, offset = detector_input(frame)
        boxes, scores = self.detector(pixels[None])[:2]
        return best_detection(boxes[0], scores[0, :, 0], scale, offset)

    def landmarks(self, frame: np.ndarray, crop: Crop) -> tuple[FramePose, Crop | None]:
        """The pose read in ``crop`` of ``frame``, and the next frame's crop (None when the person is lost)."""
        pixels = crop.cut(frame, LANDMARK_SIZE).astype(np.float32) / 255.0
        outputs = self.landmark_model(pixels[None])
        points = outputs[0].reshape(-1, 5).astype(np.float64)
        presence = float(np.ravel(outputs[1])[0])
        to_frame = crop.to_frame(LANDMARK_SIZE)
        xy = points[:, :2] @ to_frame[:, :2].T + to_frame[:, 2]
        z = points[:, 2] * crop.side / LANDMARK_SIZE
        if presence < MIN_PRESENCE:
            return FramePose.absent(), None
        pose = FramePose(
            np.column_stack([xy, z])[:BODY_LANDMARKS].astype(np.float32),
            _sigmoid(points[:BODY_LANDMARKS, 3]).astype(np.float32),
            _sigmoid(points[:BODY_LANDMARKS, 4]).astype(np.float32),
            presence,
        )
        return pose, Crop.from_points(xy[BODY_LANDMARKS], xy[BODY_LANDMARKS + 1])

    def track(self, frames, crop: Crop | None = None) -> tuple[list[FramePose], Crop | None]:
        """Poses of consecutive RGB frames, starting from ``crop`` (None: detect); also the crop for the frame after.

        Feed a video chunk by chunk, passing each call the crop the previous returned.
        """
        poses = []
        for frame in frames:
            pose, next_crop = self.landmarks(frame, crop) if crop is not None else (FramePose.absent(), None)
            if next_crop is None:  # no crop yet, or the person was lost: look at the whole frame
                detection = self.detect(frame)
                found = detection.crop if detection is not None else None
                pose, next_crop = self.landmarks(frame, found) if found is not None else (FramePose.absent(), None)
            poses.append(pose)
            crop = next_crop
        return poses, crop


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -100, 100)))
