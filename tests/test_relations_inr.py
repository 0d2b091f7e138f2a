"""INR(T): the properties of inr_smoothing_loss listed in spec §5."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from inr_smooth.relations import inr_smoothing_loss


def frames(*values: float) -> torch.Tensor:
    """A (1, 1, N, 1, 1) tensor holding one value per frame."""
    return torch.tensor(values, dtype=torch.float32).view(1, 1, -1, 1, 1)


def path_laplacian(e: torch.Tensor) -> torch.Tensor:
    """Path-graph Laplacian over the frame axis (dim 2) of a (b, c, f, h, w) tensor."""
    lap = torch.zeros_like(e)
    lap[:, :, :-1] += e[:, :, :-1] - e[:, :, 1:]
    lap[:, :, 1:] += e[:, :, 1:] - e[:, :, :-1]
    return lap


shapes = st.tuples(
    st.integers(1, 3), st.integers(1, 3), st.integers(1, 6), st.integers(1, 4), st.integers(1, 4)
)
weights = st.floats(0.0, 3.0, allow_nan=False)


def random_pair(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


@pytest.mark.parametrize("chain", ["adjacent", "anchored"])
def test_zero_for_perfect_prediction(chain):
    noise = torch.randn(2, 4, 5, 3, 3)
    assert inr_smoothing_loss(noise.clone(), noise, chain=chain) == 0


@pytest.mark.parametrize("chain", ["adjacent", "anchored"])
def test_zero_for_error_constant_over_frames(chain):
    noise = torch.randn(2, 4, 5, 3, 3)
    error = torch.randn(2, 4, 1, 3, 3).expand_as(noise)
    loss = inr_smoothing_loss(noise + error, noise, chain=chain)
    assert float(loss) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    "values, chain, expected_per_direction",
    [
        ((0, 1, 0), "adjacent", 1.0),  # spec: [0, 1, 0] -> alpha + beta
        ((0, 1, 2), "adjacent", 1.0),  # spec: [0, 1, 2] -> alpha + beta
        ((0, 1), "adjacent", 1.0),  # spec: N = 2, [0, 1] -> alpha + beta
        ((0, 1, 2), "anchored", 2.5),  # ((0-2)^2 + (1-2)^2) / 2, ((1-0)^2 + (2-0)^2) / 2
    ],
)
@pytest.mark.parametrize("alpha, beta", [(0.5, 0.5), (0.3, 0.9), (1.0, 0.0)])
def test_worked_values(values, chain, expected_per_direction, alpha, beta):
    pred = frames(*values)
    loss, last_to_first, first_to_last = inr_smoothing_loss(
        pred, torch.zeros_like(pred), alpha=alpha, beta=beta, chain=chain, return_terms=True
    )
    assert float(last_to_first) == pytest.approx(expected_per_direction)
    assert float(first_to_last) == pytest.approx(expected_per_direction)
    assert float(loss) == pytest.approx((alpha + beta) * expected_per_direction)


def test_directional_terms_differ_under_anchored_chain():
    pred = frames(0, 3, 1, 1)
    _, l2f, f2l = inr_smoothing_loss(
        pred, torch.zeros_like(pred), chain="anchored", return_terms=True
    )
    assert float(l2f) == pytest.approx((1 + 4 + 0) / 3)  # vs the last frame (1)
    assert float(f2l) == pytest.approx((9 + 1 + 1) / 3)  # vs the first frame (0)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, alpha=weights, beta=weights, seed=st.integers(0, 2**16))
def test_nonnegative_and_reversal_swaps_alpha_beta(shape, alpha, beta, seed):
    pred, noise = random_pair(shape, seed)
    for chain in ("adjacent", "anchored"):
        loss = inr_smoothing_loss(pred, noise, alpha=alpha, beta=beta, chain=chain)
        flipped = inr_smoothing_loss(
            pred.flip(2), noise.flip(2), alpha=beta, beta=alpha, chain=chain
        )
        assert float(loss) >= 0
        torch.testing.assert_close(loss, flipped, rtol=1e-5, atol=1e-6)
    # under "adjacent" both terms hold the same pairs, so reversal alone leaves the value
    adjacent = inr_smoothing_loss(pred, noise, alpha=alpha, beta=beta)
    reversed_ = inr_smoothing_loss(pred.flip(2), noise.flip(2), alpha=alpha, beta=beta)
    torch.testing.assert_close(adjacent, reversed_, rtol=1e-5, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, k=st.floats(-4, 4, allow_nan=False), seed=st.integers(0, 2**16))
def test_quadratic_scaling(shape, k, seed):
    pred, noise = random_pair(shape, seed)
    for chain in ("adjacent", "anchored"):
        base = inr_smoothing_loss(pred, noise, chain=chain)
        scaled = inr_smoothing_loss(k * pred, k * noise, chain=chain)
        torch.testing.assert_close(scaled, k**2 * base, rtol=1e-4, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, alpha=weights, beta=weights, seed=st.integers(0, 2**16))
def test_gradient_is_scaled_path_laplacian(shape, alpha, beta, seed):
    pred, noise = random_pair(shape, seed)
    pred.requires_grad_(True)
    inr_smoothing_loss(pred, noise, alpha=alpha, beta=beta).backward()
    b, c, n, h, w = shape
    if n == 1:
        assert torch.equal(pred.grad, torch.zeros_like(pred))
        return
    m = b * c * (n - 1) * h * w
    expected = 2 * (alpha + beta) / m * path_laplacian((pred - noise).detach())
    torch.testing.assert_close(pred.grad, expected, rtol=1e-4, atol=1e-6)


def test_detach_anchor_keeps_value_and_makes_each_direction_one_way():
    pred, noise = random_pair((2, 3, 5, 2, 2), 0)
    alpha, beta = 0.7, 0.2
    pred.requires_grad_(True)
    plain = inr_smoothing_loss(pred, noise, alpha=alpha, beta=beta)
    detached = inr_smoothing_loss(pred, noise, alpha=alpha, beta=beta, detach_anchor=True)
    torch.testing.assert_close(plain, detached)
    (grad,) = torch.autograd.grad(detached, pred)
    e = (pred - noise).detach()
    m = 2 * 3 * 4 * 2 * 2
    expected = torch.zeros_like(e)
    expected[:, :, :-1] += alpha * (e[:, :, :-1] - e[:, :, 1:])  # last->first: anchor n+1
    expected[:, :, 1:] += beta * (e[:, :, 1:] - e[:, :, :-1])  # first->last: anchor n-1
    torch.testing.assert_close(grad, 2 / m * expected, rtol=1e-5, atol=1e-7)
    # first frame is only ever an anchor of first->last, so beta alone cannot move it
    (grad_beta,) = torch.autograd.grad(
        inr_smoothing_loss(pred, noise, alpha=0.0, beta=1.0, detach_anchor=True), pred
    )
    assert torch.equal(grad_beta[:, :, 0], torch.zeros_like(grad_beta[:, :, 0]))


def test_detach_anchor_under_anchored_chain_stops_gradient_at_the_ends():
    pred, noise = random_pair((1, 2, 4, 2, 2), 1)
    pred.requires_grad_(True)
    loss = inr_smoothing_loss(pred, noise, chain="anchored", detach_anchor=True)
    (grad,) = torch.autograd.grad(loss, pred)
    # frame 0 appears only as a compared frame of last->first and as anchor of first->last;
    # frame N-1 likewise mirrored: each gets exactly one non-detached contribution
    e = (pred - noise).detach()
    m = 1 * 2 * 3 * 2 * 2
    torch.testing.assert_close(grad[:, :, 0], 0.5 * 2 / m * (e[:, :, 0] - e[:, :, -1]))
    torch.testing.assert_close(grad[:, :, -1], 0.5 * 2 / m * (e[:, :, -1] - e[:, :, 0]))


def test_batch_loss_is_mean_of_per_sample_losses():
    pred, noise = random_pair((3, 2, 4, 3, 3), 2)
    per_sample = inr_smoothing_loss(pred, noise, reduction="none")
    assert per_sample.shape == (3,)
    for i in range(3):
        torch.testing.assert_close(
            per_sample[i], inr_smoothing_loss(pred[i : i + 1], noise[i : i + 1])
        )
    torch.testing.assert_close(inr_smoothing_loss(pred, noise), per_sample.mean())


@pytest.mark.parametrize("reduction, shape", [("mean", ()), ("none", (2,))])
def test_single_frame_is_connected_exact_zero(reduction, shape):
    pred = torch.randn(2, 4, 1, 3, 3, requires_grad=True)
    loss = inr_smoothing_loss(pred, torch.randn(2, 4, 1, 3, 3), reduction=reduction)
    assert loss.shape == shape and torch.equal(loss, torch.zeros(shape))
    loss.sum().backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))
    terms = inr_smoothing_loss(pred, torch.zeros_like(pred), return_terms=True)
    assert all(float(t.detach()) == 0 for t in terms)


def test_gradient_flows_to_noise_pred_only():
    pred = torch.randn(1, 2, 3, 2, 2, requires_grad=True)
    noise = torch.randn(1, 2, 3, 2, 2, requires_grad=True)
    inr_smoothing_loss(pred, noise).backward()
    assert pred.grad is not None and noise.grad is None


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_computes_in_float32(dtype):
    pred, noise = random_pair((1, 2, 4, 3, 3), 3)
    low_pred, low_noise = pred.to(dtype), noise.to(dtype)
    loss = inr_smoothing_loss(low_pred, low_noise)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, inr_smoothing_loss(low_pred.float(), low_noise.float()))


def test_frame_dim_selects_the_frame_axis():
    pred, noise = random_pair((2, 3, 5, 4, 4), 4)
    expected = inr_smoothing_loss(pred, noise, alpha=0.2, beta=0.6)
    b_f_c = inr_smoothing_loss(
        pred.transpose(1, 2), noise.transpose(1, 2), alpha=0.2, beta=0.6, frame_dim=1
    )
    torch.testing.assert_close(b_f_c, expected)


def test_lambda_zero_gives_the_plain_diffusion_loss_exactly():
    pred, noise = random_pair((1, 4, 6, 4, 4), 5)
    diffusion = torch.nn.functional.mse_loss(pred, noise)
    assert torch.equal(diffusion + 0.0 * inr_smoothing_loss(pred, noise), diffusion)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(1, 4, 3, 2, 2\).*\(1, 4, 2, 2, 2\)"):
        inr_smoothing_loss(torch.zeros(1, 4, 3, 2, 2), torch.zeros(1, 4, 2, 2, 2))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alpha": -0.1}, "alpha"),
        ({"beta": float("nan")}, "beta"),
        ({"chain": "circular"}, "chain"),
        ({"reduction": "sum"}, "reduction"),
        ({"frame_dim": 0}, "frame_dim"),
    ],
)
def test_bad_options_raise(kwargs, match):
    x = torch.zeros(1, 1, 3, 1, 1)
    with pytest.raises(ValueError, match=match):
        inr_smoothing_loss(x, x, **kwargs)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_are_reported(bad):
    pred = torch.zeros(1, 1, 3, 1, 1)
    pred[0, 0, 1] = bad
    with pytest.raises(ValueError, match="noise_pred contains NaN or inf"):
        inr_smoothing_loss(pred, torch.zeros_like(pred))
    with pytest.raises(ValueError, match="noise contains NaN or inf"):
        inr_smoothing_loss(torch.zeros_like(pred), pred)


def test_wrong_rank_is_rejected():
    with pytest.raises(ValueError, match=r"\(b, c, f, h, w\)"):
        inr_smoothing_loss(torch.zeros(4, 3, 8, 8), torch.zeros(4, 3, 8, 8))


def test_docstring_states_shapes_and_cites_the_paper():
    doc = inr_smoothing_loss.__doc__
    assert "(b, c, f, h, w)" in doc and "Eq 17" in doc and "Eq 18" in doc
