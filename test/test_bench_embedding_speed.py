"""bench/embedding_speed.py's TensorRT rows: run against the fake tensorrt/pycuda of fake_gpu (so
the path is exercised on this CPU-only machine), and the one line printed when they are skipped."""
import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

import fake_gpu
from vpr_ros.runtime.engine_cache import record_path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "embedding_speed.py"


@pytest.fixture
def bench():
    spec = importlib.util.spec_from_file_location("embedding_speed", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tiny_export(tmp_path):
    pytest.importorskip("onnx", reason="the onnx package is needed to export (pip install onnx)")
    from vpr_ros.export.onnx_export import export_onnx
    from test_export import tiny_model

    model = tiny_model()
    path = tmp_path / "bench_128.onnx"
    export_onnx(model, path)
    return model, path


def test_tensorrt_rows_time_fp16_and_int8_engines_from_build_engine_at_batch_1_on_the_frames(
        bench, tiny_export, monkeypatch, capsys):
    from vpr_ros.io.images import list_images, read_image

    model, onnx_path = tiny_export
    trt, cuda = fake_gpu.install(monkeypatch)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(8)]
    timed = []
    real_time_embedder = bench.time_embedder

    def recording_time_embedder(embedder, frames_, batch, iterations, warmup):
        timed.append((embedder, frames_, batch))
        return real_time_embedder(embedder, frames_, batch, iterations, warmup)

    monkeypatch.setattr(bench, "time_embedder", recording_time_embedder)
    rows = bench.tensorrt_rows(onnx_path, model.fingerprint(), frames, "128x96",
                               SimpleNamespace(iterations=3, warmup=1))

    assert [(size, batch, backend) for size, batch, backend, _ in rows] == [
        ("128x96", 1, "tensorrt-fp16"), ("128x96", 1, "tensorrt-int8")]
    assert all(r["fps"] > 0 and r["p50"] >= r["min"] for *_, r in rows)
    assert [(e.backend, e.precision, e.batch_size, f is frames, b) for e, f, b in timed] == [
        ("tensorrt", "fp16", 1, True, 1), ("tensorrt", "int8", 1, True, 1)]
    # both engines were built by build_engine into its cache beside the export, nothing else
    assert len(trt.parsed) == 2 and trt.network_flags == [1, 1] and trt.builder_flags == []
    engines = sorted(onnx_path.parent.glob("bench_128.*.engine"))
    records = {json.loads(record_path(e).read_text())["key"]["precision"]: e for e in engines}
    assert set(records) == {"fp16", "int8"}
    assert {e.engine_path for e, _, _ in timed} == set(engines)
    assert json.loads(record_path(records["int8"]).read_text())["key"]["calibration"]
    # without --calib, INT8 is calibrated on the bench frames themselves
    calib = list_images(onnx_path.with_name("bench_128_calib"))
    assert len(calib) == 8
    assert all(np.array_equal(read_image(p), f) for p, f in zip(calib, frames))
    out = capsys.readouterr().out
    assert "batch 1 tensorrt-fp16" in out and "batch 1 tensorrt-int8" in out
    assert "failed" not in out
    # a second call reuses the cached engines instead of building again
    bench.tensorrt_rows(onnx_path, model.fingerprint(), frames, "128x96",
                        SimpleNamespace(iterations=1, warmup=0))
    assert len(trt.parsed) == 2


def test_a_failed_tensorrt_engine_prints_why_and_keeps_the_other_row(bench, tiny_export,
                                                                     monkeypatch, capsys):
    model, onnx_path = tiny_export
    trt, _ = fake_gpu.install(monkeypatch)
    frames = [np.full((96, 128, 3), 100, np.uint8)] * 8
    few = onnx_path.with_name("few")                             # 3 images: less than one batch
    few.mkdir()
    for i in range(3):
        cv2.imwrite(str(few / f"frame{i}.png"), frames[0])
    rows = bench.tensorrt_rows(onnx_path, model.fingerprint(), frames, "128x96",
                               SimpleNamespace(iterations=1, warmup=0), calib_dir=few)
    assert [backend for _, _, backend, _ in rows] == ["tensorrt-fp16"]
    out = capsys.readouterr().out
    [line] = [line for line in out.splitlines() if "tensorrt-int8" in line]
    assert line.split()[:4] == ["batch", "1", "tensorrt-int8", "failed:"]
    assert "ValueError: INT8 calibration needs at least 8 images" in line and "found 3" in line


def _run_main(bench, monkeypatch, capsys, argv=()):
    seen = []

    def no_model(width, height, args, tmp, rng):        # skip building and timing the real model
        seen.append(args.tensorrt_ok)
        return []

    monkeypatch.setattr(bench, "bench_size", no_model)
    assert bench.main(["--sizes", "64x48", *argv]) == 0
    return seen, capsys.readouterr().out


@pytest.mark.parametrize("setup, reason", [
    ("no tensorrt", "TensorRT rows skipped: import failed: "),
    ("no gpu", "TensorRT rows skipped: FakeCudaError: cuInit failed: no CUDA-capable device"),
    ("tensorrt 8", "TensorRT rows skipped: UnsupportedTensorRT: TensorRT 8.6.2 is not supported"),
])
def test_without_tensorrt_pycuda_or_a_gpu_one_line_says_the_rows_were_skipped_and_why(
        bench, monkeypatch, capsys, setup, reason):
    if setup == "no tensorrt":
        monkeypatch.setitem(sys.modules, "tensorrt", None)          # import tensorrt fails
    elif setup == "no gpu":
        fake_gpu.install(monkeypatch, init_error=fake_gpu.FakeCudaError(
            "cuInit failed: no CUDA-capable device is detected"))
    else:
        fake_gpu.install(monkeypatch, version="8.6.2")
    seen, out = _run_main(bench, monkeypatch, capsys)
    lines = [line for line in out.splitlines() if "TensorRT" in line]
    assert len(lines) == 1 and lines[0].startswith(reason), out
    assert seen == [False]


def test_with_tensorrt_present_main_asks_for_the_rows_unless_told_not_to(bench, monkeypatch,
                                                                         capsys):
    fake_gpu.install(monkeypatch)
    seen, out = _run_main(bench, monkeypatch, capsys)
    assert seen == [True] and "TensorRT 10.3.0 on 'Orin'" in out and "skipped" not in out
    seen, out = _run_main(bench, monkeypatch, capsys, ["--no-tensorrt"])
    assert seen == [False] and "TensorRT rows skipped: --no-tensorrt" in out
