"""One-file checkpoints: config, weights, PCA-whitening and a fingerprint, saved atomically."""
from pathlib import Path
from typing import Optional

import torch

from vpr_ros.io.atomic import atomic_path
from vpr_ros.model.vpr_model import ModelConfig, VPRModel

FORMAT = "vpr_ros.checkpoint"
VERSION = 1


def save_checkpoint(path, model: VPRModel, extra: Optional[dict] = None) -> str:
    """Write `model` to `path` (temp file, then rename) and return its fingerprint.

    `extra` holds JSON-like metadata (training epoch, recall, dataset) kept beside the weights.
    """
    fingerprint = model.fingerprint()
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config.to_dict(),
        "state_dict": model.state_dict(),
        "fingerprint": fingerprint,
        "extra": extra or {},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, str(tmp))
    return fingerprint


def read_checkpoint(path) -> dict:
    """The raw checkpoint dict, after checking that it is one of ours and of a known version."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model checkpoint not found: {path}")
    try:
        payload = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        # torch's own message spans many lines and suggests weights_only=False (unsafe): one
        # line naming the file and the error type is what a user needs.
        raise ValueError(f"{path} is not a vpr_ros checkpoint (torch cannot read it as weights: "
                         f"{type(err).__name__}); create one with `vpr-ros eval --save-model` "
                         f"or training") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a vpr_ros checkpoint (no '{FORMAT}' header)")
    if payload.get("version") != VERSION:
        raise ValueError(f"{path} is checkpoint version {payload.get('version')}, this vpr_ros "
                         f"reads version {VERSION}; re-export it with a matching vpr_ros")
    return payload


def load_checkpoint(path, with_extra: bool = False):
    """Rebuild the model saved at `path`; verifies the stored fingerprint.

    Returns the model in eval mode, or `(model, extra)` when `with_extra` is set.
    """
    payload = read_checkpoint(path)
    model = VPRModel(ModelConfig.from_dict(payload["config"]), pretrained=False)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {path} does not match its own config: {err}") from err
    if model.fingerprint() != payload["fingerprint"]:
        raise ValueError(f"checkpoint {path} is corrupt: fingerprint {model.fingerprint()} does "
                         f"not match the stored {payload['fingerprint']}")
    model.eval()
    return (model, payload.get("extra", {})) if with_extra else model
