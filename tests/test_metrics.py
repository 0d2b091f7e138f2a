"""The metric suite: known answers on constructed embeddings and frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inr_smooth.metrics import (
    DISFlow,
    clip_frame_allpairs,
    clip_frame_consistency,
    clip_text_score,
    consistent_mask,
    flow_magnitude,
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
    assert exact < 0.003 and wrong > 10 * exact  # exact: only the 2 wrapped columns differ
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
