"""Atomic writes: the new file replaces the old one whole, with the mode the umask gives."""
import os
import stat

import pytest

from vpr_ros.io.atomic import atomic_path, atomic_write_bytes, atomic_write_text


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_respect_the_umask(tmp_path, umask_022):
    atomic_write_text(tmp_path / "events.jsonl", "{}\n")
    atomic_write_bytes(tmp_path / "model.onnx", b"\x00")
    with atomic_path(tmp_path / "demo.png") as tmp:
        tmp.write_bytes(b"png")
    for name in ("events.jsonl", "model.onnx", "demo.png"):
        assert mode(tmp_path / name) == 0o644, name


def test_a_stricter_umask_is_kept(tmp_path):
    old = os.umask(0o077)
    try:
        atomic_write_text(tmp_path / "secret.json", "{}")
    finally:
        os.umask(old)
    assert mode(tmp_path / "secret.json") == 0o600


def test_replaces_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target):
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_saved_checkpoint_is_readable_by_other_users(tmp_path, umask_022):
    from vpr_ros.model import ModelConfig, build_model
    from vpr_ros.model.checkpoint import save_checkpoint

    model = build_model(ModelConfig(backbone="efficientnet_lite0", image_long_side=96,
                                    num_clusters=8, reduce_dim=16,
                                    backbone_kwargs={"feature_block": 5}))
    save_checkpoint(tmp_path / "model.pt", model)
    assert mode(tmp_path / "model.pt") == 0o644
