"""INR(TF): the properties of inr_inversion_noise listed in spec §5."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from inr_smooth.relations import inr_inversion_noise


def frames(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, 1, -1, 1, 1)


shapes = st.tuples(
    st.integers(1, 2), st.integers(1, 3), st.integers(1, 6), st.integers(1, 3), st.integers(1, 3)
)


def pair(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def test_gamma_zero_is_the_identity_bit_for_bit():
    eps_inv, rho = pair((1, 4, 5, 3, 3), 0)
    assert torch.equal(inr_inversion_noise(eps_inv, rho, gamma=0.0), eps_inv)


@pytest.mark.parametrize(
    "eps_inv, rho, gamma, expected",
    [
        ((1, 2, 3), (0, 0, 0), 1.0, (1.5, 2.0, 2.5)),
        ((1, 2, 3), (0, 0, 0), 0.5, (1.25, 2.0, 2.75)),
        ((0, 0, 0), (0, 1, 0), 1.0, (-0.5, 1.0, -0.5)),
    ],
)
def test_worked_values(eps_inv, rho, gamma, expected):
    out = inr_inversion_noise(frames(*eps_inv), frames(*rho), gamma=gamma)
    torch.testing.assert_close(out, frames(*expected))


def test_anchored_chain_worked_values():
    # eps_f^n = eps_inv^0 + rho^n - rho^0 = 1 ; eps_b^n = eps_inv^2 + rho^n - rho^2 = 3
    out = inr_inversion_noise(frames(1, 2, 3), frames(0, 0, 0), gamma=1.0, chain="anchored")
    torch.testing.assert_close(out, frames(2, 2, 2))
    out = inr_inversion_noise(
        frames(1, 2, 3), frames(0, 5, 1), gamma=1.0, chain="anchored", alpha=0.0, beta=1.0
    )
    torch.testing.assert_close(out, frames(1, 6, 2))  # first->last only: 1 + rho^n - 0


def test_adjacent_chains_one_way():
    # beta alone: eps_f^n = eps_inv^(n-1) + rho^n - rho^(n-1), seed eps_f^0 = eps_inv^0
    out = inr_inversion_noise(frames(1, 2, 4), frames(0, 1, 3), gamma=1.0, alpha=0.0, beta=2.0)
    torch.testing.assert_close(out, frames(1, 1 + 1 - 0, 2 + 3 - 1))
    # alpha alone: eps_b^n = eps_inv^(n+1) + rho^n - rho^(n+1), seed eps_b^(N-1) = eps_inv^(N-1)
    out = inr_inversion_noise(frames(1, 2, 4), frames(0, 1, 3), gamma=1.0, alpha=1.0, beta=0.0)
    torch.testing.assert_close(out, frames(2 + 0 - 1, 4 + 1 - 3, 4))


@settings(max_examples=40, deadline=None)
@given(
    shape=shapes,
    seed=st.integers(0, 2**16),
    gamma=st.floats(0, 1),
    chain=st.sampled_from(["adjacent", "anchored"]),
)
def test_identity_when_inversion_minus_random_noise_is_constant_over_frames(
    shape, seed, gamma, chain
):
    rho, offset = pair(shape, seed)
    offset = offset[:, :, :1].expand(shape)  # the same in every frame
    eps_inv = rho + offset
    out = inr_inversion_noise(eps_inv, rho, gamma=gamma, chain=chain)
    torch.testing.assert_close(out, eps_inv, rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    shape=shapes,
    seed=st.integers(0, 2**16),
    gamma=st.floats(0, 1),
    alpha=st.floats(0.01, 2),
    beta=st.floats(0, 2),
    chain=st.sampled_from(["adjacent", "anchored"]),
)
def test_linear_in_gamma_and_reversal_swaps_alpha_beta(shape, seed, gamma, alpha, beta, chain):
    eps_inv, rho = pair(shape, seed)
    kw = {"alpha": alpha, "beta": beta, "chain": chain}
    at0 = inr_inversion_noise(eps_inv, rho, gamma=0.0, **kw)
    at1 = inr_inversion_noise(eps_inv, rho, gamma=1.0, **kw)
    out = inr_inversion_noise(eps_inv, rho, gamma=gamma, **kw)
    torch.testing.assert_close(out, (1 - gamma) * at0 + gamma * at1, rtol=1e-5, atol=1e-5)
    mirrored = inr_inversion_noise(
        eps_inv.flip(2), rho.flip(2), gamma=gamma, alpha=beta, beta=alpha, chain=chain
    ).flip(2)
    torch.testing.assert_close(out, mirrored, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gamma", [0.0, 0.3, 1.0])
def test_single_frame_returns_inversion_noise(gamma):
    eps_inv, rho = pair((2, 4, 1, 3, 3), 1)
    assert torch.equal(inr_inversion_noise(eps_inv, rho, gamma=gamma), eps_inv)


def test_interior_variance_is_about_two_with_gaussian_noise():
    eps_inv, rho = pair((1, 4, 6, 64, 64), 2)
    out = inr_inversion_noise(eps_inv, rho, gamma=1.0)
    assert float(out[:, :, 1:-1].var()) == pytest.approx(2.0, rel=0.05)
    # frame 0: (eps_inv^0 + eps_inv^1 + rho^0 - rho^1) / 2, four unit variances / 4
    assert float(out[:, :, 0].var()) == pytest.approx(1.0, rel=0.05)


def test_dtype_and_frame_dim_are_respected():
    eps_inv, rho = pair((1, 5, 4, 3, 3), 3)  # (b, f, c, h, w)
    expected = inr_inversion_noise(eps_inv.transpose(1, 2), rho.transpose(1, 2), gamma=0.7)
    out = inr_inversion_noise(eps_inv, rho, gamma=0.7, frame_dim=1)
    torch.testing.assert_close(out, expected.transpose(1, 2))
    half = inr_inversion_noise(eps_inv.half(), rho.half(), gamma=0.7, frame_dim=1)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), out, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"gamma": 1.5}, r"gamma .*\[0, 1\]"),
        ({"gamma": -0.1}, r"gamma .*\[0, 1\]"),
        ({"gamma": 0.5, "alpha": -1.0}, "alpha"),
        ({"gamma": 0.5, "alpha": 0.0, "beta": 0.0}, "alpha \\+ beta"),
        ({"gamma": 0.5, "chain": "nope"}, "chain"),
    ],
)
def test_bad_arguments(kwargs, match):
    x = torch.zeros(1, 1, 3, 1, 1)
    with pytest.raises(ValueError, match=match):
        inr_inversion_noise(x, x, **kwargs)


def test_shape_mismatch_and_non_finite_inputs():
    with pytest.raises(ValueError, match=r"\(1, 1, 3, 1, 1\).*\(1, 1, 4, 1, 1\)"):
        inr_inversion_noise(torch.zeros(1, 1, 3, 1, 1), torch.zeros(1, 1, 4, 1, 1), gamma=1.0)
    with pytest.raises(ValueError, match="random_noise contains NaN or inf"):
        inr_inversion_noise(frames(0, 0, 0), frames(0, float("inf"), 0), gamma=1.0)
