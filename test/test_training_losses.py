"""SARE / triplet / contrastive losses against values worked out by hand, and SARE gradients."""
import math

import pytest
import torch

from training.losses import (LOG_KERNELS, build_loss, contrastive, sare_individual, sare_joint,
                             triplet_ranking)

# One tuple with known squared distances: d_p = 0.4, d_n = (2.0, 0.02).
Q = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
P = torch.tensor([[0.8, 0.6]], dtype=torch.float64)
N = torch.tensor([[[0.0, 1.0], [0.9, -0.1]]], dtype=torch.float64)
D_P, D_N = 0.4, (2.0, 0.02)

KERNELS = {
    "gaussian": lambda d: math.exp(-d),
    "cauchy": lambda d: 1.0 / (1.0 + d),
    "exponential": lambda d: math.exp(-math.sqrt(d)),
}


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_sare_joint_matches_hand_value(kernel):
    k = KERNELS[kernel]
    expected = -math.log(k(D_P) / (k(D_P) + sum(k(d) for d in D_N)))
    assert sare_joint(Q, P, N, kernel).item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_sare_individual_matches_hand_value(kernel):
    k = KERNELS[kernel]
    expected = sum(-math.log(k(D_P) / (k(D_P) + k(d))) for d in D_N)
    assert sare_individual(Q, P, N, kernel).item() == pytest.approx(expected, rel=1e-9)


def test_triplet_sums_hinges_over_negatives():
    # max(0, 0.1 + 0.4 − 2.0) + max(0, 0.1 + 0.4 − 0.02) = 0 + 0.48
    assert triplet_ranking(Q, P, N, margin=0.1).item() == pytest.approx(0.48, rel=1e-9)


def test_contrastive_matches_hand_value():
    expected = 0.5 * D_P + 0.5 * sum(max(0.0, 0.7 - math.sqrt(d)) ** 2 for d in D_N)
    assert contrastive(Q, P, N, margin=0.7).item() == pytest.approx(expected, rel=1e-6)


def test_losses_average_over_the_batch():
    q, p, n = torch.cat([Q, -Q]), torch.cat([P, -P]), torch.cat([N, -N])
    for name in ("sare_joint", "sare_individual", "triplet", "contrastive"):
        loss = build_loss(name)
        assert loss(q, p, n).item() == pytest.approx(loss(Q, P, N).item(), rel=1e-9)


def test_sare_individual_gaussian_gradient_matches_closed_form():
    """SARE paper: ∂L/∂p = −2(1−c)(q−p), ∂L/∂n = 2(1−c)(q−n), c = k(d_p) / (k(d_p) + k(d_n))."""
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(1, 5, dtype=torch.float64), dim=1)
    p = torch.nn.functional.normalize(torch.randn(1, 5, dtype=torch.float64), dim=1).requires_grad_()
    n = torch.nn.functional.normalize(torch.randn(1, 1, 5, dtype=torch.float64), dim=2)
    n.requires_grad_()
    sare_individual(q, p, n, "gaussian").backward()
    d_p = ((q - p) ** 2).sum().detach()
    d_n = ((q - n[0]) ** 2).sum().detach()
    c = torch.exp(-d_p) / (torch.exp(-d_p) + torch.exp(-d_n))
    torch.testing.assert_close(p.grad, -2 * (1 - c) * (q - p.detach()))
    torch.testing.assert_close(n.grad[0], 2 * (1 - c) * (q - n.detach()[0]))


@pytest.mark.parametrize("kernel", sorted(LOG_KERNELS))
def test_sare_stays_finite_for_far_apart_embeddings(kernel):
    q = torch.zeros(1, 2, requires_grad=True)
    p = torch.full((1, 2), 100.0)           # d_p = 20000: k(d_p) underflows to 0 in float32
    n = torch.zeros(1, 3, 2)
    for loss in (sare_joint(q, p, n, kernel), sare_individual(q, p, n, kernel)):
        assert torch.isfinite(loss)
        (grad,) = torch.autograd.grad(loss, q)
        assert torch.isfinite(grad).all()


def test_bad_shapes_and_names_are_refused():
    with pytest.raises(ValueError, match="expected q"):
        sare_joint(Q, P, N[0])
    with pytest.raises(ValueError, match="unknown SARE kernel"):
        build_loss("sare_joint", kernel="laplace")
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("arcface")
