"""The synthetic world: deterministic clips and exact ground-truth scores."""

import numpy as np
import pytest

from inr_smooth.synthetic import (
    MISSING_DISTANCE,
    MOTIONS,
    SHAPES,
    Scene,
    find_object,
    random_scene,
    render,
    render_background,
    score_object,
)


def test_caption_names_every_attribute():
    scene = Scene("red", "circle", "right", "blue", "plain")
    assert scene.caption == "a red circle moving right on a blue background"
    grown = scene.edited(color="green", shape="square", motion="growing", background="striped")
    assert grown.caption == "a green square growing on a striped blue background"


def test_render_is_deterministic_and_sized():
    scene = random_scene(np.random.default_rng(3))
    a, b = render(scene, 6, 40), render(scene, 6, 40)
    assert a.shape == (6, 40, 40, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert random_scene(np.random.default_rng(3)) == scene


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("motion", MOTIONS)
def test_a_rendered_clip_scores_perfectly_against_its_scene(shape, motion):
    scene = Scene("yellow", shape, motion, "purple", "striped")
    score = score_object(render(scene, 5, 64), scene)
    assert score.color_accuracy == 1.0 and score.shape_iou == 1.0
    assert score.trajectory_error == 0.0 and score.motion_ratio == pytest.approx(1.0)
    assert score.color_flicker == 0.0


def test_motion_moves_the_object_the_stated_way():
    frames = render(Scene(motion="right"), 5, 64)
    red = (frames[..., 0] > 200) & (frames[..., 2] < 100)
    xs = [np.nonzero(red[n])[1].mean() for n in range(5)]
    assert xs == sorted(xs) and xs[-1] - xs[0] == pytest.approx(0.5 * 64, abs=1.5)


def test_wrong_colour_and_shifted_object_are_measured():
    scene = Scene("red", "square", "down", "blue")
    clip = render(scene, 4, 64)
    assert score_object(clip, scene.edited(color="green")).color_accuracy == 0.0
    shifted = np.roll(clip, 8, axis=2)  # 8 px to the right, background is plain
    score = score_object(shifted, scene)
    assert score.trajectory_error == pytest.approx(8 / 64, abs=1e-9)
    # appearance is read where the object is: the right shape and colour, only moved
    assert score.shape_iou > 0.98 and score.color_accuracy == 1.0  # sub-pixel moves
    assert score.motion_ratio == pytest.approx(1.0)


def test_appearance_is_measured_apart_from_position():
    """A wrong shape on the right path keeps trajectory error 0 but loses IoU; a wrong colour
    loses colour accuracy only."""
    scene = Scene("red", "square", "right", "blue")
    wrong_shape = score_object(render(scene.edited(shape="diamond"), 6, 64), scene)
    assert wrong_shape.shape_iou < 0.75 and wrong_shape.color_accuracy == 1.0
    assert wrong_shape.trajectory_error < 0.01 and abs(wrong_shape.motion_ratio - 1) < 0.05
    wrong_colour = score_object(render(scene.edited(color="yellow"), 6, 64), scene)
    assert wrong_colour.color_accuracy == 0.0 and wrong_colour.shape_iou == 1.0


def test_a_frozen_clip_scores_badly_on_motion_and_well_on_smoothness():
    """Frame 0 repeated: the right object, not moving. Nothing flickers or warps wrong, but
    the motion ratio is 0 and the trajectory error large (the truth travels half the frame)."""
    from inr_smooth.scores import score_video

    scene = Scene("red", "circle", "right", "blue")
    frozen = np.repeat(render(scene, 8, 64)[:1], 8, axis=0)
    scores = score_video(frozen, scene)
    assert scores["motion_ratio"] == 0.0 and scores["trajectory_error"] > 0.2
    assert scores["color_flicker"] == 0.0 and scores["warp_error"] < 1e-6
    assert scores["flow_magnitude"] < 0.05
    moving = score_video(render(scene, 8, 64), scene)
    assert moving["motion_ratio"] == pytest.approx(1.0) and moving["trajectory_error"] == 0


def test_a_jumping_object_travels_too_far():
    scene = Scene("red", "circle", "right", "blue")
    clip = render(scene, 8, 64)
    jumping = clip[[0, 4, 1, 5, 2, 6, 3, 7]]  # every frame is a true one, in a scrambled order
    score = score_object(jumping, scene)
    assert score.motion_ratio > 2 and score.trajectory_error > 0.1
    assert score.shape_iou > 0.98 and score.color_accuracy == 1.0  # sub-pixel moves


def test_a_vanished_object_scores_worst():
    scene = Scene("red", "circle", "growing", "green", "striped")
    empty = np.repeat(render_background(scene, 64).round().astype(np.uint8)[None], 5, axis=0)
    score = score_object(empty, scene)
    assert score.color_accuracy == 0 and score.shape_iou == 0 and score.motion_ratio == 0
    assert score.trajectory_error == MISSING_DISTANCE and score.color_flicker == 1.0
    assert find_object(empty[0], scene, 1) is None
    noisy = empty.copy()
    noisy[:, 30:32, 30:32] = (220, 40, 40)  # a 4-pixel speck of the target colour
    assert score_object(noisy, scene).trajectory_error == MISSING_DISTANCE  # too small


def test_growing_counts_as_motion():
    scene = Scene("red", "circle", "growing", "blue")
    assert score_object(render(scene, 6, 64), scene).motion_ratio == pytest.approx(1.0)
    frozen = np.repeat(render(scene, 6, 64)[:1], 6, axis=0)
    assert score_object(frozen, scene).motion_ratio == 0.0


def test_flicker_of_the_object_colour():
    scene = Scene("red", "circle", "left", "blue")
    clip = render(scene, 4, 64).astype(np.int16)
    clip[1::2] = np.clip(clip[1::2] - 40, 0, 255)  # every other frame darker
    assert score_object(clip.astype(np.uint8), scene).color_flicker > 0.1


def test_bad_scenes():
    with pytest.raises(ValueError, match="shape must be one of"):
        Scene(shape="hexagon")
    with pytest.raises(ValueError, match="must differ"):
        Scene(color="blue", background_color="blue")
    with pytest.raises(ValueError, match="size >= 8"):
        render(Scene(), 4, 4)
