"""`splitattn bench` on a tiny grid: every row measured, ratios against timm computed from the same run,
the roof measured, training rows with peak memory, and a missing peer named instead of a traceback."""

from __future__ import annotations

import json
import sys

import pytest

from splitattn.benchmark.suite import BenchConfig, BenchError, run_bench
from splitattn.cli import main

TINY = dict(model="resnest14", batch_sizes=(2,), image_size=64, modes=("eager",), repeats=2, aot=False)


def test_bench_grid_and_ratios():
    result = run_bench(BenchConfig(**TINY, dtypes=("fp32",), layouts=("nhwc",), runtimes=()), progress=False)
    forms = [(r.task, r.form) for r in result.rows]
    assert forms == [("inference", "ours"), ("inference", "ours-deploy"), ("inference", "timm"),
                     ("inference", "torchvision-resnet50"), ("train", "ours"), ("train", "ours-lean"),
                     ("train", "timm")]
    timm_rate = {r.task: r.images_per_s for r in result.rows if r.form == "timm"}
    for row in result.rows:
        assert row.images_per_s > 0 and 0 < row.roof_pct < 100
        if row.form in ("ours", "ours-deploy", "ours-lean"):
            assert row.vs_timm == pytest.approx(row.images_per_s / timm_rate[row.task], rel=1e-2)
    assert all(r.peak_mb > 0 for r in result.rows if r.task == "train")
    assert result.roof_gflops["fp32"] > 1 and result.gflop_per_image["model"] > 0


def test_bench_cli_writes_json_and_names_a_missing_peer(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # as if timm were not installed
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", "resnest14", "--batch-sizes", "2", "--image-size", "64", "--dtypes", "fp32",
                 "--layouts", "nchw", "--modes", "eager", "--no-train", "--repeats", "2", "--runtimes", "",
                 "--no-aot", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "note: timm is not installed, so there is no timm column: pip install 'splitattn[bench]'" in text
    saved = json.loads(out.read_text())
    assert [r["form"] for r in saved["rows"]] == ["ours", "torchvision-resnet50"]
    assert main(["bench", "--dtypes", "fp16"]) == 2
    assert "fp16 is a GPU format; on the CPU use bf16" in capsys.readouterr().err


def test_bench_rejects_unknown_choices():
    with pytest.raises(BenchError, match="unknown layout 'nwhc'"):
        run_bench(BenchConfig(**TINY, layouts=("nwhc",)), progress=False)
    with pytest.raises(BenchError, match="unknown peer 'mmdet'"):
        run_bench(BenchConfig(**TINY, peers=("mmdet",)), progress=False)


def test_runtime_rows_run_our_exported_model_beside_ours():
    """ONNX Runtime (fp32) and OpenVINO (fp32, bf16) on the exported ONNX file, interleaved with our forms, each
    with its logits' max |Δ| against our fp32 PyTorch model; the summary pairs our best with the best peer."""
    config = BenchConfig(**{**TINY, "batch_sizes": (1, 2)}, dtypes=("fp32", "bf16"), layouts=("nhwc",),
                         peers=("timm",), train=False)
    result = run_bench(config, progress=False)
    rows = {(r.form, r.dtype, r.batch): r for r in result.rows}
    for batch in (1, 2):
        assert rows[("onnxruntime", "fp32", batch)].max_abs_diff < 1e-3
        assert rows[("openvino", "fp32", batch)].max_abs_diff < 1e-3
        assert rows[("openvino", "bf16", batch)].max_abs_diff < 0.5  # bf16 keeps 8 bits of mantissa
        assert ("onnxruntime", "bf16", batch) not in rows  # ONNX Runtime has no bf16 convolutions on the CPU
        assert rows[("ours-deploy", "fp32", batch)].max_abs_diff < 1e-3
        assert rows[("timm", "fp32", batch)].max_abs_diff < 1e-5  # same weights, NHWC instead of NCHW
    assert {(s["dtype"], s["batch"]) for s in result.summary} == {("fp32", 1), ("fp32", 2), ("bf16", 1), ("bf16", 2)}
    for s in result.summary:
        assert s["ratio"] == pytest.approx(s["ours_images_per_s"] / s["peer_images_per_s"], rel=1e-2)


def test_a_missing_runtime_is_named_not_a_traceback(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if OpenVINO were not installed
    result = run_bench(BenchConfig(**TINY, dtypes=("fp32",), layouts=("nhwc",), peers=(), train=False,
                                   runtimes=("openvino",)), progress=False)
    assert "openvino is not installed, so it has no rows: pip install 'splitattn[openvino]'" in result.notes
    assert {r.form for r in result.rows} == {"ours", "ours-deploy"}
    with pytest.raises(BenchError, match="unknown runtime"):
        run_bench(BenchConfig(**TINY, runtimes=("tensorrt",)), progress=False)



def test_aot_package_and_int8_rows_beside_the_engines(tmp_path, monkeypatch):
    """ours-aot (splitattn.optimize's int8 package; its fp32 form is tested in test_quantize.py) beside ONNX
    Runtime's and OpenVINO's int8 files quantized from the same ONNX export; int8 rows have no roof and are
    summarised like the others; int8 without the package's group is refused."""
    monkeypatch.setenv("SPLITATTN_HOME", str(tmp_path))
    config = BenchConfig(**{**TINY, "aot": True}, dtypes=("int8",), layouts=("nhwc",), peers=("timm",), train=False)
    result = run_bench(config, progress=False)
    rows = {(r.form, r.dtype): r for r in result.rows}
    assert set(rows) == {("ours-aot", "int8"), ("onnxruntime", "int8"), ("openvino", "int8")}
    assert rows[("ours-aot", "int8")].note.startswith("compiled in")
    for form in ("ours-aot", "onnxruntime", "openvino"):
        row = rows[(form, "int8")]
        assert row.roof_pct is None and row.images_per_s > 0
        assert 1e-6 < row.max_abs_diff < 0.05, (form, row.max_abs_diff)  # quantized, yet near fp32 (logits ~0.1)
    assert [s["dtype"] for s in result.summary] == ["int8"]
    with pytest.raises(BenchError, match="keep --modes eager and drop --no-aot"):
        run_bench(BenchConfig(**TINY, dtypes=("int8",)), progress=False)  # TINY: aot=False
