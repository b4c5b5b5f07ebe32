"""Off-the-shelf model construction: NetVLAD centers by k-means on sample images' local features."""
import logging
from typing import Iterable, Optional

import numpy as np
import torch
from tqdm import tqdm

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
    """Up to `per_image` random local features from each image (NetVLAD: 100 per image, 50k total)."""
    model.eval()

    def feature_sets():
        for image in tqdm(images, desc="local features", unit="img", leave=False):
            x = torch.from_numpy(preprocess(image, model.config.image_long_side))[None]
            yield model.local_features(x)[0].flatten(1).T.numpy()          # (h·w, D)

    return sample_rows(feature_sets(), per_image, max_features, seed)


def init_netvlad(model: VPRModel, images: Iterable[np.ndarray], seed: int = 0) -> float:
    """Initialize the model's NetVLAD centers from `images` (k-means); returns α."""
    features = sample_local_features(model, images, seed=seed)
    alpha = model.netvlad.init_from_features(features, seed=seed)
    LOG.info("NetVLAD initialized from %d local features (K=%d, alpha=%.1f)",
             len(features), model.netvlad.num_clusters, alpha)
    return alpha


def build_offtheshelf_model(images: Iterable[np.ndarray],
                            config: Optional[ModelConfig] = None, seed: int = 0) -> VPRModel:
    """Pretrained backbone + NetVLAD clustered on `images`: a usable model with no training."""
    model = build_model(config)
    init_netvlad(model, images, seed=seed)
    return model.eval()
