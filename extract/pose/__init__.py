"""Human pose per frame with MediaPipe's BlazePose models, run the way MediaPipe runs them.

- :mod:`~framecache.extract.pose.models`: finding the model files (a folder, a
  MediaPipe Tasks ``.task`` bundle) and compiling them with OpenVINO;
- :mod:`~framecache.extract.pose.detector`: the person detector (an SSD over
  2254 anchors) and the rotated square crop its keypoints give;
- :mod:`~framecache.extract.pose.tracker`: one video's frames in order: the
  landmark model reads the crop, the next frame's crop follows from its
  landmarks, the detector runs again when the person is lost.
"""
