"""NetVLAD pooling (Arandjelović et al., CVPR 2016) with k-means initialization."""
import math

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


class NetVLAD(nn.Module):
    """Soft-assignment VLAD: (B, D, H, W) local features → (B, K·D) L2-normalized descriptor.

    a_k(x_i) = softmax_k(w_k·x_i + b_k); V_k = Σ_i a_k(x_i)(x_i − c_k); each V_k is
    intra-normalized, then the flattened vector is L2-normalized. Local features are
    L2-normalized first, as in the paper's implementation.
    """

    def __init__(self, num_clusters: int = 64, dim: int = 320):
        super().__init__()
        self.num_clusters = num_clusters
        self.dim = dim
        self.assign = nn.Conv2d(dim, num_clusters, kernel_size=1, bias=True)
        self.centroids = nn.Parameter(torch.rand(num_clusters, dim))

    @property
    def output_dim(self) -> int:
        return self.num_clusters * self.dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x, p=2, dim=1)
        soft_assign = F.softmax(self.assign(x).flatten(2), dim=1)          # (B, K, N)
        x_flat = x.flatten(2)                                               # (B, D, N)
        # Σ_i a_k(x_i) x_i − c_k Σ_i a_k(x_i), as two matrix products (no (B,K,D,N) tensor).
        vlad = torch.bmm(soft_assign, x_flat.transpose(1, 2))               # (B, K, D)
        vlad = vlad - soft_assign.sum(dim=2, keepdim=True) * self.centroids.unsqueeze(0)
        vlad = F.normalize(vlad, p=2, dim=2)
        return F.normalize(vlad.flatten(1), p=2, dim=1)

    @torch.no_grad()
    def init_from_features(self, features: np.ndarray, seed: int = 0, niter: int = 50) -> float:
        """Set centroids by FAISS k-means on local features (N, D); returns the chosen α.

        w_k = 2α c_k and b_k = −α‖c_k‖², with α such that, on average, the nearest centroid gets
        100× the weight of the second nearest (α = −log(0.01) / mean(d₂² − d₁²)), as NetVLAD does.
        """
        import faiss

        features = np.ascontiguousarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"expected local features of shape (N, {self.dim}), got {features.shape}")
        if features.shape[0] < self.num_clusters * 4:
            raise ValueError(f"{features.shape[0]} local features are too few to fit "
                             f"{self.num_clusters} clusters; use more or larger images")
        features /= np.linalg.norm(features, axis=1, keepdims=True) + 1e-12
        kmeans = faiss.Kmeans(self.dim, self.num_clusters, niter=niter, seed=seed, verbose=False,
                              max_points_per_centroid=100_000)
        kmeans.train(features)
        centroids = kmeans.centroids
        dist_sq, _ = kmeans.index.search(features, 2)
        gap = float(np.mean(dist_sq[:, 1] - dist_sq[:, 0]))
        alpha = -math.log(0.01) / max(gap, 1e-6)
        self.centroids.copy_(torch.from_numpy(centroids))
        self.assign.weight.copy_(torch.from_numpy(2.0 * alpha * centroids)[:, :, None, None])
        self.assign.bias.copy_(torch.from_numpy(-alpha * np.sum(centroids ** 2, axis=1)))
        return alpha
