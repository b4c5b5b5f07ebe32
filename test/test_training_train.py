"""The training loop on a tiny synthetic walk: a step lowers the loss, resume, Ctrl-C, final model."""
import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from test_training_datasets import write_traversals
from training.config import config_from_dict, load_config
from training.distributed import DistContext
from training.evaluation import embed_paths
from training.images import PrefixStore
from training.compare import main as compare_main
from training.train import Trainer, main
from vpr_ros.model.checkpoint import load_checkpoint, read_checkpoint

TRAVERSALS = ["day_a", "day_b", "night"]


def tiny_config(root, out, **changes) -> dict:
    """12 places × 3 walks of 64×64 images, a 40-channel backbone cut and 4 NetVLAD clusters."""
    config = {
        "output_dir": str(out),
        "model": {"backbone": "efficientnet_lite0", "image_long_side": 64, "num_clusters": 4,
                  "reduce_dim": None, "backbone_kwargs": {"feature_block": 4}},
        "data": {
            "train": {"kind": "aligned", "root": str(root), "db_traversals": TRAVERSALS,
                      "query_traversals": TRAVERSALS, "places": [0, 8], "pos_radius": 1,
                      "neg_radius": 2},
            "val": {"kind": "aligned", "root": str(root), "db_traversals": ["day_b"],
                    "query_traversals": ["night"], "places": [8, 12], "eval_radius": 0},
        },
        "mining": {"negatives_kept": 3, "cache_refresh_queries": 12},
        "optim": {"epochs": 1, "batch_size": 4, "lr": 0.01},
        "recall_ns": [1, 2],
        "select_by_recall_at": 2,
        "whitening_dim": 8,
        "cluster_images": 24,
        "embed_batch_size": 12,
    }
    for key, value in changes.items():
        section, _, name = key.partition(".")
        if name:
            config[section][name] = value
        else:
            config[key] = value
    return config


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    return write_traversals(tmp_path_factory.mktemp("walk"), places=12, size=64)


def _rows(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_training_steps_lower_the_loss_on_fixed_tuples(walk, tmp_path):
    trainer = Trainer(config_from_dict(tiny_config(walk, tmp_path)), DistContext())
    trainer.refresh_cache()
    queries = trainer.miner.queries[:4]
    losses = [trainer.step(queries) for _ in range(5)]
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.9 * losses[0]


def test_only_the_last_blocks_and_netvlad_are_trained(walk, tmp_path):
    trainer = Trainer(config_from_dict(tiny_config(walk, tmp_path, **{"optim.trainable_blocks": 1})),
                      DistContext())
    trunk = trainer.model.backbone.trunk()
    assert all(p.requires_grad for p in trainer.model.netvlad.parameters())
    assert all(p.requires_grad for p in trunk[-1].parameters())
    assert not any(p.requires_grad for m in trunk[:-1] for p in m.parameters())


def test_run_resume_and_final_model(walk, tmp_path):
    out = tmp_path / "run"
    first = Trainer(config_from_dict(tiny_config(walk, out)), DistContext())
    first.fit()
    state = read_checkpoint(out / "last.pt")["extra"]
    assert state["next_epoch"] == 1 and state["optimizer"]["state"]

    resumed = Trainer(config_from_dict(tiny_config(walk, out, **{"optim.epochs": 2})), DistContext(),
                      resume=out / "last.pt")
    assert resumed.start_epoch == 1
    assert resumed.best_recall == pytest.approx(state["best_recall"])
    momentum = resumed.optimizer.state_dict()["state"]
    assert momentum and all("momentum_buffer" in s for s in momentum.values())
    resumed.fit()
    assert [r["epoch"] for r in _rows(out / "epochs.csv")] == ["0", "1", "2"]
    assert read_checkpoint(out / "last.pt")["extra"]["next_epoch"] == 2

    final = resumed.finalize()
    model = load_checkpoint(final)
    assert model.whitening is not None and model.output_dim == 8
    out_desc = model(torch.rand(2, 3, 64, 64))
    assert out_desc.shape == (2, 8)
    torch.testing.assert_close(out_desc.norm(dim=1), torch.ones(2))


def test_ctrl_c_keeps_a_resumable_checkpoint(walk, tmp_path, monkeypatch):
    out = tmp_path / "run"
    trainer = Trainer(config_from_dict(tiny_config(walk, out)), DistContext())
    calls = {"n": 0}
    real_step = trainer.step

    def interrupted_step(queries):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_step(queries)

    monkeypatch.setattr(trainer, "step", interrupted_step)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    saved = load_checkpoint(out / "last.pt", with_extra=True)
    assert saved[1]["next_epoch"] == 0
    assert saved[0].fingerprint() == trainer.model.fingerprint()
    resumed = Trainer(config_from_dict(tiny_config(walk, out)), DistContext(), resume=out / "last.pt")
    assert resumed.start_epoch == 0


def test_cli_reports_config_and_dataset_errors(walk, tmp_path, caplog):
    bad_key = tiny_config(walk, tmp_path)
    bad_key["optim"]["learning_rate"] = 0.1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad_key))
    assert main(["--config", str(path)]) == 2
    assert "optim.learning_rate" in caplog.text

    missing = tiny_config(walk, tmp_path)
    missing["data"]["val"]["query_traversals"] = ["dusk"]
    path.write_text(yaml.safe_dump(missing))
    assert main(["--config", str(path)]) == 2
    assert "image folder not found" in caplog.text and "dusk" in caplog.text


def test_config_rejects_bad_values_and_whitening_larger_than_data(walk, tmp_path):
    with pytest.raises(ValueError, match="loss.kernel 'gauss'"):
        config_from_dict(tiny_config(walk, tmp_path, **{"loss": {"kernel": "gauss"}}))
    with pytest.raises(ValueError, match="whitening_dim 64 needs at least 65"):
        Trainer(config_from_dict(tiny_config(walk, tmp_path, whitening_dim=64)), DistContext())
    with pytest.raises(FileNotFoundError, match="training config not found"):
        load_config(tmp_path / "nope.yaml")


def test_shipped_configs_load_and_need_the_datasets_variable(monkeypatch):
    configs = sorted((Path(__file__).resolve().parents[1] / "training" / "configs").glob("*.yaml"))
    assert configs
    monkeypatch.setenv("VPR_ROS_DATASETS", "/data")
    for path in configs:
        config = load_config(path)
        assert config.data.train[0].root.startswith("/data/")
    monkeypatch.delenv("VPR_ROS_DATASETS")
    with pytest.raises(ValueError, match="VPR_ROS_DATASETS .* is not set"):
        load_config(configs[0])


def test_cached_frozen_layers_train_like_the_full_network(walk, tmp_path):
    """The frozen prefix's outputs, computed once, give the descriptors and the step of the
    network run on images (float16 storage is the only difference)."""
    cached = Trainer(config_from_dict(tiny_config(walk, tmp_path / "a")), DistContext())
    plain = Trainer(config_from_dict(tiny_config(walk, tmp_path / "b",
                                                 **{"data.cache_features": False})), DistContext())
    assert isinstance(cached.inputs, PrefixStore) and plain.inputs is plain.store
    assert cached.inputs.start == len(cached.model.backbone.trunk()) - 2
    paths = cached.train_set.db_images
    with_cache = embed_paths(cached.model, cached.inputs, paths, 4, DistContext())
    without = embed_paths(plain.model, plain.store, paths, 4, DistContext())
    np.testing.assert_allclose(with_cache, without, atol=2e-3)
    for trainer in (cached, plain):
        trainer.refresh_cache()
    queries = cached.miner.queries[:4]
    assert cached.step(queries) == pytest.approx(plain.step(queries), rel=1e-2, abs=1e-4)


def test_frozen_features_are_shared_only_between_equal_frozen_weights(walk, tmp_path, monkeypatch):
    trainer = Trainer(config_from_dict(tiny_config(walk, tmp_path)), DistContext())
    shared: dict = {}
    backbone = trainer.model.backbone
    first = PrefixStore(trainer.store, backbone, 3, shared)
    first.batch(trainer.train_set.db_images[:2])
    calls = []
    real = backbone.run_trunk
    monkeypatch.setattr(backbone, "run_trunk", lambda *a: calls.append(1) or real(*a))
    PrefixStore(trainer.store, backbone, 3, shared).batch(trainer.train_set.db_images[:2])
    assert not calls                                     # same weights: read from the cache
    with torch.no_grad():
        backbone.trunk()[0].weight.add_(0.1)
    PrefixStore(trainer.store, backbone, 3, shared).batch(trainer.train_set.db_images[:2])
    assert calls and len(shared) == 2


def test_several_training_sets_synthetic_night_and_mean_validation(walk, tmp_path, caplog):
    train = tiny_config(walk, tmp_path)["data"]["train"]
    night = {**train, "db_traversals": ["day_a"], "query_traversals": ["night"],
             "synthetic_night": 1}
    val = tiny_config(walk, tmp_path)["data"]["val"]
    config = config_from_dict(tiny_config(walk, tmp_path, **{
        "data.train": [train, night], "data.val": [val, {**val, "db_traversals": ["day_a"]}]}))
    trainer = Trainer(config, DistContext())
    assert trainer.train_set.num_queries == 24 + 8 + 8   # walks, real night, one rendering each
    caplog.set_level("INFO", logger="training")
    recall = trainer.fit()
    assert set(recall) == {1, 2}
    assert sum("places 8-11" in r.message for r in caplog.records) >= 2


def test_dataset_lists_name_the_entry_at_fault(walk, tmp_path):
    config = tiny_config(walk, tmp_path)
    config["data"]["train"] = [config["data"]["train"], {"kind": "folder"}]
    with pytest.raises(ValueError, match=r"data.train\[1\].kind 'folder'"):
        config_from_dict(config)
    config["data"]["train"] = [{"kind": "aligned", "sythetic_night": 2}]
    with pytest.raises(ValueError, match=r"data.train\[0\].sythetic_night"):
        config_from_dict(config)


def test_clustering_images_spread_evenly_over_each_training_set(walk, tmp_path):
    trainer = Trainer(config_from_dict(tiny_config(walk, tmp_path, cluster_images=6)), DistContext())
    chosen = trainer._cluster_images()                  # 24 db images: 3 walks × places 0-7
    assert [(p.parent.name, int(p.stem[-3:])) for p in chosen] == [      # db 0, 5, 9, 14, 18, 23
        ("day_a", 0), ("day_a", 5), ("day_b", 1), ("day_b", 6), ("night", 2), ("night", 7)]


def test_fixed_epochs_without_validation_keep_the_last_epoch(walk, tmp_path):
    out = tmp_path / "run"
    config = tiny_config(walk, out, select_epoch="last", **{"optim.epochs": 2})
    config["data"]["val"] = []
    trainer = Trainer(config_from_dict(config), DistContext())
    assert trainer.fit() == {}
    final = load_checkpoint(trainer.finalize())
    last = load_checkpoint(out / "last.pt")
    assert not (out / "best.pt").exists() and not (out / "val_queries.csv").exists()
    torch.testing.assert_close(final.netvlad.centroids, last.netvlad.centroids)
    with pytest.raises(ValueError, match="data.val lists no dataset; without validation set "
                                         "select_epoch: last"):
        config_from_dict({**config, "select_epoch": "best"})


def test_validation_ranks_per_query_are_kept_for_every_epoch(walk, tmp_path, capsys):
    out = tmp_path / "run"
    Trainer(config_from_dict(tiny_config(walk, out, **{"optim.epochs": 2})), DistContext()).fit()
    rows = _rows(out / "val_queries.csv")
    assert [r["epoch"] for r in rows] == ["0"] * 4 + ["1"] * 4 + ["2"] * 4
    assert [r["query"] for r in rows[:4]] == ["0", "1", "2", "3"]
    epochs = _rows(out / "epochs.csv")
    for epoch in ("0", "1", "2"):
        first = [int(r["first_match"]) for r in rows if r["epoch"] == epoch]
        recall = float(next(e for e in epochs if e["epoch"] == epoch)["recall@1"])
        assert np.mean([f == 1 for f in first]) == pytest.approx(recall)
    assert compare_main([f"{out}:0", f"{out}:2", "--recall-at", "2"]) == 0
    assert "4 common validation queries, R@2" in capsys.readouterr().out
    assert compare_main([str(out), str(tmp_path / "missing")]) == 2
