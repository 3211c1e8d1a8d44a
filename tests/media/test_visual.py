"""Visual features: the face-mesh descriptor on the real CMU-MOSI clip, its invariances, and clips without
a face, with a rotated picture, or where the face leaves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from misalatch.media import ClipFeatures, default_recipe, extract_clip
from misalatch.media.visual import LANDMARKS, VISUAL_NAMES, face_descriptor

REAL_CLIP = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mosi" / "Oz06ZWiO20M_6.mp4"


@pytest.fixture(scope="module")
def real_30fps() -> ClipFeatures:
    """The real clip at its own 30 pictures per second (one extraction for the module)."""
    return extract_clip(REAL_CLIP, default_recipe(visual_rate=30.0), modalities=("visual",))


def test_real_clip_has_a_face_in_every_one_of_its_225_frames(real_30fps: ClipFeatures) -> None:
    recipe = default_recipe(visual_rate=30.0)
    assert real_30fps.visual is not None and real_30fps.face_present is not None
    assert real_30fps.visual.shape == (225, recipe.visual_dim) == (225, len(VISUAL_NAMES))
    assert real_30fps.face_present.all()
    assert real_30fps.visual.dtype == np.float32 and np.isfinite(real_30fps.visual).all()
    assert real_30fps.visual[:, VISUAL_NAMES.index("face_present")].tolist() == [1.0] * 225
    assert real_30fps.warnings == ()
    assert real_30fps.acoustic is None  # only the visual modality was asked for
    assert real_30fps.duration == pytest.approx(7.5)


def test_real_clip_descriptor_is_normalised(real_30fps: ClipFeatures) -> None:
    v = real_30fps.visual
    assert v is not None
    col = {name: i for i, name in enumerate(VISUAL_NAMES)}
    # the eye centres lie one inter-ocular unit apart on the head's x axis, the bridge is the origin
    eye_r = (v[:, col["lm33_eye_outer_r_x"]] + v[:, col["lm133_eye_inner_r_x"]]) / 2
    eye_l = (v[:, col["lm263_eye_outer_l_x"]] + v[:, col["lm362_eye_inner_l_x"]]) / 2
    np.testing.assert_allclose(eye_l - eye_r, 1.0, atol=1e-4)
    np.testing.assert_allclose(v[:, col["lm168_nose_bridge_x"]], 0.0, atol=1e-5)
    # a speaker facing the camera: small head angles, a plausible mouth and eyes
    assert np.abs(v[:, col["head_yaw"]]).max() < 1.0 and abs(np.median(v[:, col["head_yaw"]])) < 0.3
    assert np.abs(v[:, col["head_roll"]]).max() < 0.6
    assert 0.5 < np.median(v[:, col["mouth_width"]]) < 1.2
    assert 0.02 < np.median(v[:, col["eye_open_r"]]) < 0.4
    assert 0.0 < np.median(v[:, col["face_size"]]) < 0.5
    # and the mouth moves while they talk
    assert v[:, col["mouth_open"]].std() > 0.01


def _random_face(rng: np.random.Generator) -> np.ndarray:
    """468 plausible landmarks: a frontal face in normalised picture coordinates."""
    points = rng.normal(0.5, 0.08, size=(468, 3))
    points[:, 2] = rng.normal(0.0, 0.03, size=468)
    points[[33, 133]] = [[0.40, 0.45, 0.0], [0.46, 0.45, 0.0]]
    points[[263, 362]] = [[0.60, 0.45, 0.0], [0.54, 0.45, 0.0]]
    points[168] = [0.50, 0.45, -0.02]
    points[2] = [0.50, 0.58, -0.04]
    return points


@pytest.mark.parametrize("angle, scale, shift", [(0.3, 0.5, (0.1, -0.05)), (-0.7, 1.7, (-0.2, 0.1))])
def test_descriptor_ignores_position_size_and_in_plane_rotation(angle: float, scale: float,
                                                                shift: tuple[float, float]) -> None:
    rng = np.random.default_rng(0)
    face = _random_face(rng)
    width = height = 400  # square pixels, so normalised x and y share one scale
    base = face_descriptor(face, width, height)
    c, s = np.cos(angle), np.sin(angle)
    moved = face.copy()
    centre = np.array([0.5, 0.5])
    xy = (face[:, :2] - centre) @ np.array([[c, s], [-s, c]]) * scale + centre + np.array(shift)
    moved[:, :2] = xy
    moved[:, 2] = face[:, 2] * scale
    other = face_descriptor(moved, width, height)
    n_lm = 3 * len(LANDMARKS)
    expression = slice(n_lm + 3, n_lm + 10)
    np.testing.assert_allclose(other[:n_lm], base[:n_lm], atol=1e-4)
    np.testing.assert_allclose(other[expression], base[expression], atol=1e-4)
    roll = VISUAL_NAMES.index("head_roll")
    assert other[roll] - base[roll] == pytest.approx(angle, abs=1e-5)
    size = VISUAL_NAMES.index("face_size")
    assert other[size] / base[size] == pytest.approx(scale, rel=1e-4)
    assert other[-1] == base[-1] == 1.0


def test_descriptor_of_a_degenerate_face_is_absent() -> None:
    face = np.full((468, 3), 0.5)
    out = face_descriptor(face, 100, 100)
    assert out.shape == (len(VISUAL_NAMES),) and not out.any()


@pytest.fixture(scope="module")
def real_frames() -> list[np.ndarray]:
    """The real clip's first 20 frames at 240x180 (RGB), to build clips with a known face."""
    import av

    with av.open(str(REAL_CLIP)) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24", width=240, height=180))
            if len(frames) == 20:
                return frames
    raise AssertionError("the real clip has fewer than 20 frames")


def test_no_face_gives_zeros_flag_0_and_a_warning(clips: dict[str, Path]) -> None:
    features = extract_clip(clips["mp4_h264_aac"])
    assert features.visual is not None and features.face_present is not None
    assert features.visual.shape == (15, len(VISUAL_NAMES))
    assert not features.visual.any() and not features.face_present.any()
    assert features.warnings == ("no face in any of the 15 rows: the visual features are all zero",)


def test_a_phone_clip_stored_sideways_is_described_upright(make_clip, real_frames) -> None:
    # stored turned 90 degrees anticlockwise, with the display matrix that turns it back
    path = make_clip("phone.mp4", frames=lambda i: np.ascontiguousarray(np.rot90(real_frames[i])), width=180,
                     height=240, fps=10, seconds=2.0, rotation=-90, audio_codec=None)
    features = extract_clip(path, default_recipe(visual_rate=10.0), modalities=("visual",))
    assert features.face_present is not None and features.face_present.all()
    roll = features.visual[:, VISUAL_NAMES.index("head_roll")]
    assert np.abs(roll).max() < 0.5  # upright: were the rotation ignored, the roll would be near +-pi/2


def test_a_face_that_leaves_is_flagged_row_by_row(make_clip, real_frames) -> None:
    blank = np.full((180, 240, 3), 40, np.uint8)
    path = make_clip("leaves.mp4", frames=lambda i: real_frames[i] if i < 10 else blank, width=240, height=180,
                     fps=10, seconds=2.0, audio_codec=None)
    features = extract_clip(path, default_recipe(visual_rate=10.0), modalities=("visual",))
    assert features.face_present is not None and features.visual is not None
    assert features.face_present.tolist() == [True] * 10 + [False] * 10
    assert not features.visual[10:].any() and features.visual[:10, -1].all()
    assert features.warnings == ("no face in 10 of 20 rows (zeros, face_present 0)",)


def test_two_faces_use_the_largest_and_warn(make_clip, real_frames) -> None:
    def two(i: int) -> np.ndarray:
        canvas = np.full((180, 480, 3), 40, np.uint8)
        canvas[:, :240] = real_frames[i]
        canvas[:, 240:] = real_frames[i][:, ::-1]  # the mirror image: a second face of the same size
        canvas[:, 240:] = (canvas[:, 240:] * 0.6 + 40).astype(np.uint8)
        return canvas

    path = make_clip("two.mp4", frames=two, width=480, height=180, fps=10, seconds=1.0, audio_codec=None)
    features = extract_clip(path, default_recipe(visual_rate=10.0), modalities=("visual",))
    assert features.face_present is not None and features.face_present.all()
    assert any(w.startswith("2 faces in ") and w.endswith("the largest is used") for w in features.warnings)
