"""Training configuration: a YAML file read into dataclasses, with unknown keys refused by name."""
import dataclasses
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import List, Optional, Tuple

import yaml

from training.datasets import place_ranges
from training.losses import LOG_KERNELS, LOSSES


@dataclass
class DatasetSpec:
    """Where a `PlaceSet` comes from. `kind` is `aligned`, `mat` or `csv`; paths may use ${ENV}."""

    kind: str = "aligned"
    root: Optional[str] = None                   # aligned: folder of traversals; mat/csv: image root
    db_traversals: List[str] = field(default_factory=list)
    query_traversals: List[str] = field(default_factory=list)
    places: Optional[List[Tuple[int, int]]] = None  # half-open [start, stop] place ranges, one or a
                                                 # list (aligned: place index; csv: database row)
    query_places: Optional[List[Tuple[int, int]]] = None  # queries from these places (default: places)
    mat_file: Optional[str] = None               # mat: Pittsburgh/Tokyo TM dbStruct file
    query_root: Optional[str] = None             # mat: query image folder (Pittsburgh: queries_real)
    csv_file: Optional[str] = None               # csv: path,x,y rows
    query_csv_file: Optional[str] = None         # csv: separate queries (else images query each other)
    pos_radius: Optional[float] = None           # defaults: 2 frames / 10 m (mat: from the file)
    neg_radius: Optional[float] = None           # defaults: 10 frames / 25 m (mat: from the file)
    eval_radius: Optional[float] = None          # defaults: 2 frames / 25 m (mat: from the file)
    synthetic_night: int = 0                     # night renderings per db image, added as queries


@dataclass
class DataConfig:
    """`train` and `val` each take one dataset or a list: training mixes its sets into one (their
    places are negatives of each other), validation reports the mean Recall@N over its sets."""

    train: List[DatasetSpec] = field(default_factory=lambda: [DatasetSpec()],
                                     metadata={"items": DatasetSpec})
    val: List[DatasetSpec] = field(default_factory=lambda: [DatasetSpec()],
                                   metadata={"items": DatasetSpec})
    cache_images: bool = True                    # keep resized images in memory between epochs
    cache_features: bool = True                  # keep the frozen layers' outputs (training.images)


@dataclass
class LossConfig:
    name: str = "sare_individual"                # sare_joint | sare_individual | triplet | contrastive
    kernel: str = "gaussian"                     # SARE: gaussian | cauchy | exponential
    margin: Optional[float] = None               # triplet (default 0.1) / contrastive (default 0.7)


@dataclass
class MiningConfig:
    negatives_sampled: int = 1000
    negatives_kept: int = 10
    cache_refresh_queries: int = 1000            # recompute the descriptor cache this often


@dataclass
class OptimConfig:
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-3
    lr_step_epochs: int = 5
    lr_gamma: float = 0.5
    batch_size: int = 4                          # tuples per step (per process under DDP)
    epochs: int = 30
    trainable_blocks: int = 2                    # last backbone trunk modules fine-tuned (+ NetVLAD)


@dataclass
class TrainConfig:
    output_dir: str = "runs/train"
    init_checkpoint: Optional[str] = None        # start from this model instead of off-the-shelf
    model: dict = field(default_factory=dict)    # vpr_ros.model.ModelConfig fields
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    recall_ns: List[int] = field(default_factory=lambda: [1, 5, 10, 20])
    select_by_recall_at: int = 5                 # best checkpoint by this Recall@N on val
    select_epoch: str = "best"                   # best: by validation; last: the epochs were chosen
                                                 # beforehand (k-fold), validation only reports
    whitening_dim: Optional[int] = 4096          # PCA-whitening fitted at the end; null: none
    whitening_max_images: int = 10000
    cluster_images: int = 500                    # images for NetVLAD k-means when off-the-shelf
    embed_batch_size: int = 8
    threads: Optional[int] = None                # torch CPU threads per process
    seed: int = 0

    def validate(self) -> None:
        """Raise ValueError on values that would only fail later, deep inside training."""
        if self.loss.name not in LOSSES:
            raise ValueError(f"loss.name {self.loss.name!r} is not one of {list(LOSSES)}")
        if self.loss.kernel not in LOG_KERNELS:
            raise ValueError(f"loss.kernel {self.loss.kernel!r} is not one of {sorted(LOG_KERNELS)}")
        if self.select_epoch not in ("best", "last"):
            raise ValueError(f"select_epoch {self.select_epoch!r} must be best or last")
        for spec_name in ("train", "val"):
            specs = getattr(self.data, spec_name)
            if not specs and (spec_name == "train" or self.select_epoch == "best"):
                raise ValueError(f"data.{spec_name} lists no dataset" + (
                    "; without validation set select_epoch: last" if spec_name == "val" else ""))
            for number, spec in enumerate(specs):
                if spec.kind not in ("aligned", "mat", "csv"):
                    raise ValueError(f"data.{spec_name}[{number}].kind {spec.kind!r} must be "
                                     f"aligned, mat or csv")
                if spec.synthetic_night < 0:
                    raise ValueError(f"data.{spec_name}[{number}].synthetic_night must be >= 0")
                if spec.kind == "mat" and (spec.places or spec.query_places):
                    raise ValueError(f"data.{spec_name}[{number}]: places and query_places "
                                     f"select aligned or csv data, not a mat dbStruct")
        if self.select_by_recall_at not in self.recall_ns:
            raise ValueError(f"select_by_recall_at={self.select_by_recall_at} must be one of "
                             f"recall_ns {self.recall_ns}")
        if self.optim.batch_size < 1 or self.optim.epochs < 1 or self.optim.lr_step_epochs < 1:
            raise ValueError("optim.batch_size, optim.epochs and optim.lr_step_epochs must be >= 1")


def _build(cls, data, where: str):
    """Instantiate dataclass `cls` from a dict, recursing into nested dataclasses."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(f'{where}{k}' for k in unknown)}; "
                         f"valid keys here: {sorted(known)}")
    values = {}
    for name, value in data.items():
        kind = known[name].type
        items = known[name].metadata.get("items")
        if items is not None:
            listed = value if isinstance(value, list) else [value]
            values[name] = [_build(items, v, f"{where}{name}[{i}].") for i, v in enumerate(listed)]
        elif dataclasses.is_dataclass(kind):
            values[name] = _build(kind, value, f"{where}{name}.")
        elif name in ("places", "query_places") and value is not None:
            try:
                values[name] = place_ranges(value)
            except ValueError as err:
                raise ValueError(f"{where}{name}: {err}") from err
        elif isinstance(value, str):
            values[name] = _expand(value, f"{where}{name}")
        else:
            values[name] = value
    return cls(**values)


def _expand(value: str, key: str) -> str:
    """`value` with ${VAR} replaced from the environment; an unset variable is an error."""
    expanded = os.path.expandvars(value)
    unset = re.findall(r"\$\{?(\w+)", expanded)
    if unset:
        raise ValueError(f"{key}: environment variable {unset[0]} in {value!r} is not set; "
                         f"export it (e.g. VPR_ROS_DATASETS=/path/to/datasets) or write the path")
    return expanded


def load_config(path, overrides: Optional[dict] = None) -> TrainConfig:
    """Read a YAML training config; `overrides` (same nesting) win over the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from err
    return config_from_dict(_merge(data, overrides or {}), source=str(path))


def config_from_dict(data: dict, source: str = "config") -> TrainConfig:
    """A validated `TrainConfig` from a plain dict (as read from YAML)."""
    try:
        config = _build(TrainConfig, data, "")
        config.validate()
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: {err}") from err
    return config


def _merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def to_dict(config: TrainConfig) -> dict:
    """Plain dict of a config (for checkpoints and the run directory)."""
    return dataclasses.asdict(config)
