"""PCA of local features, fitted on map images and applied as the 1×1 reduction before NetVLAD.

A NetVLAD descriptor is K·D: shrinking the D local channels shrinks it K times. Every image gives
h·w local features, so a few dozen images fit a D-component PCA well, where a global PCA of
K·D-dimensional descriptors needs more images than a map usually has (docs/results.md "Compact
descriptors", bench/descriptor_size.py).
"""
import numpy as np
import torch
from torch import nn


def fit_local_pca(features: np.ndarray, dim: int):
    """Mean (C,) and projection (dim, C) onto the top `dim` principal axes of (N, C) features."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or not 0 < dim <= x.shape[1]:
        raise ValueError(f"cannot fit {dim} PCA components to local features of shape {x.shape}")
    if x.shape[0] <= dim:
        raise ValueError(f"{x.shape[0]} local features are too few for {dim} PCA components; "
                         f"use more or larger images")
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean.astype(np.float32), vt[:dim].astype(np.float32)


@torch.no_grad()
def set_projection(conv: nn.Conv2d, mean: np.ndarray, projection: np.ndarray) -> None:
    """Make the 1×1 `conv` compute P (x − μ)."""
    p = torch.from_numpy(np.asarray(projection, dtype=np.float32))
    if tuple(p.shape) != (conv.out_channels, conv.in_channels):
        raise ValueError(f"projection shape {tuple(p.shape)} does not match the reduction "
                         f"{conv.in_channels} → {conv.out_channels}")
    conv.weight.copy_(p[:, :, None, None])
    conv.bias.copy_(-p @ torch.from_numpy(np.asarray(mean, dtype=np.float32)))


def project(features: np.ndarray, mean: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """(N, dim) projected rows of (N, C) features, as the fitted conv computes them."""
    return ((np.asarray(features, np.float32) - mean) @ projection.T).astype(np.float32)
