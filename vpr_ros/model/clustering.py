"""Off-the-shelf model construction from sample (map) images: PCA of the local features into the
1×1 reduction, then NetVLAD centers by k-means on the reduced features."""
import logging
from typing import Iterable, Optional

import numpy as np
import torch
from tqdm import tqdm

from vpr_ros.model.local_pca import fit_local_pca, project, set_projection
from vpr_ros.model.vpr_model import ModelConfig, VPRModel, build_model
from vpr_ros.runtime.preprocess import preprocess

LOG = logging.getLogger(__name__)


def sample_rows(feature_sets: Iterable[np.ndarray], per_image: int = 100,
                max_features: int = 50_000, seed: int = 0) -> np.ndarray:
    """Up to `per_image` random rows of each image's (h·w, D) features, `max_features` in all.

    Split from `sample_local_features` so benchmarks that already hold the features cluster on
    exactly the rows the off-the-shelf model would.
    """
    rng = np.random.default_rng(seed)
    chunks, total = [], 0
    for feats in feature_sets:
        take = rng.choice(len(feats), size=min(per_image, len(feats)), replace=False)
        chunks.append(feats[take])
        total += len(take)
        if total >= max_features:
            break
    if not chunks:
        raise ValueError("no images to sample local features from")
    return np.concatenate(chunks)[:max_features]


@torch.no_grad()
def sample_local_features(model: VPRModel, images: Iterable[np.ndarray], per_image: int = 100,
                          max_features: int = 50_000, seed: int = 0) -> np.ndarray:
    """Up to `per_image` random backbone features (before the reduction) from each image
    (NetVLAD: 100 per image, 50k total)."""
    model.eval()

    def feature_sets():
        for image in tqdm(images, desc="local features", unit="img", leave=False):
            x = torch.from_numpy(preprocess(image, model.config.image_long_side))[None]
            yield model.backbone(x)[0].flatten(1).T.numpy()                # (h·w, C)

    return sample_rows(feature_sets(), per_image, max_features, seed)


def init_netvlad(model: VPRModel, images: Iterable[np.ndarray], seed: int = 0) -> float:
    """Fit the reduction (PCA of local features, when the config has `reduce_dim`) and the
    NetVLAD centers (k-means on the reduced features) to `images`; returns α."""
    features = sample_local_features(model, images, seed=seed)
    if model.reduce is not None:
        mean, projection = fit_local_pca(features, model.config.reduce_dim)
        set_projection(model.reduce, mean, projection)
        features = project(features, mean, projection)
    alpha = model.netvlad.init_from_features(features, seed=seed)
    LOG.info("NetVLAD initialized from %d local features (K=%d, alpha=%.1f)",
             len(features), model.netvlad.num_clusters, alpha)
    return alpha


def build_offtheshelf_model(images: Iterable[np.ndarray],
                            config: Optional[ModelConfig] = None, seed: int = 0) -> VPRModel:
    """Pretrained backbone + local PCA and NetVLAD fitted to `images`: a model with no training."""
    model = build_model(config)
    init_netvlad(model, images, seed=seed)
    return model.eval()
