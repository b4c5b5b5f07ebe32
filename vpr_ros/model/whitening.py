"""PCA-whitening of global descriptors, fitted on descriptors and applied as a linear layer."""
import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


def fit_pca_whitening(descriptors: np.ndarray, dim: int, eps: float = 1e-6):
    """Mean (D,) and projection (dim, D) that whiten `descriptors` (N, D) into `dim` components.

    Uses the N×N Gram matrix when N < D (the NetVLAD trick), so 20k-dim descriptors are cheap.
    Only N − 1 components carry information: asking for more is an error, and fitting on few
    images gives a near-degenerate whitening (DESIGN.md §8), so fit on thousands when you can.
    """
    x = np.asarray(descriptors, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"descriptors must be (N, D), got shape {x.shape}")
    n, d = x.shape
    if not 0 < dim <= min(n - 1, d):
        raise ValueError(f"cannot fit {dim} whitened components from {n} descriptors of dim {d}: "
                         f"at most {min(n - 1, d)}; use more images or a smaller output dim")
    mean = x.mean(axis=0)
    xc = x - mean
    if n < d:
        eigval, eigvec = np.linalg.eigh(xc @ xc.T)
        order = np.argsort(eigval)[::-1][:dim]
        eigval, eigvec = eigval[order], eigvec[:, order]
        components = (xc.T @ eigvec) / np.sqrt(np.maximum(eigval, eps))   # (D, dim), unit columns
    else:
        eigval, components = np.linalg.eigh(xc.T @ xc)
        order = np.argsort(eigval)[::-1][:dim]
        eigval, components = eigval[order], components[:, order]
    variance = eigval / max(n - 1, 1)
    projection = components.T / np.sqrt(variance + eps)[:, None]
    return mean.astype(np.float32), projection.astype(np.float32)


class PCAWhitening(nn.Module):
    """y = L2(P (x − μ)): PCA-whitening to `out_dim` followed by L2 normalization."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim, bias=True)

    @property
    def output_dim(self) -> int:
        return self.linear.out_features

    @torch.no_grad()
    def set(self, mean: np.ndarray, projection: np.ndarray) -> None:
        """Load a fitted whitening (see `fit_pca_whitening`)."""
        p = torch.from_numpy(np.asarray(projection, dtype=np.float32))
        if tuple(p.shape) != tuple(self.linear.weight.shape):
            raise ValueError(f"projection shape {tuple(p.shape)} does not match the layer "
                             f"{tuple(self.linear.weight.shape)}")
        self.linear.weight.copy_(p)
        self.linear.bias.copy_(-p @ torch.from_numpy(np.asarray(mean, dtype=np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(x), p=2, dim=1)
