"""Engine cache keys and records, INT8 calibration batches, the build-engine command, and (where
TensorRT and a GPU exist) real engines compared with ONNX Runtime."""
import json
import logging
import os
import sys

import cv2
import numpy as np
import pytest

import fake_gpu
from vpr_ros.cli import main as cli_main
from vpr_ros.commands.build_engine import parse_shape
from vpr_ros.export.metadata import OnnxModelInfo
from vpr_ros.export.tensorrt_build import default_profile
from vpr_ros.runtime.calibration import (calibration_batches, calibration_id, calibration_images,
                                         calibration_tensor)
from vpr_ros.runtime.engine_cache import (EngineKey, ShapeProfile, engine_path_for, file_sha256,
                                          find_cached_engine, load_engine, record_path,
                                          save_engine)
from vpr_ros.runtime.preprocess import preprocess

PROFILE = ShapeProfile(min=(1, 3, 32, 32), opt=(1, 3, 96, 128), max=(4, 3, 128, 128))
INFO = OnnxModelInfo(fingerprint="0123456789abcdef", image_long_side=128, dim=24)


def make_key(**changes) -> EngineKey:
    fields = dict(onnx_sha256="a" * 64, tensorrt_version="10.3.0", gpu_name="Orin",
                  precision="fp16", profile=PROFILE)
    fields.update(changes)
    return EngineKey(**fields)


def write_images(folder, sizes):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        cv2.imwrite(str(folder / f"frame{i}.png"), rng.integers(0, 256, (h, w, 3), np.uint8))
    return folder


# --- engine cache -------------------------------------------------------------------------

def test_engine_key_changes_with_onnx_content_tensorrt_version_gpu_and_build_options(tmp_path):
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    first.write_bytes(b"graph one")
    second.write_bytes(b"graph two")
    assert file_sha256(first) != file_sha256(second)
    base = make_key(onnx_sha256=file_sha256(first))
    variants = [make_key(onnx_sha256=file_sha256(second)), make_key(tensorrt_version="10.4.0"),
                make_key(gpu_name="NVIDIA GeForce RTX 4090"), make_key(precision="int8"),
                make_key(profile=ShapeProfile(PROFILE.min, PROFILE.opt, (8, 3, 128, 128))),
                make_key(precision="int8", calibration="ffff")]
    digests = {base.digest()} | {key.digest() for key in variants}
    assert len(digests) == 1 + len(variants)
    assert make_key(onnx_sha256=file_sha256(first)).digest() == base.digest()
    path = engine_path_for(first, base)
    assert path.parent == tmp_path and path.name == f"a.{base.digest()}.engine"


def test_saved_engine_loads_back_with_its_key_and_model_info(tmp_path):
    key = make_key()
    path = save_engine(tmp_path / "m.x.engine", b"serialized engine", key, INFO)
    data, loaded_key, info = load_engine(path, "10.3.0", "Orin", expected=key)
    assert (data, loaded_key, info) == (b"serialized engine", key, INFO)
    record = json.loads(record_path(path).read_text())
    assert record["key"]["gpu_name"] == "Orin" and record["model"]["dim"] == 24


def test_engine_from_another_tensorrt_gpu_or_key_is_refused(tmp_path):
    path = save_engine(tmp_path / "m.engine", b"engine", make_key(), INFO)
    with pytest.raises(ValueError, match="TensorRT 10.3.0 .*this machine has TensorRT 10.4.0"):
        load_engine(path, "10.4.0", "Orin")
    with pytest.raises(ValueError, match="'Orin'; this machine .* 'RTX 3060'"):
        load_engine(path, "10.3.0", "RTX 3060")
    with pytest.raises(ValueError, match="another ONNX file, precision or shape profile"):
        load_engine(path, "10.3.0", "Orin", expected=make_key(precision="fp32"))


def test_cached_engine_of_the_model_is_found_for_any_profile_export_and_asked_precision(
        tmp_path):
    onnx_path = tmp_path / "model.onnx"
    model = INFO.fingerprint
    wide = ShapeProfile(PROFILE.min, PROFILE.opt, (8, 3, 128, 128))
    old = save_engine(engine_path_for(onnx_path, make_key()), b"old", make_key(), INFO)
    reexported = make_key(profile=wide, onnx_sha256="b" * 64)    # same model, other ONNX bytes
    new = save_engine(engine_path_for(onnx_path, reexported), b"new", reexported, INFO)
    os.utime(old, ns=(1, 1))
    assert find_cached_engine(onnx_path, model, "10.3.0", "Orin", "fp16") == new
    assert find_cached_engine(onnx_path, model, "10.3.0", "Orin") == new
    assert find_cached_engine(onnx_path, model, "10.3.0", "Orin", "int8") is None
    assert find_cached_engine(onnx_path, model, "10.3.0", "RTX 3060", "fp16") is None
    assert find_cached_engine(onnx_path, model, "10.4.0", "Orin") is None
    assert find_cached_engine(onnx_path, "f" * 16, "10.3.0", "Orin", "fp16") is None


def test_truncated_or_replaced_engine_gives_a_clear_error(tmp_path):
    path = save_engine(tmp_path / "m.engine", b"a complete engine", make_key(), INFO)
    path.write_bytes(b"a compl")
    with pytest.raises(ValueError, match="does not match its record .*rebuild"):
        load_engine(path, "10.3.0", "Orin")
    record_path(path).write_text("{not json")
    with pytest.raises(ValueError, match="record .* is corrupt"):
        load_engine(path, "10.3.0", "Orin")
    record_path(path).unlink()
    with pytest.raises(FileNotFoundError, match="has no record"):
        load_engine(path, "10.3.0", "Orin")
    with pytest.raises(FileNotFoundError, match="build-engine"):
        load_engine(tmp_path / "missing.engine", "10.3.0", "Orin")


def test_shape_profile_is_validated_and_default_covers_common_cameras():
    with pytest.raises(ValueError, match="min ≤ opt ≤ max"):
        ShapeProfile(min=(1, 3, 64, 64), opt=(1, 3, 32, 32), max=(4, 3, 128, 128))
    with pytest.raises(ValueError, match="B×3×H×W"):
        ShapeProfile(min=(1, 1, 64, 64), opt=(1, 1, 64, 64), max=(1, 1, 64, 64))
    profile = default_profile(640)
    for height, width in [(480, 640), (540, 960), (360, 640), (640, 480), (1080, 1920)]:
        shape = (1, *preprocess(np.zeros((height, width, 3), np.uint8), 640).shape)
        assert profile.contains(shape), (height, width, shape)
    assert not profile.contains((5, 3, 480, 640))


# --- calibration ----------------------------------------------------------------------------

def test_calibration_batches_have_the_profile_shape_and_the_runtime_preprocessing(tmp_path):
    folder = write_images(tmp_path / "calib", [(120, 160)] * 9 + [(160, 120)])
    batches = list(calibration_batches(folder, batch_size=4, height=96, width=128))
    assert len(batches) == 2                                  # 10 images: last partial dropped
    for batch in batches:
        assert batch.shape == (4, 3, 96, 128) and batch.dtype == np.float32
        assert 0.0 <= batch.min() and batch.max() <= 1.0
    first = cv2.cvtColor(cv2.imread(str(folder / "frame0.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(batches[0][0], preprocess(first, 128))


def test_calibration_resizes_other_aspects_and_rejects_too_few_images(tmp_path):
    tensor, resized = calibration_tensor(np.zeros((160, 120, 3), np.uint8), 96, 128)
    assert tensor.shape == (3, 96, 128) and resized
    assert not calibration_tensor(np.zeros((120, 160, 3), np.uint8), 96, 128)[1]
    folder = write_images(tmp_path / "few", [(120, 160)] * 3)
    with pytest.raises(ValueError, match=r"at least 8 images \(one batch\) .* found 3"):
        next(calibration_batches(folder, batch_size=8, height=96, width=128))


def test_calibration_images_are_spread_over_the_folder_and_identified(tmp_path):
    folder = write_images(tmp_path / "many", [(40, 40)] * 20)
    picked = calibration_images(folder, max_images=5)
    assert [p.name for p in picked] == [f"frame{i}.png" for i in (0, 5, 10, 14, 19)]
    assert calibration_id(picked, 4) != calibration_id(picked[:4], 4)
    assert calibration_id(picked, 4) != calibration_id(picked, 8)


def test_calibration_batches_from_gardens_point(gardens_point):
    batches = calibration_batches(gardens_point / "night_right", batch_size=2, height=352,
                                  width=640, max_images=4)
    shapes = [batch.shape for batch in batches]
    assert shapes == [(2, 3, 352, 640)] * 2


# --- build-engine command -------------------------------------------------------------------

def test_parse_shape():
    assert parse_shape("1x3x480x640") == (1, 3, 480, 640)
    with pytest.raises(Exception, match="BxCxHxW"):
        parse_shape("480x640")


def test_build_engine_without_tensorrt_says_where_to_build(tmp_path, monkeypatch, caplog):
    pytest.importorskip("onnx", reason="the onnx package is needed to export (pip install onnx)")
    from vpr_ros.export.onnx_export import export_onnx
    from test_export import tiny_model

    onnx_path = tmp_path / "model.onnx"
    export_onnx(tiny_model(), onnx_path)
    for name in ("tensorrt", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, name, None)
    assert cli_main(["build-engine", "--onnx", str(onnx_path)]) == 2
    assert "TensorRT is not usable here" in caplog.text and "target GPU" in caplog.text
    assert cli_main(["build-engine", "--onnx", str(tmp_path / "missing.onnx")]) == 2
    assert "ONNX file not found" in caplog.text


# --- build and load logic against fake tensorrt / pycuda modules (runs everywhere) ----------

@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """A tiny model and its ONNX export (in its own folder, so engines land beside it)."""
    pytest.importorskip("onnx", reason="the onnx package is needed to export (pip install onnx)")
    from vpr_ros.export.onnx_export import export_onnx
    from test_export import tiny_model

    model = tiny_model()
    path = tmp_path_factory.mktemp("fake_trt") / "tiny.onnx"
    export_onnx(model, path)
    return model, path


@pytest.fixture
def onnx_copy(tiny_onnx, tmp_path):
    """The tiny export copied into a fresh folder: no engines cached yet."""
    model, path = tiny_onnx
    copy = tmp_path / "tiny.onnx"
    copy.write_bytes(path.read_bytes())
    return model, copy


def sample_frames(sample_dir, traversal: str, count: int):
    from vpr_ros.io.images import list_images, read_image

    return [read_image(p) for p in list_images(sample_dir / traversal)[:count]]


def run_onnx(data: bytes, images, long_side: int) -> np.ndarray:
    """ONNX Runtime (CPU) descriptors of `images` from serialized ONNX `data`, L2-normalized."""
    import onnxruntime as ort

    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    out = np.concatenate([session.run(None, {"image": preprocess(image, long_side)[None]})[0]
                          for image in images])
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def float_types(proto, prefix: str) -> set:
    """ONNX element types of the float initializers of nodes whose name starts with `prefix`."""
    names = {i for node in proto.graph.node if node.name.startswith(prefix) for i in node.input}
    return {init.data_type for init in proto.graph.initializer
            if init.name in names and init.data_type in (1, 10)}


def test_fp16_engine_is_a_strongly_typed_network_with_a_float16_backbone_and_no_flags(
        onnx_copy, monkeypatch, sample_dir):
    import onnx

    from vpr_ros.export.tensorrt_build import build_engine

    model, onnx_path = onnx_copy
    trt, cuda = fake_gpu.install(monkeypatch)
    engine = build_engine(onnx_path)                                   # the default: fp16
    assert trt.network_flags == [1 << 0] and trt.builder_flags == []   # STRONGLY_TYPED only
    proto = onnx.load_from_string(trt.parsed[0])
    assert float_types(proto, "/backbone/") == {onnx.TensorProto.FLOAT16}
    assert float_types(proto, "/netvlad/") == {onnx.TensorProto.FLOAT}
    assert [t.type.tensor_type.elem_type for t in (*proto.graph.input, *proto.graph.output)] \
        == [onnx.TensorProto.FLOAT] * 2
    frames = sample_frames(sample_dir, "night_right", 4)
    expected = run_onnx(onnx_path.read_bytes(), frames, 128)
    assert np.min(np.sum(run_onnx(trt.parsed[0], frames, 128) * expected, axis=1)) > 0.999
    assert json.loads(record_path(engine).read_text())["key"]["precision"] == "fp16"
    assert build_engine(onnx_path) == engine and len(trt.parsed) == 1     # reused, not rebuilt
    assert cuda.pushed == [0]


def test_int8_engine_parses_qdq_convolutions_calibrated_on_the_sample(onnx_copy, monkeypatch,
                                                                      sample_dir):
    import onnx
    from onnx import numpy_helper

    from vpr_ros.export.tensorrt_build import build_engine

    model, onnx_path = onnx_copy
    trt, _ = fake_gpu.install(monkeypatch)
    engine = build_engine(onnx_path, "int8", calib_dir=sample_dir / "day_right",
                          calib_batch_size=4, calib_max_images=16)
    assert trt.network_flags == [1 << 0] and trt.builder_flags == []
    proto = onnx.load_from_string(trt.parsed[0])
    quantized = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    dequantized = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"]
    assert quantized and dequantized and all(n.name.startswith("/backbone/") for n in quantized)
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    points = [inits[n.input[2]] for n in quantized + dequantized if len(n.input) > 2]
    assert points and all(p.dtype == np.int8 and not p.any() for p in points)  # symmetric int8
    consumers = {i for node in proto.graph.node if node.name.startswith("/netvlad/")
                 for i in node.input}
    assert not consumers & {o for n in dequantized for o in n.output}          # head stays fp32
    frames = sample_frames(sample_dir, "night_right", 8)
    expected = run_onnx(onnx_path.read_bytes(), frames, 128)
    cosine = np.sum(run_onnx(trt.parsed[0], frames, 128) * expected, axis=1)
    assert cosine.min() > 0.995, cosine
    assert json.loads(record_path(engine).read_text())["key"]["calibration"]


def test_too_few_calibration_images_fail_before_tensorrt_starts(onnx_copy, monkeypatch,
                                                                tmp_path, caplog):
    from vpr_ros.export.tensorrt_build import build_engine

    _, onnx_path = onnx_copy
    folder = write_images(tmp_path / "few", [(96, 128)] * 3)
    trt, cuda = fake_gpu.install(monkeypatch)
    with pytest.raises(ValueError, match=r"at least 8 images \(one batch\) .* found 3"):
        build_engine(onnx_path, "int8", calib_dir=folder)
    assert not cuda.initialized and trt.parsed == []
    assert cli_main(["build-engine", "--onnx", str(onnx_path), "--precision", "int8",
                     "--calib", str(folder), "--calib-batch", "4"]) == 2
    assert "at least 4 images" in caplog.text and not cuda.initialized
    assert cli_main(["build-engine", "--onnx", str(onnx_path), "--precision", "int8"]) == 2
    assert "needs --calib DIR" in caplog.text


def test_build_runs_on_the_asked_cuda_device(onnx_copy, monkeypatch):
    from vpr_ros.export.tensorrt_build import build_engine

    _, onnx_path = onnx_copy
    _, cuda = fake_gpu.install(monkeypatch, gpus=("GPU A", "GPU B"))
    engine = build_engine(onnx_path, "fp32", device_index=1)
    assert cuda.pushed == [1]
    assert json.loads(record_path(engine).read_text())["key"]["gpu_name"] == "GPU B"
    with pytest.raises(RuntimeError, match="CUDA device 2 asked for, but 2 GPU"):
        build_engine(onnx_path, "fp32", device_index=2)
    assert cli_main(["build-engine", "--onnx", str(onnx_path), "--precision", "fp32",
                     "--device", "1", "--rebuild"]) == 0
    assert cuda.pushed == [1, 1]


@pytest.mark.parametrize("version, supported", [
    ("8.6.2", False), ("10.0.1", False), ("10.2.0", False), ("10.3.0", True),
    ("10.16.1.11", True), ("11.0.0", False), ("garbage", False)])
def test_tensorrt_versions_outside_10_3_to_10_x_are_refused_with_what_is_supported(
        version, supported):
    from vpr_ros.runtime.tensorrt_platform import UnsupportedTensorRT, check_tensorrt_version

    if supported:
        assert check_tensorrt_version(version) >= (10, 3)
    else:
        with pytest.raises(UnsupportedTensorRT, match=r"needs TensorRT 10\.3 to 10\.x.*JetPack"):
            check_tensorrt_version(version)


def test_build_engine_with_tensorrt_8_says_what_is_supported(onnx_copy, monkeypatch, caplog):
    _, onnx_path = onnx_copy
    trt, _ = fake_gpu.install(monkeypatch, version="8.6.2")
    assert cli_main(["build-engine", "--onnx", str(onnx_path)]) == 2
    assert "TensorRT 8.6.2 is not supported" in caplog.text and "10.3" in caplog.text
    assert trt.parsed == [] and "opset" not in caplog.text


def test_parse_failure_names_the_tensorrt_version_and_the_parser_error(onnx_copy, monkeypatch):
    from vpr_ros.export.tensorrt_build import build_engine

    _, onnx_path = onnx_copy
    trt, _ = fake_gpu.install(monkeypatch, version="10.5.0")
    trt.parse_ok = False
    with pytest.raises(ValueError, match=r"TensorRT 10\.5\.0 cannot parse .*\(fp32\).*"
                                         r"UNSUPPORTED_NODE"):
        build_engine(onnx_path, "fp32")


def test_runtime_loads_any_cached_engine_of_the_model_and_says_which(onnx_copy, monkeypatch,
                                                                     caplog):
    from vpr_ros.export.tensorrt_build import build_engine
    from vpr_ros.runtime.tensorrt_backend import TensorRTEmbedder

    model, onnx_path = onnx_copy
    trt, _ = fake_gpu.install(monkeypatch)
    built = build_engine(onnx_path, "fp32")                  # e.g. `build-engine --precision fp32`
    with caplog.at_level(logging.INFO):
        embedder = TensorRTEmbedder.from_onnx(onnx_path, expected_fingerprint=model.fingerprint())
    assert embedder.engine_path == built and embedder.precision == "fp32"
    assert len(trt.parsed) == 1                               # nothing built behind our back
    assert f"loaded fp32 engine {built}" in caplog.text and "'Orin'" in caplog.text
    out = embedder.embed([np.full((96, 128, 3), 200, np.uint8)] * 3)
    np.testing.assert_allclose(out, np.full((3, 24), 24 ** -0.5, np.float32), rtol=1e-6)
    with pytest.raises(ValueError, match="is a fp32 engine, int8 was asked for"):
        TensorRTEmbedder(built, precision="int8")
    caplog.clear()
    fp16 = TensorRTEmbedder.from_onnx(onnx_path, precision="fp16")
    assert fp16.precision == "fp16" and fp16.engine_path != built and len(trt.parsed) == 2
    assert "building a fp16 one now" in caplog.text and "vpr-ros build-engine" in caplog.text


# --- real TensorRT (NVIDIA GPU with TensorRT 10.3+ and pycuda) ------------------------------

@pytest.fixture(scope="module")
def gpu_onnx(tmp_path_factory):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (needs an NVIDIA GPU)")
    pytest.importorskip("pycuda.driver", reason="pycuda is not installed (pip install pycuda)")
    pytest.importorskip("onnx", reason="the onnx package is needed to export (pip install onnx)")
    from vpr_ros.export.onnx_export import export_onnx
    from vpr_ros.runtime.tensorrt_platform import tensorrt_platform
    from test_export import tiny_model

    try:
        tensorrt_platform()
    except Exception as err:
        pytest.skip(f"no usable TensorRT GPU: {type(err).__name__}: {err}")
    model = tiny_model()
    path = tmp_path_factory.mktemp("trt") / "tiny.onnx"
    export_onnx(model, path)
    return model, path


@pytest.fixture
def gpu_frames():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            for h, w in [(96, 128), (96, 128), (128, 96), (120, 160), (96, 128)]]


@pytest.mark.parametrize("precision, min_cosine", [("fp32", 0.9999), ("fp16", 0.995)])
def test_tensorrt_matches_onnxruntime_and_reuses_its_cached_engine(gpu_onnx, gpu_frames,
                                                                   precision, min_cosine):
    from vpr_ros.export.tensorrt_build import build_engine
    from vpr_ros.runtime.onnxruntime_backend import OnnxRuntimeEmbedder
    from vpr_ros.runtime.tensorrt_backend import TensorRTEmbedder

    model, onnx_path = gpu_onnx
    engine = TensorRTEmbedder.from_onnx(onnx_path, precision=precision, batch_size=4,
                                        expected_fingerprint=model.fingerprint())
    assert engine.precision == precision
    stamp = engine.engine_path.stat().st_mtime_ns
    assert build_engine(onnx_path, precision=precision) == engine.engine_path
    assert engine.engine_path.stat().st_mtime_ns == stamp
    actual = engine.embed(gpu_frames)
    expected = OnnxRuntimeEmbedder(onnx_path).embed(gpu_frames)
    np.testing.assert_allclose(np.linalg.norm(actual, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(actual * expected, axis=1)) >= min_cosine


def test_tensorrt_int8_engine_stays_close_to_fp32_on_the_bundled_sample(gpu_onnx, sample_dir):
    from vpr_ros.export.tensorrt_build import build_engine
    from vpr_ros.runtime.tensorrt_backend import TensorRTEmbedder

    _, onnx_path = gpu_onnx
    int8 = TensorRTEmbedder(build_engine(onnx_path, "int8", calib_dir=sample_dir / "day_right",
                                         calib_batch_size=4, calib_max_images=40))
    fp32 = TensorRTEmbedder(build_engine(onnx_path, "fp32"))
    assert (int8.precision, fp32.precision) == ("int8", "fp32")
    frames = sample_frames(sample_dir, "night_right", 20)
    cosine = np.sum(int8.embed(frames) * fp32.embed(frames), axis=1)
    assert cosine.min() >= 0.99, cosine


def test_auto_picks_tensorrt_on_a_gpu(gpu_onnx, gpu_frames):
    from vpr_ros.runtime.backends import create_embedder

    model, onnx_path = gpu_onnx
    embedder = create_embedder(model, "auto", onnx=onnx_path)
    assert embedder.backend == "tensorrt" and embedder.device == "cuda:0"
    assert embedder.embed(gpu_frames).shape == (5, 24)


def test_tensorrt_rejects_garbage_engine_and_shapes_outside_its_profile(gpu_onnx):
    from vpr_ros.export.tensorrt_build import build_engine
    from vpr_ros.runtime.engine_cache import load_engine
    from vpr_ros.runtime.tensorrt_backend import TensorRTEmbedder
    from vpr_ros.runtime.tensorrt_platform import tensorrt_platform

    _, onnx_path = gpu_onnx
    narrow = ShapeProfile(min=(1, 3, 96, 96), opt=(1, 3, 96, 128), max=(2, 3, 128, 128))
    engine = TensorRTEmbedder(build_engine(onnx_path, "fp32", profile=narrow))
    assert engine.batch_size == 2
    with pytest.raises(ValueError, match="outside the engine's shape profile"):
        engine.embed([np.zeros((128, 64, 3), np.uint8)])          # runs at 128×64: too narrow
    version, gpu = tensorrt_platform()
    _, key, info = load_engine(engine.engine_path, version, gpu)
    garbage = save_engine(onnx_path.with_name("garbage.engine"), b"\0" * 1024, key, info)
    with pytest.raises(ValueError, match="cannot deserialize"):
        TensorRTEmbedder(garbage)
