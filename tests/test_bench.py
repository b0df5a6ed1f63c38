"""`splitattn bench` on a tiny grid: every row measured, ratios against timm computed from the same run,
the roof measured, training rows with peak memory, and a missing peer named instead of a traceback."""

from __future__ import annotations

import json
import sys

import pytest

from splitattn.benchmark.suite import BenchConfig, BenchError, run_bench
from splitattn.cli import main

TINY = dict(model="resnest14", batch_sizes=(2,), image_size=64, modes=("eager",), repeats=2)


def test_bench_grid_and_ratios():
    result = run_bench(BenchConfig(**TINY, dtypes=("fp32",), layouts=("nhwc",)), progress=False)
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
                 "--layouts", "nchw", "--modes", "eager", "--no-train", "--repeats", "2", "--json", str(out)]) == 0
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
