"""BlazePose's person detector, and the rotated square crop around a person that the landmark model reads.

The detector reads the whole frame letterboxed to 224x224 (RGB in [-1, 1]) and
scores 2254 anchors (feature maps of strides 8, 16 and 32 with 2, 2 and 6
anchors per cell); each anchor's row holds a box and four keypoints as pixel
offsets from its centre. Keypoint 0 is the hips' midpoint, keypoint 1 a point
whose direction from it is the body's "up" and whose distance is its scale.
The best detection, averaged with those overlapping it (MediaPipe's weighted
non-maximum suppression), gives the crop: a square centred on keypoint 0,
turned so that keypoint 1 is straight up, of side 2.5 times their distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DETECTOR_SIZE = 224
MIN_DETECTION_SCORE = 0.5
OVERLAP_IOU = 0.3  # detections overlapping the best this much are averaged into it
CROP_SCALE = 1.25  # the crop's side: 2 x the keypoints' distance x this


def _anchor_centres() -> np.ndarray:
    """(2254, 2) anchor centres in [0, 1], in the order of the detector's outputs."""
    centres = []
    for stride, per_cell in ((8, 2), (16, 2), (32, 6)):
        cells = DETECTOR_SIZE // stride
        grid = (np.stack(np.meshgrid(np.arange(cells), np.arange(cells)), -1).reshape(-1, 2) + 0.5) / cells
        centres.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(centres)


ANCHORS = _anchor_centres()


@dataclass(frozen=True)
class Crop:
    """A square region of a frame, turned: ``centre`` and ``up`` (a unit vector) in frame pixels, ``side`` in pixels."""

    centre: np.ndarray
    up: np.ndarray
    side: float

    @classmethod
    def from_points(cls, hips: np.ndarray, top: np.ndarray) -> Crop | None:
        """The crop for a body whose hips' midpoint is ``hips`` and whose scale point is ``top`` (frame pixels)."""
        direction = np.asarray(top, np.float64) - np.asarray(hips, np.float64)
        distance = float(np.hypot(*direction))
        if not np.isfinite(distance) or distance < 1.0:
            return None
        return cls(np.asarray(hips, np.float64), direction / distance, 2.0 * distance * CROP_SCALE)

    def to_frame(self, size: int) -> np.ndarray:
        """The 2x3 affine matrix taking a ``size`` x ``size`` crop's pixels to frame pixels."""
        right = np.array([-self.up[1], self.up[0]])
        down = -self.up
        scale = self.side / size
        origin = self.centre - self.side / 2 * (right + down)
        return np.array([[right[0] * scale, down[0] * scale, origin[0]], [right[1] * scale, down[1] * scale, origin[1]]])

    def cut(self, frame: np.ndarray, size: int) -> np.ndarray:
        """The crop as a ``size`` x ``size`` image (outside the frame: black)."""
        return cv2.warpAffine(frame, self.to_frame(size), (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT)  # fmt: skip


@dataclass(frozen=True)
class Detection:
    """The best person found in a frame: its score and four keypoints in frame pixels."""

    score: float
    keypoints: np.ndarray  # (4, 2)

    @property
    def crop(self) -> Crop | None:
        return Crop.from_points(self.keypoints[0], self.keypoints[1])


def detector_input(frame: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """The frame letterboxed to the detector's input, and how to map back: ``frame = (input_xy * scale) - offset``."""
    height, width = frame.shape[:2]
    side = max(height, width)
    offset = np.array([(side - width) // 2, (side - height) // 2], np.float64)
    square = cv2.copyMakeBorder(frame, int(offset[1]), side - height - int(offset[1]), int(offset[0]),
                                side - width - int(offset[0]), cv2.BORDER_CONSTANT)  # fmt: skip
    pixels = cv2.resize(square, (DETECTOR_SIZE, DETECTOR_SIZE), interpolation=cv2.INTER_AREA if side > DETECTOR_SIZE else cv2.INTER_LINEAR)
    return pixels.astype(np.float32) / 127.5 - 1.0, side / DETECTOR_SIZE, offset


def best_detection(raw_boxes: np.ndarray, raw_scores: np.ndarray, scale: float, offset: np.ndarray) -> Detection | None:
    """Decode the detector's outputs ``(2254, 12)`` and ``(2254,)``: the best person, averaged with its overlaps."""
    scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores.astype(np.float64), -100, 100)))
    candidates = np.flatnonzero(scores >= MIN_DETECTION_SCORE)
    if len(candidates) == 0:
        return None
    anchors = ANCHORS[candidates] * DETECTOR_SIZE
    boxes = raw_boxes[candidates].astype(np.float64)
    centres = boxes[:, 0:2] + anchors
    halves = boxes[:, 2:4] / 2
    corners = np.concatenate([centres - halves, centres + halves], axis=1)
    best = int(np.argmax(scores[candidates]))
    overlapping = _iou(corners[best], corners) > OVERLAP_IOU
    weights = scores[candidates][overlapping]
    keypoints = boxes[overlapping, 4:12].reshape(-1, 4, 2) + anchors[overlapping, None, :]
    averaged = np.tensordot(weights / weights.sum(), keypoints, axes=1)
    return Detection(float(scores[candidates][best]), averaged * scale - offset)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one (x0, y0, x1, y1) box with each of ``boxes``."""
    low = np.maximum(box[:2], boxes[:, :2])
    high = np.minimum(box[2:], boxes[:, 2:])
    intersection = np.prod(np.clip(high - low, 0, None), axis=1)
    area = lambda b: np.prod(np.clip(b[..., 2:] - b[..., :2], 0, None), axis=-1)  # noqa: E731
    return intersection / np.maximum(area(box) + area(boxes) - intersection, 1e-9)
