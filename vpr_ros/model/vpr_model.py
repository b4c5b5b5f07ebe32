"""The place-recognition network: backbone → (1×1 reduction, local PCA) → NetVLAD → (PCA-whitening) → L2."""
from dataclasses import asdict, dataclass, field, fields
from typing import Optional

import hashlib
import json

import torch
from torch import nn

from vpr_ros.model.backbones import create_backbone
from vpr_ros.model.netvlad import NetVLAD
from vpr_ros.model.whitening import PCAWhitening

MAX_VLAD_DIM = 32768


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network (weights aside). Stored in every checkpoint."""

    # Default: EfficientNet-Lite2 cut at block 16 (208 ch, stride 32), the best mean R@1 on
    # validation data (Gardens Point places 0-99, Nordland) within 40 ms/frame (bench/backbones.py).
    backbone: str = "efficientnet_lite2"
    backbone_weights: Optional[str] = None      # None: the packaged ImageNet weights (Lite only)
    backbone_kwargs: dict = field(default_factory=lambda: {"feature_block": 16})
    # 1×1 conv before NetVLAD: PCA of the local features when fitted off the shelf, learned in
    # training. 208 → 64 channels with K = 32 gives 2048-D, 2 KB per keyframe in a sq8 map, the
    # 2 KB variant closest to the uncompressed model on validation, single image and sequences
    # (bench/descriptor_size.py); None keeps every channel.
    reduce_dim: Optional[int] = 64
    num_clusters: int = 32
    whitening_dim: Optional[int] = None         # set once PCA-whitening is fitted
    image_long_side: int = 320                  # preprocessing: long side (320 beat 640 at night)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)


class VPRModel(nn.Module):
    """Float RGB in [0, 1], shape (B, 3, H, W) with H, W multiples of 32 → (B, dim) L2-normalized."""

    def __init__(self, config: ModelConfig, pretrained: bool = True):
        super().__init__()
        self.config = config
        self.backbone = create_backbone(config.backbone, config.backbone_weights,
                                        pretrained=pretrained, **config.backbone_kwargs)
        channels = self.backbone.out_channels
        self.reduce = None
        if config.reduce_dim:
            if config.reduce_dim >= channels:
                raise ValueError(f"reduce_dim {config.reduce_dim} does not reduce the "
                                 f"{channels}-channel {config.backbone} cut; set reduce_dim below "
                                 f"{channels}, or null to keep every channel")
            self.reduce = nn.Conv2d(channels, config.reduce_dim, kernel_size=1)
            channels = config.reduce_dim
        if config.num_clusters * channels > MAX_VLAD_DIM:
            raise ValueError(f"NetVLAD would be {config.num_clusters}×{channels} = "
                             f"{config.num_clusters * channels} dims (> {MAX_VLAD_DIM}); "
                             f"set reduce_dim or fewer clusters")
        self.netvlad = NetVLAD(config.num_clusters, channels)
        self.whitening = None
        if config.whitening_dim:
            self.whitening = PCAWhitening(self.netvlad.output_dim, config.whitening_dim)

    @property
    def output_dim(self) -> int:
        return self.whitening.output_dim if self.whitening else self.netvlad.output_dim

    def local_features(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """(B, D, h, w) features that NetVLAD pools; `start` as in `forward_from`. Images go through
        the backbone module itself, so the ONNX export names its nodes `/backbone/...`."""
        features = self.backbone(x) if start == 0 else self.backbone.run_trunk(x, start)
        return self.reduce(features) if self.reduce is not None else features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from(x, 0)

    def forward_from(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Descriptors from `x`, the output of backbone trunk module `start` - 1 (the images when
        `start` is 0): training feeds the cached outputs of its frozen layers."""
        descriptor = self.netvlad(self.local_features(x, start))
        return self.whitening(descriptor) if self.whitening is not None else descriptor

    def set_whitening(self, mean, projection) -> None:
        """Attach a fitted PCA-whitening (see `fit_pca_whitening`); updates the config."""
        self.whitening = PCAWhitening(self.netvlad.output_dim, projection.shape[0])
        self.whitening.set(mean, projection)
        self.config.whitening_dim = int(projection.shape[0])

    def fingerprint(self) -> str:
        """16-hex-digit hash of the config and every weight: maps and engines are keyed by it."""
        digest = hashlib.sha256(json.dumps(self.config.to_dict(), sort_keys=True).encode())
        for name, tensor in sorted(self.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]


def build_model(config: Optional[ModelConfig] = None, pretrained: bool = True) -> VPRModel:
    """A model with pretrained backbone and an uninitialized NetVLAD (see `init_netvlad`)."""
    return VPRModel(config or ModelConfig(), pretrained=pretrained)
