"""ONNX export: a valid, checked graph with dynamic axes and metadata that matches torch."""
import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="the onnx package is needed to export (pip install onnx)")

from vpr_ros.cli import main as cli_main  # noqa: E402
from vpr_ros.export.metadata import (INPUT_NAME, MAX_OPSET, OUTPUT_NAME,  # noqa: E402
                                     OnnxModelInfo, read_onnx_info)
from vpr_ros.export.onnx_export import cached_onnx_path, ensure_onnx, export_onnx  # noqa: E402
from vpr_ros.io.images import list_images, read_image  # noqa: E402
from vpr_ros.model import ModelConfig, build_model  # noqa: E402
from vpr_ros.model.checkpoint import save_checkpoint  # noqa: E402
from vpr_ros.model.clustering import build_offtheshelf_model  # noqa: E402
from vpr_ros.runtime.embedder import TorchEmbedder  # noqa: E402
from vpr_ros.runtime.onnxruntime_backend import (OnnxRuntimeEmbedder, create_session,  # noqa: E402
                                                 max_abs_difference)


def tiny_model(backbone="efficientnet_lite0", whitening_dim=24):
    """Pretrained Lite cut at block 5 (40/48 ch), 1×1 reduction to 16, K=8, random NetVLAD,
    PCA-whitening to 24."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=backbone, image_long_side=128, num_clusters=8,
                                    reduce_dim=16, backbone_kwargs={"feature_block": 5}))
    rng = np.random.default_rng(0)
    projection = rng.standard_normal((whitening_dim, model.netvlad.output_dim)).astype(np.float32)
    model.set_whitening(rng.standard_normal(model.netvlad.output_dim).astype(np.float32) * 0.01,
                        projection)
    return model.eval()


@pytest.fixture(scope="module", params=["efficientnet_lite0", "efficientnet_lite2"])
def exported(request, tmp_path_factory):
    model = tiny_model(request.param)
    path = tmp_path_factory.mktemp("export") / "tiny.onnx"
    info = export_onnx(model, path)
    return model, path, info


def test_export_is_a_checked_onnx_graph_with_dynamic_axes_and_metadata(exported):
    model, path, info = exported
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) <= MAX_OPSET
    assert [i.name for i in proto.graph.input] == [INPUT_NAME]
    assert [o.name for o in proto.graph.output] == [OUTPUT_NAME]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "", "height", "width"] and dims[1].dim_value == 3
    assert read_onnx_info(path) == info == OnnxModelInfo.from_model(model)
    assert info.dim == 24 and info.image_long_side == 128


def test_exported_graph_runs_at_two_sizes_and_two_batch_sizes_like_torch(exported):
    model, path, _ = exported
    session = create_session(path, threads=1)
    rng = np.random.default_rng(1)
    for shape in [(1, 3, 96, 128), (3, 3, 128, 64)]:
        batch = rng.random(shape, dtype=np.float32)
        out = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
        with torch.no_grad():
            expected = model(torch.from_numpy(batch)).numpy()
        assert out.shape == (shape[0], 24)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
        assert np.abs(out - expected).max() <= 1e-5


def test_opset_above_what_tensorrt_parses_is_refused(tmp_path):
    with pytest.raises(ValueError, match="opset must be in"):
        export_onnx(tiny_model(), tmp_path / "x.onnx", opset=MAX_OPSET + 1)
    assert not (tmp_path / "x.onnx").exists()


def test_metadata_of_a_foreign_onnx_file_is_refused(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["descriptor"])], "g",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("descriptor", TensorProto.FLOAT, [1])])
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, ir_version=8,
                                opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ValueError, match="not a vpr_ros ONNX export"):
        read_onnx_info(path)
    with pytest.raises(ValueError, match="not a vpr_ros ONNX export"):
        OnnxRuntimeEmbedder(path)


def test_cached_export_is_keyed_by_fingerprint_and_reused(tmp_path):
    model = tiny_model()
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(checkpoint, model)
    path = ensure_onnx(model, checkpoint)
    assert path == cached_onnx_path(checkpoint, model.fingerprint()) and path.is_file()
    assert model.fingerprint() in path.name
    stamp = path.stat().st_mtime_ns
    assert ensure_onnx(model, checkpoint) == path and path.stat().st_mtime_ns == stamp


def test_export_command_writes_and_verifies(tmp_path, capsys):
    checkpoint, out = tmp_path / "model.pt", tmp_path / "model.onnx"
    save_checkpoint(checkpoint, tiny_model())
    assert cli_main(["export", "--checkpoint", str(checkpoint), "--onnx", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "max |Δ|" in printed and out.is_file()
    assert cli_main(["export", "--checkpoint", str(tmp_path / "missing.pt"),
                     "--onnx", str(out)]) == 2


def test_export_refuses_a_missing_output_directory(tmp_path, caplog):
    """A typo in the output path is an error, not a silently created directory tree."""
    checkpoint, out = tmp_path / "model.pt", tmp_path / "no" / "such" / "model.onnx"
    save_checkpoint(checkpoint, tiny_model())
    assert cli_main(["export", "--checkpoint", str(checkpoint), "--onnx", str(out)]) == 2
    assert f"output directory {out.parent} does not exist" in caplog.text
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("backbone", [
    {}, {"backbone": "efficientnet_lite0", "backbone_kwargs": {"feature_block": 15}}],
    ids=["default", "lite0-block15"])
def test_onnxruntime_matches_torch_on_gardens_point(gardens_point, tmp_path, backbone):
    """Real images, the real preprocessing and NetVLAD on the default cut-off and the old one
    (Lite0 block 15): descriptors and top-1 agree."""
    day = list_images(gardens_point / "day_right")
    night = list_images(gardens_point / "night_right")
    model = build_offtheshelf_model([read_image(p) for p in day[5::40]],
                                    ModelConfig(image_long_side=320, num_clusters=16, **backbone))
    path = tmp_path / "gp.onnx"
    export_onnx(model, path)
    db_images = [read_image(p) for p in day[::20]]
    query_images = [read_image(p) for p in night[3::20]]
    torch_embedder = TorchEmbedder(model, batch_size=4, threads=2)
    ort_embedder = OnnxRuntimeEmbedder(path, batch_size=4, threads=2,
                                       expected_fingerprint=model.fingerprint())
    db_t, db_o = torch_embedder.embed(db_images), ort_embedder.embed(db_images)
    q_t, q_o = torch_embedder.embed(query_images), ort_embedder.embed(query_images)
    assert np.abs(db_t - db_o).max() <= 1e-4 and np.abs(q_t - q_o).max() <= 1e-4
    assert np.array_equal(np.argmax(q_t @ db_t.T, axis=1), np.argmax(q_o @ db_o.T, axis=1))
    worst, min_cos = max_abs_difference(model, path, [np.random.default_rng(0).random(
        (2, 3, 192, 320), dtype=np.float32)])
    assert worst <= 1e-4 and min_cos >= 0.9999


def _imported_modules(module_file):
    import ast

    tree = ast.parse(open(module_file, encoding="utf-8").read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_export_and_backends_depend_one_way():
    """The runtime may export on the fly; the exporter never imports the runtime's backends."""
    import vpr_ros.export.onnx_export as onnx_export
    import vpr_ros.runtime.backends as backends

    assert "vpr_ros.export.onnx_export" in _imported_modules(backends.__file__)
    exporter_imports = _imported_modules(onnx_export.__file__)
    assert not {"vpr_ros.runtime.backends", "vpr_ros.runtime.onnxruntime_backend"} & exporter_imports
