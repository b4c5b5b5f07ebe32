"""Backend selection: explicit backends, and `auto` falling back with its reasons."""
import logging
import sys

import numpy as np
import pytest

pytest.importorskip("onnx", reason="the onnx package is needed to export (pip install onnx)")

from vpr_ros.export.onnx_export import export_onnx  # noqa: E402
from vpr_ros.model.checkpoint import save_checkpoint  # noqa: E402
from vpr_ros.runtime.backends import _Sources, create_embedder, select_auto  # noqa: E402
from vpr_ros.runtime.embedder import load_embedder  # noqa: E402
from vpr_ros.runtime.onnxruntime_backend import OnnxRuntimeEmbedder  # noqa: E402

import fake_gpu  # noqa: E402
from test_export import tiny_model  # noqa: E402

NO_TENSORRT = {"tensorrt": None, "pycuda": None, "pycuda.driver": None}


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """A tiny model, its checkpoint and its ONNX export."""
    folder = tmp_path_factory.mktemp("deploy")
    model = tiny_model()
    save_checkpoint(folder / "model.pt", model)
    export_onnx(model, folder / "model.onnx")
    return model, folder / "model.pt", folder / "model.onnx"


@pytest.fixture
def frames():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in
            [(96, 128), (120, 160), (96, 128), (200, 100)]]


def hide_modules(monkeypatch, names):
    """Make `import name` raise ImportError, as on a machine without the package."""
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


def test_auto_skips_tensorrt_when_its_import_fails_and_uses_onnxruntime(deployed, monkeypatch,
                                                                         frames):
    model, checkpoint, onnx_path = deployed
    hide_modules(monkeypatch, NO_TENSORRT)
    embedder, skipped = select_auto(_Sources(model, checkpoint, onnx_path, None),
                                    batch_size=2, threads=1, device=None, precision="fp16")
    assert embedder.backend == "onnxruntime" and embedder.device == "cpu"
    reasons = dict(skipped)
    assert reasons["tensorrt"].startswith("import failed")
    assert set(reasons) <= {"tensorrt", "onnxruntime-cuda"}
    reference = create_embedder(model, "torch", threads=1).embed(frames)
    assert np.abs(embedder.embed(frames) - reference).max() <= 1e-4


def test_auto_falls_back_to_torch_when_onnxruntime_import_fails(deployed, monkeypatch, frames):
    model, checkpoint, onnx_path = deployed
    hide_modules(monkeypatch, {**NO_TENSORRT, "onnxruntime": None})
    embedder, skipped = select_auto(_Sources(model, checkpoint, onnx_path, None),
                                    batch_size=2, threads=1, device=None, precision="fp16")
    assert embedder.backend == "torch"
    assert [name for name, _ in skipped] == ["tensorrt", "onnxruntime-cuda", "onnxruntime-cpu"]
    assert all(reason.startswith("import failed") for _, reason in skipped)
    assert embedder.embed(frames).shape == (4, 24)


def test_auto_exports_a_checkpoint_once_and_logs_its_choice(deployed, tmp_path, monkeypatch,
                                                            caplog):
    model, _, _ = deployed
    hide_modules(monkeypatch, NO_TENSORRT)
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(checkpoint, model)
    with caplog.at_level(logging.INFO, logger="vpr_ros.runtime.backends"):
        embedder = load_embedder(checkpoint, backend="auto", threads=1)
    assert embedder.backend == "onnxruntime"
    assert embedder.onnx_path.parent == tmp_path / ".vpr_ros_cache"
    assert embedder.fingerprint == model.fingerprint()
    assert "backend auto: using onnxruntime on cpu" in caplog.text
    assert "tensorrt: import failed" in caplog.text


def test_auto_with_an_in_memory_model_uses_torch_and_writes_nothing(deployed, monkeypatch,
                                                                    tmp_path):
    model, _, _ = deployed
    hide_modules(monkeypatch, NO_TENSORRT)
    monkeypatch.chdir(tmp_path)
    embedder, skipped = select_auto(_Sources(model, None, None, None), batch_size=1, threads=1,
                                    device=None, precision="fp16")
    assert embedder.backend == "torch"
    assert "no ONNX file" in dict(skipped)["onnxruntime-cpu"]
    assert list(tmp_path.iterdir()) == []


def test_auto_warns_and_falls_back_on_a_corrupt_onnx_file(deployed, tmp_path, monkeypatch, caplog):
    model, _, _ = deployed
    hide_modules(monkeypatch, NO_TENSORRT)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07not really an onnx model")
    with caplog.at_level(logging.WARNING):
        embedder = create_embedder(model, "auto", onnx=broken, threads=1)
    assert embedder.backend == "torch"
    assert "broken.onnx" in caplog.text and "re-export" in caplog.text


def test_explicit_onnxruntime_needs_only_the_onnx_file(deployed, frames):
    model, _, onnx_path = deployed
    embedder = create_embedder(None, "onnxruntime", checkpoint=onnx_path, threads=1)
    assert isinstance(embedder, OnnxRuntimeEmbedder)
    assert (embedder.dim, embedder.fingerprint, embedder.long_side) == (
        24, model.fingerprint(), 128)
    out = embedder.embed(frames)
    assert out.dtype == np.float32 and out.shape == (4, 24)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_onnx_from_another_model_is_refused(deployed):
    _, _, onnx_path = deployed
    other = tiny_model(whitening_dim=16)
    with pytest.raises(ValueError, match="exported from model"):
        create_embedder(other, "onnxruntime", onnx=onnx_path)


def test_corrupt_or_missing_onnx_gives_a_clear_error(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"cannot load .*broken\.onnx.*re-export"):
        OnnxRuntimeEmbedder(broken)
    with pytest.raises(FileNotFoundError, match="vpr-ros export"):
        OnnxRuntimeEmbedder(tmp_path / "missing.onnx")


def test_explicit_backends_that_cannot_run_here_say_why(deployed, monkeypatch):
    model, _, onnx_path = deployed
    hide_modules(monkeypatch, NO_TENSORRT)
    with pytest.raises(ValueError, match="backend tensorrt is not available here: import failed"):
        create_embedder(model, "tensorrt", onnx=onnx_path)
    with pytest.raises(ValueError, match="unknown backend"):
        create_embedder(model, "openvino")
    with pytest.raises(ValueError, match="needs a .pt checkpoint"):
        create_embedder(None, "torch", onnx=onnx_path)


def test_onnxruntime_cuda_reports_a_cpu_only_build(deployed, monkeypatch):
    from vpr_ros.runtime import onnxruntime_backend

    if onnxruntime_backend.cuda_provider_available():
        pytest.skip("this onnxruntime has the CUDA provider")
    model, _, onnx_path = deployed
    with pytest.raises(ValueError, match="onnxruntime-gpu"):
        create_embedder(model, "onnxruntime", onnx=onnx_path, device="cuda")


# --- auto with a broken GPU stack (fake tensorrt / pycuda modules) ---------------------------

def test_auto_falls_back_when_the_gpu_stack_raises_its_own_error_type(deployed, monkeypatch,
                                                                      frames):
    model, checkpoint, onnx_path = deployed
    fake_gpu.install(monkeypatch, init_error=fake_gpu.FakeCudaError("cuInit failed: no driver"))
    embedder, skipped = select_auto(_Sources(model, checkpoint, onnx_path, None), batch_size=2,
                                    threads=1, device=None, precision="auto")
    assert embedder.backend == "onnxruntime"
    assert dict(skipped)["tensorrt"] == ("no usable CUDA GPU: FakeCudaError: cuInit failed: "
                                         "no driver")


def test_auto_falls_back_when_the_first_frame_fails_and_logs_the_reason_once(
        deployed, monkeypatch, tmp_path, caplog):
    from vpr_ros.export.tensorrt_build import build_engine

    model, _, onnx_path = deployed
    local = tmp_path / "model.onnx"
    local.write_bytes(onnx_path.read_bytes())
    trt, _ = fake_gpu.install(monkeypatch)
    build_engine(local, "fp16")                                  # a cached engine loads fine...
    trt.execute_error = fake_gpu.FakeCudaError("an illegal memory access was encountered")
    with caplog.at_level(logging.INFO):                          # ...but cannot run a frame
        embedder = create_embedder(model, "auto", onnx=local, threads=1)
    assert embedder.backend == "onnxruntime"
    reasons = [r for r in caplog.records if "illegal memory access" in r.getMessage()]
    assert len(reasons) == 1 and reasons[0].levelno == logging.WARNING
    assert "tensorrt: failed: FakeCudaError" in reasons[0].getMessage()
    assert "using onnxruntime on cpu" in reasons[0].getMessage()


def test_auto_skips_an_unsupported_tensorrt_and_a_cpu_device(deployed, monkeypatch):
    model, checkpoint, onnx_path = deployed
    fake_gpu.install(monkeypatch, version="8.6.2")
    source = _Sources(model, checkpoint, onnx_path, None)
    _, skipped = select_auto(source, batch_size=1, threads=1, device=None, precision="auto")
    assert "TensorRT 8.6.2 is not supported" in dict(skipped)["tensorrt"]
    _, skipped = select_auto(source, batch_size=1, threads=1, device="cpu", precision="auto")
    assert "not a CUDA device" in dict(skipped)["tensorrt"]


def test_explicit_tensorrt_uses_the_cuda_device_index_and_a_given_engine(deployed, monkeypatch,
                                                                          tmp_path):
    from vpr_ros.export.tensorrt_build import build_engine

    model, _, onnx_path = deployed
    local = tmp_path / "model.onnx"
    local.write_bytes(onnx_path.read_bytes())
    _, cuda = fake_gpu.install(monkeypatch, gpus=("GPU A", "GPU B"))
    engine = build_engine(local, "fp32", device_index=1)
    embedder = create_embedder(model, "tensorrt", engine=engine, device="cuda:1")
    assert (embedder.device, embedder.precision, embedder.engine_path) == ("cuda:1", "fp32", engine)
    assert set(cuda.pushed) == {1}
    with pytest.raises(ValueError, match="is a fp32 engine, fp16 was asked for"):
        create_embedder(model, "tensorrt", engine=engine, device="cuda:1", precision="fp16")
