"""Our detectors with mmdetection's checkpoint layout against mmdetection 3.3 itself, on the same weights.

mmdet builds its own ResNeSt-50 configs (random weights with spread, SyncBN → BN, compiled ops replaced by
torchvision's: ``tests/oracles/mmdet_models.py``); :func:`from_mmdet` converts the state_dict, which loads
strictly into ``create_detector(..., fpn_norm='none', cascade_style='mmdet')``. Both sides get the same
resized photo (mmdet's own resize is cv2's; ours is detectronv2's float bilinear) and their detections are
paired as in the detectron2 parity tests. Every mmdet row of the zoo (S50 and S101) loads strictly.
"""

from __future__ import annotations

import pytest
import torch

from splitattn.detection import DETECTORS, create_detector
from splitattn.detection.convert import from_mmdet
from splitattn.detection.zoo import DETECTION_ZOO, detector_kwargs, list_detectors
from tests.oracles.matching import match
from tests.oracles.mmdet_models import build_mmdet, mmdet_predict
from tests.voc_photo import photo_tensor

# the zoo rows name mmdet's v2 config files; mmdet 3.x renamed them
V3_CONFIG = {"faster_rcnn": "faster-rcnn_s{d}_fpn_syncbn-backbone+head_ms-range-1x_coco.py",
             "mask_rcnn": "mask-rcnn_s{d}_fpn_syncbn-backbone+head_ms-1x_coco.py",
             "cascade_rcnn": "cascade-rcnn_s{d}_fpn_syncbn-backbone+head_ms-range-1x_coco.py",
             "cascade_mask_rcnn": "cascade-mask-rcnn_s{d}_fpn_syncbn-backbone+head_ms-1x_coco.py"}


@pytest.mark.parametrize("kind", DETECTORS)
def test_eval_matches_mmdet(kind):
    oracle, _ = build_mmdet(kind)
    oracle.test_cfg.rcnn.score_thr = 0.0  # every detection and stage counts
    state, _ = from_mmdet(oracle.state_dict())
    ours = create_detector(kind, "resnest50", 81, norm="bn", fpn_norm="none", cascade_style="mmdet",
                           score_thresh=0.0, test_size=480, progress=False).eval()
    ours.load_state_dict(state, strict=True)
    image = photo_tensor()
    with torch.no_grad():
        theirs = mmdet_predict(oracle, image, ours.resize(image))
        mine = ours([image])[0]
    t = {"boxes": theirs.bboxes, "scores": theirs.scores, "labels": theirs.labels + 1}
    o = {k: mine[k] for k in ("boxes", "scores", "labels")}
    if "masks" in mine:
        t["masks"], o["masks"] = theirs.masks.bool(), mine["masks"][:, 0] >= 0.5
    report = match(o, t)
    print(f"{kind} (mmdet): {report.line()}")
    assert len(mine["scores"]) == len(theirs) > 0
    assert report.rate >= 0.99 and report.failures == 0, report.line()


@pytest.mark.parametrize("name", list_detectors("mmdet"))
def test_mmdet_checkpoint_layout_loads_strictly(name):
    row = DETECTION_ZOO[name]
    depth = row.backbone.removeprefix("resnest")
    oracle, _ = build_mmdet(row.kind, config=V3_CONFIG[row.kind].format(d=depth))
    state, _ = from_mmdet({"meta": {"epoch": 12}, "state_dict": oracle.state_dict()})
    model = create_detector(**detector_kwargs(row), progress=False)
    model.load_state_dict(state, strict=True)
    if row.kind == "cascade_mask_rcnn":
        assert len(model.roi_heads.mask_head) == 3  # mmdet: one mask head per stage


def test_pretrained_mmdet_row_downloads_and_loads(server, home, monkeypatch):
    """An mmdet row through the whole path: local server, sha256, mmdet unwrapping and conversion, strict load."""
    import dataclasses
    import hashlib
    from pathlib import Path

    from splitattn.detection import zoo as detection_zoo

    row = DETECTION_ZOO["cascade_mask_rcnn_resnest50_fpn_mmdet"]
    oracle, _ = build_mmdet(row.kind)
    served = Path(server.root) / "served.pth"
    torch.save({"meta": {"epoch": 12}, "state_dict": oracle.state_dict()}, served)
    digest = hashlib.sha256(served.read_bytes()).hexdigest()[:8]
    filename = f"cascade_mask_test-{digest}.pth"
    served.rename(served.with_name(filename))
    local = dataclasses.replace(row, filename=filename, sha256_prefix=digest, urls=(f"{server.url}/{filename}",))
    monkeypatch.setattr(detection_zoo, "DETECTION_ZOO", {**DETECTION_ZOO, row.name: local})
    model = create_detector(pretrained=row.name, progress=False)
    assert torch.equal(model.roi_heads.mask_head[2].predictor.weight,
                       oracle.state_dict()["roi_head.mask_head.2.conv_logits.weight"])
    assert model.roi_heads.score_mode == "mean_logits"
