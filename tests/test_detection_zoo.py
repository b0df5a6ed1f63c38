"""The detection zoo: every official detectron2 checkpoint's architecture loads its file's keys strictly,
and ``create_detector(pretrained=...)`` downloads (local HTTP server), checks and loads a file."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch

from splitattn.detection import create_detector
from splitattn.detection import zoo as detection_zoo
from splitattn.detection.convert import from_detectron2
from splitattn.detection.zoo import DETECTION_ZOO, detector_kwargs, list_detectors
from splitattn.models.weights import CheckpointError
from tests.oracles.detectron2_models import CONFIGS, oracle_cfg

D2_ROWS = list_detectors("detectron2")


def _oracle_state(row) -> dict[str, torch.Tensor]:
    """The state_dict detectron2's checkpointer writes for ``row``'s config (FrozenBN stem/res2 included)."""
    from detectron2.modeling import build_model

    cfg = oracle_cfg(row.config.removeprefix("d2/configs/"))
    return build_model(cfg).state_dict()


def test_every_official_detectron2_checkpoint_is_in_the_zoo():
    assert len(D2_ROWS) == 13
    kinds = {(DETECTION_ZOO[n].kind, DETECTION_ZOO[n].backbone, DETECTION_ZOO[n].deformable) for n in D2_ROWS}
    assert kinds == {("faster_rcnn", "resnest50", False), ("faster_rcnn", "resnest101", False),
                     ("cascade_rcnn", "resnest50", False), ("cascade_rcnn", "resnest101", False),
                     ("cascade_rcnn", "resnest200", False), ("mask_rcnn", "resnest50", False),
                     ("mask_rcnn", "resnest101", False), ("cascade_mask_rcnn", "resnest50", False),
                     ("cascade_mask_rcnn", "resnest101", False), ("cascade_mask_rcnn", "resnest200", False),
                     ("faster_rcnn", "resnest50", True), ("cascade_mask_rcnn", "resnest200", True),
                     ("cascade_panoptic_fpn", "resnest200", False)}
    # every config the official README links (d2/configs, ResNeSt rows) has its row
    configs = {str(p.relative_to(CONFIGS.parent.parent)) for p in CONFIGS.rglob("*ResNeSt_*.yaml")}
    assert configs == {DETECTION_ZOO[n].config for n in D2_ROWS}
    for name in D2_ROWS:
        row = DETECTION_ZOO[name]
        assert row.urls and all(u.endswith(row.filename) for u in row.urls)
        assert row.sha256_prefix is None or f"-{row.sha256_prefix}.pth" in row.filename
        assert row.box_ap and (row.mask_ap is not None) == row.kind.endswith(("mask_rcnn", "panoptic_fpn"))
        assert (row.pq is not None) == row.kind.endswith("panoptic_fpn")


@pytest.mark.parametrize("name", D2_ROWS)
def test_official_checkpoint_layout_loads_strictly(name):
    row = DETECTION_ZOO[name]
    state, _ = from_detectron2({"model": _oracle_state(row), "iteration": 89999})
    model = create_detector(**detector_kwargs(row), progress=False)
    model.load_state_dict(state, strict=True)
    if row.mask_head_convs == 8:
        assert hasattr(model.roi_heads.mask_head, "mask_fcn8")
    assert any("conv2_offset" in k for k in state) == row.deformable
    assert any(k.startswith("sem_seg_head.") for k in state) == row.kind.endswith("panoptic_fpn")


@pytest.fixture
def served_faster(server, home, monkeypatch):
    """The Faster R-CNN S50 row pointed at a detectron2-layout file on the local server."""
    from detectron2.modeling import build_model

    row = DETECTION_ZOO["faster_rcnn_resnest50_fpn_d2"]
    torch.manual_seed(0)
    oracle = build_model(oracle_cfg(row.config.removeprefix("d2/configs/"))).eval()
    served = Path(server.root) / "served.pth"
    torch.save({"model": oracle.state_dict(), "iteration": 89999}, served)
    digest = hashlib.sha256(served.read_bytes()).hexdigest()[:8]
    filename = f"faster_rcnn_test-{digest}.pth"
    served.rename(served.with_name(filename))
    local = dataclasses.replace(row, filename=filename, sha256_prefix=digest, urls=(f"{server.url}/{filename}",))
    monkeypatch.setattr(detection_zoo, "DETECTION_ZOO", {**DETECTION_ZOO, row.name: local})
    return oracle, row.name, filename


def test_pretrained_downloads_checks_and_loads(served_faster, home):
    oracle, name, filename = served_faster
    model = create_detector(pretrained=name, score_thresh=0.2, progress=False)
    assert (home / "checkpoints" / filename).is_file()
    assert model.roi_heads.score_thresh == 0.2 and model.pretrained == name
    ours = {k: v for k, v in model.state_dict().items() if k.startswith("roi_heads.")}
    theirs = {k: v for k, v in oracle.state_dict().items() if k.startswith("roi_heads.")}
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    with pytest.raises(ValueError, match="is a faster_rcnn on resnest50"):
        create_detector("mask_rcnn", pretrained=name)


def test_pretrained_errors(served_faster, home, monkeypatch):
    _, name, filename = served_faster
    row = detection_zoo.DETECTION_ZOO[name]
    monkeypatch.setattr(detection_zoo, "DETECTION_ZOO",
                        {**detection_zoo.DETECTION_ZOO, name: dataclasses.replace(row, sha256_prefix="00000000")})
    with pytest.raises(CheckpointError, match="does not start with the expected 00000000"):
        create_detector(pretrained=name, progress=False)
    assert not (home / "checkpoints" / filename).exists()
    with pytest.raises(CheckpointError, match="(?s)could not download mask_rcnn_s50.*SPLITATTN_MIRRORS"):
        create_detector(pretrained="mask_rcnn_resnest50_fpn_mmdet", progress=False)  # offline here
    with pytest.raises(ValueError, match="Did you mean faster_rcnn_resnest50_fpn_d2"):
        create_detector(pretrained="faster_rcnn_resnest50_fpn_d3")


def test_cli_predict_with_pretrained_and_list(served_faster, tmp_path, capsys):
    from splitattn.cli import main
    from splitattn.data.sample_photos import PHOTOS_DIR

    _, name, _ = served_faster
    assert main(["detect", "predict", "--pretrained", name, str(PHOTOS_DIR / "chelsea.jpg"),
                 "--out-dir", str(tmp_path / "out"), "--score-thresh", "0.0"]) == 0
    out = capsys.readouterr().out
    assert "chelsea.jpg:" in out and (tmp_path / "out" / "chelsea_detections.png").is_file()
    assert main(["detect", "predict", "--pretrained", name, str(PHOTOS_DIR / "chelsea.jpg"), "--tta",
                 "--tta-sizes", "256,320", "--out-dir", str(tmp_path / "tta"), "--score-thresh", "0.0"]) == 0
    out = capsys.readouterr().out
    assert "short sides 256, 320 (max 4000) and their flips" in out and "chelsea.jpg:" in out
    with pytest.raises(SystemExit) as exit_:
        main(["detect", "predict", "--pretrained", name, "x.jpg", "--tta", "--tta-sizes", "0,x"])
    assert exit_.value.code == 2 and "positive short sides" in capsys.readouterr().err
    assert main(["list", "--task", "detect", "cascade_mask*"]) == 0
    table = capsys.readouterr().out
    assert "cascade_mask_rcnn_resnest200_fpn_tricks_d2" in table and "50.54" in table and "faster" not in table
    assert "cascade_mask_rcnn_resnest101_fpn_mmdet" in table and "47.70" in table
    assert main(["detect", "eval", "--pretrained", name]) == 2
    assert "--pretrained needs --images and --annotations" in capsys.readouterr().err


def test_convert_whole_detector_then_load_it(tmp_path, capsys):
    """`splitattn convert --detector` on a detectron2 file, then create_detector(kind, pretrained=PATH) on either."""
    from splitattn.cli import main

    row = DETECTION_ZOO["mask_rcnn_resnest50_fpn_d2"]
    torch.manual_seed(0)
    d2_file, ours_file = tmp_path / "model_final.pth", tmp_path / "converted.pth"
    torch.save({"model": _oracle_state(row), "iteration": 89999}, d2_file)
    assert main(["convert", str(d2_file), str(ours_file), "--detector"]) == 0
    assert "wrote" in capsys.readouterr().out
    a = create_detector("mask_rcnn", pretrained=str(d2_file), progress=False)
    b = create_detector("mask_rcnn", pretrained=str(ours_file), progress=False)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="name the architecture too"):
        create_detector(pretrained=str(d2_file))
    with pytest.raises(CheckpointError, match="does not fit"):
        create_detector("cascade_mask_rcnn", pretrained=str(d2_file), progress=False)
    assert main(["convert", str(tmp_path / "missing.pth"), str(ours_file), "--detector"]) == 2
