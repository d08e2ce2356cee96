"""The OpenVINO engine on real model files: the shipped detector, and small IRs built here
with OpenVINO's own opset for the SSD and classifier adapters."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from agent.infer.engine import AsyncDetector, BadFrame, Classifier, Detector, Model, ModelLoadError
from agent.infer.geometry import letterbox
from helpers import wait_until
from hw_sim.harness import DEFAULT_MODEL
from hw_sim.scene import PartRenderer


@pytest.fixture(scope="module")
def parts():
    renderer = PartRenderer(seed=9100)
    return [renderer.render() for _ in range(12)]


@pytest.fixture(scope="module")
def detector():
    return Detector(DEFAULT_MODEL)


def _save(model: ov.Model, folder: Path, name: str, metadata: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(folder / f"{name}.xml"), compress_to_fp16=False)
    if metadata:
        (folder / "metadata.yaml").write_text(metadata)
    return folder


def _ssd_model(rows: np.ndarray) -> ov.Model:
    """Input [1,3,64,64]; output [1,1,N,7] = rows (+ 0 x mean(input), so the graph uses the input)."""
    image = ops.parameter([1, 3, 64, 64], np.float32, name="data")
    zero = ops.multiply(ops.reduce_mean(image, [0, 1, 2, 3], keep_dims=False), ops.constant(np.float32(0)))
    out = ops.add(ops.constant(rows.reshape(1, 1, -1, 7).astype(np.float32)), zero)
    return ov.Model([out], [image], "ssd-test")


def _classifier_model(classes: int = 4) -> ov.Model:
    """Input [1,3,32,32] RGB in [0,1]; logits = mean colour . W, so the colour decides the class."""
    image = ops.parameter([1, 3, 32, 32], np.float32, name="input")
    mean = ops.reduce_mean(image, [2, 3], keep_dims=False)  # [N, 3] RGB means
    weights = np.zeros((3, classes), np.float32)
    weights[0, 0] = weights[1, 1] = weights[2, 2] = 10.0  # red, green, blue
    logits = ops.matmul(mean, ops.constant(weights), False, False)
    return ov.Model([logits], [image], "classifier-test")


def test_shipped_detector_info(detector):
    info = detector.info
    assert info.adapter == "yolov8"
    assert info.names == {0: "scratch", 1: "dent", 2: "stain"}
    assert info.input_size == (320, 320)


def test_in_graph_letterbox_matches_cv2_letterbox(detector, parts):
    """The graph's resize + pad must give the detections the model was trained to give."""
    square = Model(DEFAULT_MODEL)  # fed frames already letterboxed by cv2 (a 320x320 source is a no-op)
    plain = Detector(square)
    compared = 0
    for part in parts:
        graph = detector.detect(part.image, 0.3)
        boxed, box = letterbox(part.image, (320, 320))
        reference = plain.detect(boxed, 0.3)
        ref_source = box.to_source(np.array([d.box for d in reference]).reshape(-1, 4), 640, 480)
        assert len(graph) == len(reference)
        for got, want, want_box in zip(sorted(graph, key=lambda d: d.box), sorted(reference, key=lambda d: d.box),
                                       sorted(ref_source.tolist())):
            assert got.label == want.label
            np.testing.assert_allclose(got.box, want_box, atol=3.0)
            compared += 1
    assert compared > 0


def _same_detections(got, want) -> int:
    """Same labels in the same order, boxes within 3 px, scores within 0.05; how many compared."""
    assert [d.label for d in got] == [d.label for d in want]
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.box, b.box, atol=3.0)
        assert abs(a.score - b.score) < 0.05
    return len(got)


def test_host_and_graph_resize_agree(parts):
    """cv2 on the host (the CPU default) and OpenVINO's in-graph resize give the same detections."""
    host = Detector(Model(DEFAULT_MODEL, resize="host"))
    graph = Detector(Model(DEFAULT_MODEL, resize="graph"))
    assert host.model.host_resize and not graph.model.host_resize
    compared = 0
    for part in parts:
        for frame in (part.image, cv2.resize(part.image, (1280, 720))):
            compared += _same_detections(host.detect(frame, 0.3), graph.detect(frame, 0.3))
    assert compared > 0


def test_precision_f32_compiles_in_f32_and_agrees_with_the_default(parts):
    """precision f32 reaches the compiled model (on a bf16 CPU the default would run the FP32 IR in
    bf16); the default precision gives the same detections within bf16's error."""
    fp32_ir = DEFAULT_MODEL.parent / "fp32"  # the shipped detector's FP32 IR, beside the INT8 one
    exact = Detector(Model(fp32_ir, precision="f32"))
    default = Detector(Model(fp32_ir))
    compiled = exact.model.compiled((480, 640))
    assert compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
    compared = 0
    for part in parts:
        compared += _same_detections(default.detect(part.image, 0.3), exact.detect(part.image, 0.3))
    assert compared > 0


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="unknown inference precision 'int4'"):
        Model(DEFAULT_MODEL, precision="int4")


def test_unknown_resize_mode_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="unknown resize mode 'gpu'"):
        Model(DEFAULT_MODEL, resize="gpu")


def test_frames_of_other_sizes_and_channels_are_converted(detector, parts):
    image = parts[0].image
    for frame in (cv2.resize(image, (1280, 960)), cv2.cvtColor(image, cv2.COLOR_BGR2GRAY),
                  cv2.cvtColor(image, cv2.COLOR_BGR2BGRA), image[:, :, :1]):
        found = detector.detect(frame, 0.3)
        height, width = frame.shape[:2]
        assert all(0 <= d.box[0] < d.box[2] <= width and 0 <= d.box[1] < d.box[3] <= height for d in found)
    for bad in (image.astype(np.float32), np.zeros((10, 10, 5), np.uint8), np.zeros((0, 0, 3), np.uint8)):
        with pytest.raises(BadFrame):
            detector.detect(bad, 0.3)


def test_fill_writes_the_prepared_frames_into_the_request(detector, parts):
    """The engine resizes straight into the request's input: the same pixels as `prepare`."""
    model = detector.model
    frames = [p.image for p in parts[:3]]
    request = model.compiled(frames[0].shape[:2], 3).create_infer_request()
    model.fill(request, frames)
    for got, frame in zip(request.get_input_tensor(0).data, frames):
        np.testing.assert_array_equal(got, model.prepare(frame))
    with pytest.raises(ValueError, match="2 frames for a request of batch 3"):
        model.fill(request, frames[:2])


def test_a_batch_size_compiles_once_in_the_background(parts, caplog):
    """`ready` starts a missing variant on a thread of its own; asking again, or compiling the
    same variant from two threads, compiles it once, and other variants stay usable meanwhile."""
    model = Model(DEFAULT_MODEL, performance_hint="THROUGHPUT")
    size = parts[0].image.shape[:2]
    caplog.set_level(logging.INFO, logger="agent.infer.engine")
    assert model.ready(size, 3) is False
    assert model.ready(size, 3) is False  # still compiling: not a second time
    model.compiled(size, 1)  # another variant, while batch 3 compiles
    threads = [threading.Thread(target=model.compiled, args=(size, 3)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert wait_until(lambda: model.ready(size, 3), 60)
    compiles = [r.getMessage() for r in caplog.records if r.getMessage().startswith("compiled ")]
    assert sum(" x3 " in m for m in compiles) == 1 and sum(" x1 " in m for m in compiles) == 1, compiles


def test_batch_and_async_agree_with_single_frames(detector, parts):
    frames = [p.image for p in parts[:6]]
    single = [detector.detect(f, 0.3) for f in frames]
    assert detector.detect_batch(frames, 0.3) == single

    results = {}
    runner = AsyncDetector(Detector(Model(DEFAULT_MODEL, performance_hint="THROUGHPUT")), 0.3,
                           lambda dets, key: results.update({key: dets[0]}))
    for i, frame in enumerate(frames):
        runner.submit([frame], i)
    runner.submit(frames[:3], "batch")  # frames from several cameras, one batch
    runner.wait_all()
    for i in range(6):
        assert [d.label for d in results[i]] == [d.label for d in single[i]]
        for got, want in zip(results[i], single[i]):
            np.testing.assert_allclose(got.box, want.box, atol=1.0)
    assert runner.errors == 0


def test_cache_dir_is_used(tmp_path, parts):
    Detector(DEFAULT_MODEL, cache_dir=tmp_path / "cache").detect(parts[0].image, 0.5)
    assert any((tmp_path / "cache").iterdir())


def test_ssd_adapter_maps_normalised_boxes_to_source_pixels(tmp_path):
    rows = np.array([[0, 1, 0.9, 0.1, 0.2, 0.5, 0.6], [0, 2, 0.3, 0, 0, 1, 1], [-1, 0, 0, 0, 0, 0, 0]], np.float32)
    folder = _save(_ssd_model(rows), tmp_path / "ssd", "ssd")
    detector = Detector(folder)
    assert detector.info.adapter == "ssd"
    found = detector.detect(np.zeros((480, 640, 3), np.uint8), 0.5)
    assert len(found) == 1 and found[0].class_id == 1 and found[0].score == pytest.approx(0.9)
    np.testing.assert_allclose(found[0].box, [64, 96, 320, 288], atol=1e-3)


def test_classifier_adapter_top_k_on_batched_crops(tmp_path):
    folder = _save(_classifier_model(), tmp_path / "cls", "cls", "task: classify\nnames: {0: red, 1: green, 2: blue, 3: none}\n")
    classifier = Classifier(folder)
    assert classifier.info.adapter == "classifier"
    red, green, blue = (np.full((50, 70, 3), bgr, np.uint8) for bgr in ((0, 0, 255), (0, 255, 0), (255, 0, 0)))
    results = classifier.classify([red, green, blue, green[:10]], k=2)
    assert [r[0][0] for r in results] == ["red", "green", "blue", "green"]
    for r in results:
        assert r[0][1] > 0.9 and r[0][1] >= r[1][1] and sum(p for _, p in r) <= 1.0 + 1e-6


@pytest.mark.parametrize("kind", ["missing", "no-bin", "truncated-xml", "bad-bin", "not-a-model", "two-models"])
def test_bad_model_files_name_the_file(tmp_path, kind):
    source = next(DEFAULT_MODEL.glob("*.xml"))
    folder = tmp_path / "m"
    folder.mkdir()
    xml = folder / "m.xml"
    if kind != "missing":
        xml.write_text(source.read_text())
        (folder / "m.bin").write_bytes(source.with_suffix(".bin").read_bytes())
    if kind == "missing":
        target, expected = folder / "absent", f"model not found: {folder / 'absent'}"
    elif kind == "no-bin":
        (folder / "m.bin").unlink()
        target, expected = folder, f"model weights not found: {folder / 'm.bin'}"
    elif kind == "truncated-xml":
        xml.write_text(source.read_text()[:2000])
        target, expected = folder, f"{xml}: not a valid OpenVINO IR, the XML is truncated or corrupt"
    elif kind == "bad-bin":
        (folder / "m.bin").write_bytes(b"\0" * 64)
        target, expected = xml, f"{xml}: not a readable model"
    elif kind == "not-a-model":
        (folder / "m.pt").write_bytes(b"\x80\x04junk")
        target, expected = folder / "m.pt", f"{folder / 'm.pt'}: not an OpenVINO IR (.xml + .bin) or ONNX (.onnx) model"
    else:
        (folder / "n.xml").write_text(source.read_text())
        target, expected = folder, f"{folder}: expected exactly one .xml (or .onnx) model in the folder, found m.xml, n.xml"
    with pytest.raises(ModelLoadError) as info:
        Detector(target)
    assert str(info.value).startswith(expected)


def test_unknown_output_layout_lists_shapes_and_adapters(tmp_path):
    image = ops.parameter([1, 3, 16, 16], np.float32, name="x")
    folder = _save(ov.Model([ops.relu(image)], [image], "odd"), tmp_path / "odd", "odd")
    with pytest.raises(ModelLoadError, match=r"output shapes \[\[1, 3, 16, 16\]\] match no adapter \(tried: yolov8 .*ssd .*classifier"):
        Model(folder)


def test_models_inspect_cli():
    result = subprocess.run([sys.executable, "-m", "agent", "models", "inspect", str(DEFAULT_MODEL)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "adapter:  yolov8" in result.stdout and "0=scratch, 1=dent, 2=stain" in result.stdout
    assert "ran once on a random 640x480 frame" in result.stdout


def test_bench_cli_prints_the_table_and_where_the_time_goes():
    """A short `edge-agent bench`: it runs benchmark_app and the pipeline on the shipped IR and prints
    figures (speed is not asserted here: benchmarks print, they do not pass or fail)."""
    result = subprocess.run([sys.executable, "-m", "agent", "bench", str(DEFAULT_MODEL), "--seconds", "1",
                             "--rounds", "1", "--breakdown"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    row = next(line for line in lines if line.startswith("int8 ") and "FPS" in line)
    assert len(re.findall(r"\d+\.\d FPS", row)) == 4, row
    split = lines[lines.index(next(line for line in lines if line.startswith("where the pipeline's time goes"))) + 1]
    assert re.fullmatch(r"int8\s+\d+\.\d\d  \d+\.\d\d  \d+\.\d\d", split), split


def test_async_results_come_in_submission_order_on_the_collecting_thread(parts):
    import threading
    import time

    delivered, threads, woken = [], set(), threading.Event()
    runner = AsyncDetector(Detector(Model(DEFAULT_MODEL, performance_hint="THROUGHPUT")), 0.3,
                           lambda dets, key: (delivered.append(key), threads.add(threading.get_ident())),
                           jobs=2, on_ready=woken.set)
    for i in range(7):  # more than the two requests: submit delivers the oldest to reuse its request
        runner.submit([parts[i % len(parts)].image], i)
    assert delivered == list(range(len(delivered))) and len(delivered) >= 5
    assert woken.wait(5)  # a request finished: on_ready ran (on an OpenVINO thread)
    deadline = time.monotonic() + 5
    while not runner.finished() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runner.collect() >= 1  # without blocking
    runner.wait_all()
    assert delivered == list(range(7)) and threads == {threading.get_ident()}
    assert not runner.finished() and runner.collect() == 0
