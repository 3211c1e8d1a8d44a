"""Visual features: MediaPipe's face mesh turned into a pose- and scale-normalised face descriptor.

For each picture of the time grid (``misalatch.media.decode.iter_pictures``), MediaPipe's face mesh
(``mediapipe.solutions.face_mesh`` of mediapipe 0.10.14, which ships its models in the wheel and works
offline) finds up to two faces and 468 landmarks on each, tracking the face from picture to picture.
The largest face is described by ``face_descriptor``:

1. Landmarks in pixels (``x * width, y * height, z * width``: MediaPipe's depth is on the scale of x).
2. A head frame: the x axis runs from the centre of the subject's right eye (between landmarks 33 and
   133) to the centre of the left eye (263 and 362); the y axis from the nose bridge (168) towards the
   base of the nose (2), made orthogonal to x; z = x × y points away from the camera. None of these
   points moves when the mouth or the eyelids do.
3. Every landmark is centred on the nose bridge (168), rotated into the head frame and divided by the
   inter-ocular distance (between the two eye centres): the ``lm*`` columns are the same numbers
   whatever the head's position, size or orientation in the picture.
4. Head pose (yaw, pitch, roll of the head frame in radians: yaw 0 facing the camera, roll 0 with the
   eyes level; the nose line leans forward, so a frontal face has a pitch near -0.2), a few expression
   measures in inter-ocular units, and where the face is in the picture.

A row without a face (none found, or no picture) is all zeros with ``face_present`` 0 (the last
column, and ``ClipFeatures.face_present``); a warning counts such rows and rows with two faces.
"""

from __future__ import annotations

import os
import sys
import warnings as _warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ._deps import require
from .decode import Picture

#: The landmarks kept (MediaPipe face-mesh indices) and what each is.
LANDMARKS: tuple[tuple[int, str], ...] = (
    (10, "forehead"), (152, "chin"), (234, "cheek_r"), (454, "cheek_l"), (172, "jaw_r"), (397, "jaw_l"),
    (136, "jaw_low_r"), (365, "jaw_low_l"), (148, "chin_r"), (377, "chin_l"), (50, "cheekbone_r"),
    (280, "cheekbone_l"),
    (70, "brow_outer_r"), (105, "brow_mid_r"), (107, "brow_inner_r"),
    (300, "brow_outer_l"), (334, "brow_mid_l"), (336, "brow_inner_l"),
    (33, "eye_outer_r"), (133, "eye_inner_r"), (159, "lid_upper_r"), (145, "lid_lower_r"),
    (263, "eye_outer_l"), (362, "eye_inner_l"), (386, "lid_upper_l"), (374, "lid_lower_l"),
    (168, "nose_bridge"), (1, "nose_tip"), (2, "nose_base"), (98, "nostril_r"), (327, "nostril_l"),
    (61, "mouth_corner_r"), (291, "mouth_corner_l"), (0, "lip_upper_outer"), (17, "lip_lower_outer"),
    (13, "lip_upper_inner"), (14, "lip_lower_inner"), (37, "lip_upper_r"), (267, "lip_upper_l"),
    (84, "lip_lower_r"), (314, "lip_lower_l"), (78, "mouth_inner_r"), (308, "mouth_inner_l"),
)
POSE_NAMES = ("head_yaw", "head_pitch", "head_roll")
EXPRESSION_NAMES = ("mouth_open", "mouth_width", "mouth_corner_lift", "eye_open_r", "eye_open_l",
                    "brow_raise_r", "brow_raise_l")
POSITION_NAMES = ("face_x", "face_y", "face_size")
#: Every visual column, in order (see docs/own-videos.md, "Recipe").
VISUAL_NAMES: tuple[str, ...] = (
    *(f"lm{i}_{name}_{axis}" for i, name in LANDMARKS for axis in "xyz"),
    *POSE_NAMES, *EXPRESSION_NAMES, *POSITION_NAMES, "face_present",
)
_INDEX = np.array([i for i, _ in LANDMARKS])
_BRIDGE, _NOSE_BASE = 168, 2
_EYE_R, _EYE_L = (33, 133), (263, 362)


def face_descriptor(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """The descriptor (``len(VISUAL_NAMES)`` values, ``face_present`` = 1) of one face.

    ``points``: (468 or more, 3) MediaPipe landmarks (x, y in [0, 1] of the picture, z on x's scale).
    Returns zeros with ``face_present`` 0 when the landmarks are degenerate (eyes on one point).
    """
    p = np.asarray(points, dtype=np.float64)[:, :3] * np.array([width, height, width], dtype=np.float64)
    eye_r, eye_l = p[list(_EYE_R)].mean(axis=0), p[list(_EYE_L)].mean(axis=0)
    across = eye_l - eye_r
    scale = float(np.linalg.norm(across))
    out = np.zeros(len(VISUAL_NAMES), np.float32)
    if not np.isfinite(p).all() or scale < 1e-6:
        return out
    x_axis = across / scale
    down = p[_NOSE_BASE] - p[_BRIDGE]
    y_axis = down - (down @ x_axis) * x_axis
    norm = float(np.linalg.norm(y_axis))
    if norm < 1e-9:
        return out
    y_axis /= norm
    z_axis = np.cross(x_axis, y_axis)
    rotation = np.stack([x_axis, y_axis, z_axis])  # rows: head axes in picture coordinates
    q = (p - p[_BRIDGE]) @ rotation.T / scale  # every landmark in the head frame, inter-ocular units

    yaw = np.arctan2(z_axis[0], z_axis[2])
    pitch = np.arctan2(-z_axis[1], np.hypot(z_axis[0], z_axis[2]))
    roll = np.arctan2(x_axis[1], x_axis[0])

    def dist(a: int, b: int) -> float:
        return float(np.linalg.norm(q[a] - q[b]))

    expression = (
        dist(13, 14),  # mouth opening: inner lips apart
        dist(61, 291),  # mouth width: corner to corner
        (q[13, 1] + q[14, 1]) / 2 - (q[61, 1] + q[291, 1]) / 2,  # corners above the lips' centre (smile)
        dist(159, 145), dist(386, 374),  # eye aperture: upper to lower lid
        q[159, 1] - q[105, 1], q[386, 1] - q[334, 1],  # brow height above the upper lid
    )
    centre = p[_BRIDGE]
    position = (centre[0] / width, centre[1] / height, scale / max(width, height))
    values = np.concatenate([q[_INDEX].reshape(-1), [yaw, pitch, roll], expression, position, [1.0]])
    if not np.isfinite(values).all():
        return out
    out[:] = values
    return out


@contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for a moment: MediaPipe's C++ graph prints INFO and WARNING
    lines (TFLite delegate, feedback tensors) when its models load, which Python cannot silence."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@dataclass
class VisualResult:
    features: np.ndarray
    """(rows, len(VISUAL_NAMES)) float32."""
    face_present: np.ndarray
    """(rows,) bool."""
    warnings: list[str]


def visual_features(pictures: Iterable[Picture], n_rows: int, *, min_detection_confidence: float = 0.5,
                    min_tracking_confidence: float = 0.5) -> VisualResult:
    """Describe the largest face of every picture; rows without a face are zeros (face_present 0)."""
    face_mesh = require("mediapipe.python.solutions.face_mesh")
    features = np.zeros((n_rows, len(VISUAL_NAMES)), np.float32)
    several = no_picture = 0
    with _warnings.catch_warnings():
        # protobuf 4 warns about a deprecated call inside MediaPipe on every picture
        _warnings.filterwarnings("ignore", message=".*GetPrototype.*", category=UserWarning)
        with _quiet_native_stderr():  # the graph starts here, and prints to the native stderr
            mesh = face_mesh.FaceMesh(static_image_mode=False, max_num_faces=2, refine_landmarks=False,
                                      min_detection_confidence=min_detection_confidence,
                                      min_tracking_confidence=min_tracking_confidence)
        with mesh:
            with _quiet_native_stderr():  # the models load on the first picture: a blank one, no face
                mesh.process(np.zeros((64, 64, 3), np.uint8))
            for picture in pictures:
                if picture.image is None:
                    no_picture += len(picture.rows)
                    continue
                height, width = picture.image.shape[:2]
                faces = mesh.process(picture.image).multi_face_landmarks or []
                if not faces:
                    continue
                if len(faces) > 1:
                    several += len(picture.rows)
                points = [np.array([(m.x, m.y, m.z) for m in face.landmark]) for face in faces]
                largest = max(points, key=lambda pts: np.ptp(pts[:, 0]) * width * np.ptp(pts[:, 1]) * height)
                features[picture.rows.start: picture.rows.stop] = face_descriptor(largest, width, height)
    present = features[:, -1] > 0.5
    notes = []
    missing = int(n_rows - present.sum()) - no_picture
    if n_rows and not present.any():
        notes.append(f"no face in any of the {n_rows} rows: the visual features are all zero")
    elif missing > 0:
        notes.append(f"no face in {missing} of {n_rows} rows (zeros, face_present 0)")
    if several:
        notes.append(f"2 faces in {several} of {n_rows} rows: the largest is used")
    return VisualResult(features=features, face_present=present, warnings=notes)
