"""Metric-learning losses on L2-normalized embeddings: SARE (joint / individual), triplet, contrastive.

Shapes everywhere: query q (B, D), positive p (B, D), negatives n (B, N, D). Distances are
squared Euclidean, d_x = ‖q − x‖². Each loss returns the mean over the batch of the per-tuple
sum (as in the NetVLAD and SARE papers, where one tuple is one training example).

SARE (Liu et al., ICCV 2019) compares a kernel k(d) of the positive distance with those of the
negatives. Kernels are handled through log k(d) so that the softmax-like ratios are computed
with log-sum-exp / softplus and never overflow or divide by zero.
"""
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F

# √d has an infinite slope at d = 0; the exponential kernel takes √(d + eps) instead.
_SQRT_EPS = 1e-12


def _log_gaussian(d: torch.Tensor) -> torch.Tensor:
    return -d


def _log_cauchy(d: torch.Tensor) -> torch.Tensor:
    return -torch.log1p(d)


def _log_exponential(d: torch.Tensor) -> torch.Tensor:
    return -torch.sqrt(d + _SQRT_EPS)


LOG_KERNELS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gaussian": _log_gaussian,  # k = exp(−d)
    "cauchy": _log_cauchy,  # k = 1 / (1 + d)
    "exponential": _log_exponential,  # k = exp(−√d)
}


def _check_shapes(q: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> None:
    if q.dim() != 2 or p.shape != q.shape or n.dim() != 3 or n.shape[0] != q.shape[0] \
            or n.shape[2] != q.shape[1]:
        raise ValueError(f"expected q (B,D), p (B,D), n (B,N,D); got q {tuple(q.shape)}, "
                         f"p {tuple(p.shape)}, n {tuple(n.shape)}")


def squared_distances(q: torch.Tensor, p: torch.Tensor, n: torch.Tensor):
    """(d_p (B,), d_n (B, N)): squared Euclidean distances of the positive and each negative to q."""
    _check_shapes(q, p, n)
    d_p = (q - p).pow(2).sum(dim=1)
    d_n = (q.unsqueeze(1) - n).pow(2).sum(dim=2)
    return d_p, d_n


def _log_kernel(kernel: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if kernel not in LOG_KERNELS:
        raise ValueError(f"unknown SARE kernel {kernel!r}; choose one of {sorted(LOG_KERNELS)}")
    return LOG_KERNELS[kernel]


def sare_joint(q, p, n, kernel: str = "gaussian") -> torch.Tensor:
    """L = −log[k(d_p) / (k(d_p) + Σ_i k(d_ni))]: the positive competes with all negatives at once."""
    log_k = _log_kernel(kernel)
    d_p, d_n = squared_distances(q, p, n)
    log_kp = log_k(d_p)
    log_all = torch.cat([log_kp.unsqueeze(1), log_k(d_n)], dim=1)
    return (torch.logsumexp(log_all, dim=1) - log_kp).mean()


def sare_individual(q, p, n, kernel: str = "gaussian") -> torch.Tensor:
    """L = Σ_i −log[k(d_p) / (k(d_p) + k(d_ni))]: one two-way contest per negative.

    −log(a / (a + b)) = softplus(log b − log a), which stays finite for any distances.
    """
    log_k = _log_kernel(kernel)
    d_p, d_n = squared_distances(q, p, n)
    return F.softplus(log_k(d_n) - log_k(d_p).unsqueeze(1)).sum(dim=1).mean()


def triplet_ranking(q, p, n, margin: float = 0.1) -> torch.Tensor:
    """NetVLAD's ranking loss L = Σ_i max(0, m + d_p − d_ni)."""
    d_p, d_n = squared_distances(q, p, n)
    return F.relu(margin + d_p.unsqueeze(1) - d_n).sum(dim=1).mean()


def contrastive(q, p, n, margin: float = 0.7) -> torch.Tensor:
    """Contrastive loss L = ½ d_p + ½ Σ_i max(0, τ − ‖q − n_i‖)², τ = `margin`.

    The positive is pulled in; negatives are pushed out until their (unsquared) distance exceeds τ.
    """
    d_p, d_n = squared_distances(q, p, n)
    push = F.relu(margin - torch.sqrt(d_n + _SQRT_EPS)).pow(2).sum(dim=1)
    return (0.5 * d_p + 0.5 * push).mean()


LOSSES = ("sare_joint", "sare_individual", "triplet", "contrastive")


def build_loss(name: str, kernel: str = "gaussian", margin: Optional[float] = None):
    """The loss `name` as a function (q, p, n) → scalar.

    `kernel` applies to SARE; `margin` to triplet (default 0.1) and contrastive (default 0.7).
    """
    if name == "sare_joint":
        _log_kernel(kernel)
        return lambda q, p, n: sare_joint(q, p, n, kernel)
    if name == "sare_individual":
        _log_kernel(kernel)
        return lambda q, p, n: sare_individual(q, p, n, kernel)
    if name == "triplet":
        m = 0.1 if margin is None else margin
        return lambda q, p, n: triplet_ranking(q, p, n, m)
    if name == "contrastive":
        m = 0.7 if margin is None else margin
        return lambda q, p, n: contrastive(q, p, n, m)
    raise ValueError(f"unknown loss {name!r}; choose one of {list(LOSSES)}")
