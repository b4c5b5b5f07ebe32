"""TensorRT engine cache: engines live next to their ONNX file, keyed so a stale one is never loaded.

An engine is only valid for the ONNX graph, TensorRT version and GPU it was built with (and for
its precision and shape profile). The key hashes all of these into the file name
(`model.<key>.engine`); a JSON record beside the engine repeats the key, the model metadata
and the engine's own SHA-256, and is written last, so a half-written or swapped engine is
detected before TensorRT ever sees it.
"""
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Tuple

from vpr_ros.export.metadata import OnnxModelInfo
from vpr_ros.io.atomic import atomic_write_bytes, atomic_write_text

RECORD_SUFFIX = ".json"
PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_PRECISION = "fp16"      # what build-engine and the runtime build: fast on every Jetson
RUNTIME_PRECISIONS = ("auto",) + PRECISIONS    # auto: load any cached engine of the model
Shape = Tuple[int, int, int, int]


def file_sha256(path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's content, read in chunks (ONNX files reach hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ShapeProfile:
    """TensorRT optimization profile of the `image` input: (B, 3, H, W) min / opt / max."""

    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self):
        for name, shape in (("min", self.min), ("opt", self.opt), ("max", self.max)):
            if len(shape) != 4 or shape[1] != 3 or any(int(s) < 1 for s in shape):
                raise ValueError(f"{name} shape must be B×3×H×W with positive sides, got {shape}")
        if not all(a <= b <= c for a, b, c in zip(self.min, self.opt, self.max)):
            raise ValueError(f"shape profile must satisfy min ≤ opt ≤ max per axis, got "
                             f"min {self.min}, opt {self.opt}, max {self.max}")

    def contains(self, shape: Shape) -> bool:
        return all(lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max))


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; any change gives a different cache entry."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    precision: str
    profile: ShapeProfile
    calibration: str = ""          # INT8 only: id of the calibration image set

    def digest(self) -> str:
        """16 hex digits identifying this key (used in the engine file name)."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def engine_path_for(onnx_path, key: EngineKey) -> Path:
    """`<onnx dir>/<onnx stem>.<key digest>.engine`."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(f"{onnx_path.stem}.{key.digest()}.engine")


def record_path(engine_path) -> Path:
    return Path(str(engine_path) + RECORD_SUFFIX)


def save_engine(engine_path, data: bytes, key: EngineKey, info: OnnxModelInfo) -> Path:
    """Write the engine, then its record (the record is the commit marker); both atomically."""
    engine_path = Path(engine_path)
    atomic_write_bytes(engine_path, bytes(data))
    record = {"key": asdict(key), "model": asdict(info),
              "engine_sha256": hashlib.sha256(bytes(data)).hexdigest()}
    atomic_write_text(record_path(engine_path), json.dumps(record, indent=2, sort_keys=True))
    return engine_path


def _key_from_dict(data: dict) -> EngineKey:
    profile = {name: tuple(int(s) for s in data["profile"][name]) for name in ("min", "opt", "max")}
    return EngineKey(onnx_sha256=data["onnx_sha256"], tensorrt_version=data["tensorrt_version"],
                     gpu_name=data["gpu_name"], precision=data["precision"],
                     profile=ShapeProfile(**profile), calibration=data.get("calibration", ""))


def load_engine(engine_path, tensorrt_version: str, gpu_name: str,
                expected: Optional[EngineKey] = None) -> Tuple[bytes, EngineKey, OnnxModelInfo]:
    """Engine bytes, key and model info, after checking the record against this machine.

    Raises FileNotFoundError when the engine or its record is missing, ValueError when the
    engine was built for another TensorRT/GPU (or another key), or its bytes do not match the
    record (truncated, replaced).
    """
    engine_path = Path(engine_path)
    record_file = record_path(engine_path)
    if not engine_path.is_file():
        raise FileNotFoundError(f"TensorRT engine not found: {engine_path}; build it with "
                                f"`vpr-ros build-engine --onnx model.onnx`")
    if not record_file.is_file():
        raise FileNotFoundError(f"{engine_path} has no record {record_file.name}: cannot tell "
                                f"what it was built for; rebuild it with `vpr-ros build-engine`")
    try:
        record = json.loads(record_file.read_text())
        key = _key_from_dict(record["key"])
        info = OnnxModelInfo(**record["model"])
        expected_sha = record["engine_sha256"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"engine record {record_file} is corrupt ({err}); rebuild the engine "
                         f"with `vpr-ros build-engine`") from err
    if key.tensorrt_version != tensorrt_version or key.gpu_name != gpu_name:
        raise ValueError(f"{engine_path} was built with TensorRT {key.tensorrt_version} for "
                         f"'{key.gpu_name}'; this machine has TensorRT {tensorrt_version} on "
                         f"'{gpu_name}': rebuild it here with `vpr-ros build-engine`")
    if expected is not None and key != expected:
        raise ValueError(f"{engine_path} was built for another ONNX file, precision or shape "
                         f"profile; rebuild it with `vpr-ros build-engine`")
    data = engine_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != expected_sha:
        raise ValueError(f"{engine_path} does not match its record (truncated or replaced); "
                         f"delete it and rebuild with `vpr-ros build-engine`")
    return data, key, info


def find_cached_engine(onnx_path, fingerprint: str, tensorrt_version: str, gpu_name: str,
                       precision: Optional[str] = None) -> Optional[Path]:
    """The newest engine beside `onnx_path` of model `fingerprint`, built on this TensorRT and
    GPU, at `precision` (None: any precision; any shape profile); None when there is none."""
    onnx_path = Path(onnx_path)
    matches = []
    for engine in onnx_path.parent.glob(f"{onnx_path.stem}.*.engine"):
        try:
            record = json.loads(record_path(engine).read_text())
            key = _key_from_dict(record["key"])
            model = record["model"]["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        same_platform = (key.tensorrt_version, key.gpu_name) == (tensorrt_version, gpu_name)
        if model == fingerprint and same_platform and precision in (None, key.precision):
            matches.append(engine)
    return max(matches, key=lambda path: path.stat().st_mtime_ns, default=None)
