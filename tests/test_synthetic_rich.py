"""The rich split of the synthetic world: exact ground truth for textures, two objects,
occlusion, a camera pan and scale change; and the simple split left as it was."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from inr_smooth.quality import random_cases, render_scene, scene_record
from inr_smooth.synthetic import render
from inr_smooth.synthetic_rich import (
    RichScene,
    random_rich_scene,
    render_rich,
    rich_edit_of,
    rich_truth,
    score_rich,
)

RESULTS = Path(__file__).parents[1] / "benchmarks" / "results" / "quality" / "results.json"


def _scenes(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return [random_rich_scene(rng) for _ in range(n)]


def _owners(frame: np.ndarray, scene: RichScene) -> np.ndarray:
    """Read each pixel's owner (0 background, 1 subject, 2 other) from its colour alone."""
    subject, other, background = scene.tone_sets()
    label = np.full(frame.shape[:2], -1, dtype=np.int8)
    for owner, tone_set in ((1, subject), (2, other), (0, background)):
        for tone in tone_set.round().astype(np.uint8):
            label[(frame == tone).all(-1)] = owner
    return label


def test_the_label_map_read_from_a_rendered_frame_is_the_truth():
    for scene in [RichScene(), *_scenes()]:
        clip = render_rich(scene, 6, 48)
        for n in range(6):
            truth = rich_truth(scene, n, 6, 48)
            assert np.array_equal(_owners(clip[n], scene), truth.label)
            assert np.array_equal(truth.label == 1, truth.visible["subject"])
            assert np.array_equal(truth.label == 2, truth.visible["other"])


def test_the_front_object_occludes_the_back_one():
    scene = RichScene()  # paths cross mid-clip, the other object in front
    overlaps = []
    for n in range(8):
        t = rich_truth(scene, n, 8, 64)
        overlap = t.amodal["subject"] & t.amodal["other"]
        overlaps.append(int(overlap.sum()))
        assert not (t.visible["subject"] & overlap).any()
        assert np.array_equal(t.visible["other"], t.amodal["other"])
    assert max(overlaps) > 20 and overlaps[0] == 0
    behind = scene.edited(front="subject")
    t = rich_truth(behind, int(np.argmax(overlaps)), 8, 64)
    assert np.array_equal(t.visible["subject"], t.amodal["subject"])
    assert (t.amodal["other"] & ~t.visible["other"]).sum() == max(overlaps)


def test_random_scenes_occlude_and_stay_in_frame():
    occluded = 0
    for scene in _scenes(20):
        areas = []
        for n in range(8):
            t = rich_truth(scene, n, 8, 64)
            occluded += bool((t.amodal["subject"] & t.amodal["other"]).any())
            areas.append(t.visible["subject"].sum() / t.amodal["subject"].sum())
            for which in ("subject", "other"):
                x, y, r = t.states[which]
                assert r <= x <= 1 - r and r <= y <= 1 - r
        assert min(areas) > 0.35  # the occluder is smaller: most of the subject stays seen
    assert occluded >= 20  # at least one occluded frame per clip on average


def test_the_camera_pan_moves_the_background_by_its_offset():
    # 4 px per frame at 64 px over 8 frames
    scene = RichScene(background="noise", pan=(7 * 4 / 64, 0.0))
    clip = render_rich(scene, 8, 64)
    for n in range(7):
        a, b = rich_truth(scene, n, 8, 64).label, rich_truth(scene, n + 1, 8, 64).label
        seen = (a[:, 4:] == 0) & (b[:, :-4] == 0)  # background in both
        assert np.array_equal(clip[n + 1][:, :-4][seen], clip[n][:, 4:][seen])
        assert not np.array_equal(clip[n + 1], clip[n])


def test_scale_change_grows_the_subject_at_the_stated_rate():
    scene = RichScene(subject_scale=1.5, front="subject")
    first, last = (rich_truth(scene, n, 8, 64).amodal["subject"].sum() for n in (0, 7))
    assert last / first == pytest.approx(1.5**2, rel=0.05)
    assert "growing" in scene.caption


def test_a_rendered_rich_clip_scores_exactly_against_its_scene():
    for scene in [RichScene(), *_scenes()]:
        score = score_rich(render_rich(scene, 6, 48), scene)
        assert score.color_accuracy == 1.0 and score.shape_iou == 1.0
        assert score.trajectory_error == 0.0 and score.motion_ratio == pytest.approx(1.0)


def test_an_edit_changes_only_the_subject_and_the_scores_see_it():
    scene = RichScene()
    target = rich_edit_of(scene, np.random.default_rng(1))
    assert (target.subject_color, target.subject_shape) != (scene.subject_color,
                                                            scene.subject_shape)  # fmt: skip
    assert target.subject_color not in (scene.other_color, scene.background_color)
    assert target.edited(color=scene.subject_color, shape=scene.subject_shape) == scene
    assert score_rich(render_rich(scene, 6, 48), target).color_accuracy == 0.0
    frozen = np.repeat(render_rich(target, 6, 48)[:1], 6, axis=0)
    score = score_rich(frozen, target)
    assert score.motion_ratio < 0.2 and score.trajectory_error > 0.05


def test_clashing_tones_are_refused():
    with pytest.raises(ValueError, match="must not share a tone"):
        RichScene(other_color="red")
    with pytest.raises(ValueError, match="background must be one of"):
        RichScene(background="wavy")


def test_rich_cases_are_seeded_and_score_through_score_video():
    from inr_smooth.scores import METRICS, score_video

    pairs = random_cases(3, 5, "rich")
    assert pairs == random_cases(3, 5, "rich")
    scene, target = pairs[0]
    clip = render_scene(scene, 4, 32)
    assert np.array_equal(clip, render_rich(scene, 4, 32))
    scores = score_video(clip, scene)
    assert set(scores) == set(METRICS) and scores["shape_iou"] == 1.0
    assert json.loads(json.dumps(scene_record(target)))["subject_color"] == target.subject_color
    with pytest.raises(ValueError, match="world must be one of"):
        random_cases(2, 0, "flat")


def test_the_simple_split_is_unchanged_given_its_seeds():
    """The committed quality benchmark's 24 scenes and the pixels of the first six clips, as
    main rendered them before the rich split existed."""
    stored = json.loads(RESULTS.read_text())["cases_scenes"]
    pairs = random_cases(24, 0)
    assert [[scene_record(s), scene_record(t)] for s, t in pairs] == stored
    digest = hashlib.sha256()
    for scene, target in pairs[:6]:
        digest.update(render(scene, 8, 64).tobytes())
        digest.update(render(target, 8, 64).tobytes())
    assert digest.hexdigest() == (
        "ff90d509698a4046b99515c6bca2b86c21aa67dec733605410fa3eec54b44758"
    )


def test_bench_quality_runs_the_rich_world(tiny_sd_folder, tmp_path, capsys):
    from inr_smooth.cli import main

    code = main(["bench", "quality", "--world", "rich", "--model", str(tiny_sd_folder),
                 "--clips", "2", "--frames", "3", "--size", "16", "--inference-steps", "2",
                 "--methods", "edit:plain", "--out", str(tmp_path), "--name", "q"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "q" / "results.json").read_text())
    assert results["world"] == "rich" and len(results["cases"]) == 2
    assert results["cases_scenes"][0][0] == scene_record(random_cases(2, 0, "rich")[0][0])
    assert results["cases"][0]["source"]["shape_iou"] == 1.0
    assert "rich world" in capsys.readouterr().out
