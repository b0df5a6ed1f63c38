"""The scenes segmentation benchmark's record (benchmarks/segmentation_scenes.py): written atomically after each
backbone, with ResNeSt − ResNet-D differences only for the protocols both runs hold."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str):
    # benchmarks/ is not a package; segmentation_scenes imports transfer_common by its bare name
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_load("transfer_common")
segmentation_scenes = _load("segmentation_scenes")


def _run(miou: float, refined: float | None) -> dict:
    record = {"single_scale": {"mIoU": miou, "pixAcc": 0.9}, "multi_scale_flip": {"mIoU": miou + 0.03, "pixAcc": 0.95}}
    if refined is not None:
        record["multi_scale_flip_refined"] = {"mIoU": refined, "pixAcc": 0.97}
    return record


def test_report_differences_cover_the_protocols_both_runs_hold(tmp_path):
    path = tmp_path / "segmentation_scenes.json"
    report = {"runs": {"resnest": _run(0.65, 0.73)}}
    segmentation_scenes.write_report(report, path)
    saved = json.loads(path.read_text())
    assert saved["runs"]["resnest"]["multi_scale_flip_refined"]["mIoU"] == 0.73
    assert "resnest_minus_resnetd" not in saved  # one backbone: nothing to compare yet

    report["runs"]["resnetd"] = _run(0.61, None)  # a record from before the refinement
    segmentation_scenes.write_report(report, path)
    diff = json.loads(path.read_text())["resnest_minus_resnetd"]
    assert set(diff) == {"single_scale", "multi_scale_flip"} and diff["single_scale"]["mIoU"] == 0.04

    report["runs"]["resnetd"] = _run(0.61, 0.68)
    segmentation_scenes.write_report(report, path)
    diff = json.loads(path.read_text())["resnest_minus_resnetd"]
    assert diff["multi_scale_flip_refined"] == {"mIoU": 0.05, "pixAcc": 0.0}
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no partial file left behind
