"""Build the localization engine the node runs: embedder, keyframe map and EngineConfig.

Localization mode needs an existing map made with the same model (KeyframeMap.load refuses
another model's map). Mapping mode extends the map at `map_path` when there is one, else starts
an empty map that `~/save_map` (or shutdown with save_map_on_shutdown) writes there. "There is
one" is the storage layer's answer (resolve_map_dir), which also finds the previous map a save
left aside when it crashed between its two renames: a map on disk is extended, never replaced.
"""
import logging
from pathlib import Path

from vpr_ros.localization import EngineConfig, LocalizationEngine
from vpr_ros.mapping import KeyframeMap
from vpr_ros.mapping.storage import resolve_map_dir
from vpr_ros.ros.parameters import NodeSettings
from vpr_ros.runtime.embedder import load_embedder

LOG = logging.getLogger(__name__)


def _map_on_disk(path: Path) -> bool:
    try:
        resolve_map_dir(path)
    except FileNotFoundError:
        return False
    return True


def open_map(settings: NodeSettings, config: EngineConfig, embedder) -> KeyframeMap:
    """The map to localize against or to extend."""
    path = Path(settings.map_path) if settings.map_path else None
    if path is not None and _map_on_disk(path):
        return KeyframeMap.load(path, expected_fingerprint=embedder.fingerprint,
                                use_gpu=settings.map_use_gpu)
    if config.mode == "localization":
        where = f"no map at map_path '{settings.map_path}'" if path else "map_path is empty"
        raise FileNotFoundError(f"localization mode needs a prior map, but {where}; build one "
                                f"with build_map.launch.py or `vpr-ros build-map`, or start in "
                                f"mapping mode")
    LOG.info("starting a new map%s", f" (saved to {path})" if path else " (map_path empty: "
             "it cannot be saved until map_path is set)")
    return KeyframeMap.create(embedder.dim, embedder.fingerprint, use_gpu=settings.map_use_gpu)


def build_engine(settings: NodeSettings, config: EngineConfig, embedder=None) -> LocalizationEngine:
    """The engine for these settings; `embedder` defaults to loading `settings.model`."""
    if embedder is None:
        if not settings.model:
            raise ValueError("parameter 'model' is empty: pass a checkpoint, e.g. "
                             "ros2 launch vpr_ros localize.launch.py model:=/path/to/model.pt")
        embedder = load_embedder(settings.model, backend=settings.backend,
                                 engine=settings.engine_path or None,
                                 precision=settings.engine_precision)
    return LocalizationEngine(open_map(settings, config, embedder), embedder, config)
