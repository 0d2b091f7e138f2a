"""The synthetic world: deterministic clips and exact ground-truth scores."""

import numpy as np
import pytest

from inr_smooth.synthetic import MOTIONS, SHAPES, Scene, random_scene, render, score_object


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
    assert score.color_accuracy == 1.0
    assert score.shape_iou > 0.95
    assert score.position_error < 0.01
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
    assert score.position_error == pytest.approx(8 / 64, abs=0.01)
    assert score.shape_iou < 0.8


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
