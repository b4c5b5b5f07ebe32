"""What an exported ONNX graph says about itself (names, metadata_props), readable without torch.

Backends need the model fingerprint (maps are keyed by it), the preprocessing long side and the
descriptor dimension; the export stores them as ONNX `metadata_props` so that the robot needs
nothing but the ONNX file.
"""
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

INPUT_NAME = "image"
OUTPUT_NAME = "descriptor"
MAX_OPSET = 17                  # TensorRT 10.3 (JetPack 6) parses ONNX opsets up to 17 reliably
FORMAT = "vpr_ros.onnx"
FORMAT_VERSION = 1

_PREFIX = "vpr_ros."


@dataclass(frozen=True)
class OnnxModelInfo:
    """The model facts a backend needs, as stored in (and read back from) the ONNX file."""

    fingerprint: str
    image_long_side: int
    dim: int
    config_json: str = "{}"

    def to_props(self) -> dict:
        """`metadata_props` entries (strings only, as ONNX requires)."""
        props = {f"{_PREFIX}{key}": str(value) for key, value in asdict(self).items()}
        props[f"{_PREFIX}format"] = FORMAT
        props[f"{_PREFIX}format_version"] = str(FORMAT_VERSION)
        return props

    @classmethod
    def from_props(cls, props: Mapping[str, str], source) -> "OnnxModelInfo":
        """Parse `metadata_props`; ValueError naming `source` when it is not a vpr_ros export."""
        if props.get(f"{_PREFIX}format") != FORMAT:
            raise ValueError(f"{source} is not a vpr_ros ONNX export (no '{FORMAT}' metadata); "
                             f"create it with `vpr-ros export --checkpoint model.pt --onnx {source}`")
        version = props.get(f"{_PREFIX}format_version")
        if version != str(FORMAT_VERSION):
            raise ValueError(f"{source} is vpr_ros ONNX format version {version}, this vpr_ros "
                             f"reads version {FORMAT_VERSION}; re-export it with `vpr-ros export`")
        try:
            return cls(fingerprint=props[f"{_PREFIX}fingerprint"],
                       image_long_side=int(props[f"{_PREFIX}image_long_side"]),
                       dim=int(props[f"{_PREFIX}dim"]),
                       config_json=props.get(f"{_PREFIX}config_json", "{}"))
        except (KeyError, ValueError) as err:
            raise ValueError(f"{source} has incomplete vpr_ros metadata ({err}); "
                             f"re-export it with `vpr-ros export`") from err

    @classmethod
    def from_model(cls, model) -> "OnnxModelInfo":
        """The info of an in-memory `VPRModel`."""
        return cls(fingerprint=model.fingerprint(), image_long_side=model.config.image_long_side,
                   dim=model.output_dim, config_json=json.dumps(model.config.to_dict(), sort_keys=True))


def read_onnx_info(path) -> OnnxModelInfo:
    """The vpr_ros metadata of an ONNX file, read with the `onnx` package (weights not needed)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}; create it with `vpr-ros export`")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:
        raise ValueError(f"{path} is not a readable ONNX file ({err}); re-export it with "
                         f"`vpr-ros export`") from err
    return OnnxModelInfo.from_props({p.key: p.value for p in proto.metadata_props}, path)
